"""`smtpauth-milter db grant-state ROLE` (docs/operations.md#the-milters-state-least-privilege):
the statements it runs are loginstate.grants(); on SQLite and with a bad role it refuses
in one line. Run against PostgreSQL in tests/store/test_login_privilege.py."""

from __future__ import annotations

import pytest

from smtpauth_milter.store.loginstate import grants
from tests.conftest import CliRunner, run_captured

NOWHERE = "postgresql+psycopg://admin:secret-pw@127.0.0.1:9/smtpauth"  # never connected


def test_print_shows_the_grants_without_connecting(capsys: pytest.CaptureFixture[str]) -> None:
    result = run_captured(capsys, ["--db", NOWHERE, "db", "grant-state", "--print", "milter_state"])
    assert result.code == 0, result.err
    assert result.out.splitlines() == [f"{s};" for s in grants("milter_state", "smtpauth")]
    assert "GRANT INSERT, UPDATE, DELETE ON login_count, login_client, login_frozen" in result.out


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_sqlite_has_no_roles(cli: CliRunner) -> None:
    result = cli("db", "grant-state", "milter_state")
    assert (result.code, result.out) == (2, "")
    assert len(result.err.splitlines()) == 1 and "SQLite has no roles" in result.err


@pytest.mark.parametrize("role", ["", "a\nb", "r" * 64])
def test_a_bad_role_is_refused(capsys: pytest.CaptureFixture[str], role: str) -> None:
    result = run_captured(capsys, ["--db", NOWHERE, "db", "grant-state", "--print", role])
    assert (result.code, result.out) == (2, "")
    assert "ROLE" in result.err and "printable" in result.err
