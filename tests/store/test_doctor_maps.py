"""``doctor`` on sender-login-maps, with private Postfix configurations (``postconf -c DIR``).

Each map is asked one probe key through the real postmap (or our SQL client):
an error when it cannot answer, a warning when Postfix's own
smtpd_sender_login_maps names a map that sender-login-maps leaves out.  The
directory doctor reads is the milter's ``postfix-config-dir`` unless
``--postfix-config`` says otherwise (and then doctor warns that they differ).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from tests.harness.pgserver import PgServer
from tests.store.test_doctor import GOOD, run_doctor, write_main_cf

SOCKET = "inet:9@127.0.0.1"  # nothing listens: that finding is not what these tests look at


def cli(db: str, *args: str) -> None:
    assert run_cli(["--db", db, *args]) == 0, args


@pytest.fixture
def setup(tmp_path: Path) -> tuple[str, Path]:
    """A store with example.com and example.net local, and one owners table."""
    db = f"sqlite:///{tmp_path / 'store.sqlite'}"
    cli(db, "db", "init")
    cli(db, "domain", "add", "example.com", "example.net")
    table = tmp_path / "owners"
    table.write_text("sales@example.com alice@example.com\n")
    return db, table


def map_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "sender-login-maps" in line or "sender_login_maps" in line]


def test_each_map_answers_a_probe_key(
    tmp_path: Path, setup: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, table = setup
    config = write_main_cf(
        tmp_path / "postfix", GOOD.format(port=9) + f"smtpd_sender_login_maps = texthash:{table}\n"
    )
    cli(db, "settings", "set", "postfix-config-dir", config)
    cli(db, "settings", "set", "sender-login-maps", f"texthash:{table}")
    _code, lines = run_doctor(capsys, db, config, SOCKET)
    assert map_lines(lines) == [
        f"ok: sender-login-maps: texthash:{table} answers (asked for postmaster@example.com)"
    ]


def test_an_unreadable_map_is_an_error_with_its_reason(
    tmp_path: Path, setup: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, table = setup
    config = write_main_cf(tmp_path / "postfix", GOOD.format(port=9))
    cli(db, "settings", "set", "postfix-config-dir", config)
    cli(db, "settings", "set", "sender-login-maps", f"texthash:{table}")
    table.unlink()
    code, lines = run_doctor(capsys, db, config, SOCKET)
    assert code == 2
    [line] = map_lines(lines)
    assert line.startswith(f"error: sender-login-maps: texthash:{table} does not answer (")
    assert "open database" in line and line.endswith("— fix: fix the map or its file")


def test_a_sql_map_whose_server_is_down_is_an_error_without_the_password(
    tmp_path: Path,
    setup: tuple[str, Path],
    capsys: pytest.CaptureFixture[str],
    pg_server: PgServer,
) -> None:
    db, _table = setup
    config = write_main_cf(tmp_path / "postfix", GOOD.format(port=9))
    url = pg_server.url("no_such_database", password="Do-not-print-me")
    toml = tmp_path / "aliases.toml"
    query = 'query = "SELECT goto FROM alias WHERE address = :sender"\n'
    with sqlite3.connect(tmp_path / "aliases.sqlite") as working:  # while it is set
        working.execute("CREATE TABLE alias (address text, goto text)")
    toml.write_text(f'url = "sqlite:///{tmp_path / "aliases.sqlite"}"\n{query}')
    toml.chmod(0o600)
    cli(db, "settings", "set", "postfix-config-dir", config)
    cli(db, "settings", "set", "sender-login-maps", f"sql:{toml}")  # probed: it answers
    toml.write_text(f'url = "{url}"\n{query}')  # then its server goes away
    code, lines = run_doctor(capsys, db, config, SOCKET)
    assert code == 2
    [line] = map_lines(lines)
    assert line.startswith(f"error: sender-login-maps: sql:{toml} does not answer (")
    assert "no_such_database" in line and "Do-not-print-me" not in "\n".join(lines)


def test_a_map_postfix_uses_but_sender_login_maps_leaves_out_is_a_warning(
    tmp_path: Path, setup: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, table = setup
    other = tmp_path / "more_owners"
    other.write_text("info@example.com bob@example.com\n")
    config = write_main_cf(
        tmp_path / "postfix",
        GOOD.format(port=9)
        + f"smtpd_sender_login_maps = proxy:texthash:{table}, texthash:{other}\n",
    )
    cli(db, "settings", "set", "postfix-config-dir", config)
    cli(db, "settings", "set", "sender-login-maps", f"texthash:{table}")
    _code, lines = run_doctor(capsys, db, config, SOCKET)
    warnings = [line for line in lines if line.startswith("warning: Postfix's smtpd_sender")]
    assert warnings == [
        "warning: Postfix's smtpd_sender_login_maps names maps that sender-login-maps does "
        f"not: texthash:{other} — fix: smtpauth-milter settings set sender-login-maps "
        f"'texthash:{table}, texthash:{other}' (or say why they differ)"
    ]  # proxy:texthash:TABLE counts as TABLE, which sender-login-maps has
    cli(db, "settings", "set", "sender-login-maps", f"texthash:{table} texthash:{other}")
    _code, lines = run_doctor(capsys, db, config, SOCKET)
    assert not [line for line in lines if line.startswith("warning: Postfix's smtpd_sender")]
    assert len([line for line in map_lines(lines) if line.startswith("ok: ")]) == 2


def test_doctor_reads_the_milters_postfix_config_dir_and_warns_when_told_another(
    tmp_path: Path, setup: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, table = setup
    milters = write_main_cf(
        tmp_path / "postfix-out",
        GOOD.format(port=9) + f"smtpd_sender_login_maps = texthash:{table}\n",
    )
    other = write_main_cf(tmp_path / "postfix-in", GOOD.format(port=9))
    cli(db, "settings", "set", "postfix-config-dir", milters)
    capsys.readouterr()
    run_cli(["--db", db, "doctor", "--socket", SOCKET])  # no --postfix-config
    lines = capsys.readouterr().out.splitlines()
    assert not any("cannot read Postfix's configuration" in line for line in lines)
    assert any(  # read from postfix-config-dir: its smtpd_sender_login_maps is seen
        line.startswith("warning: Postfix's smtpd_sender_login_maps names maps") for line in lines
    )
    _code, lines = run_doctor(capsys, db, other, SOCKET)
    assert (
        f"warning: doctor reads Postfix's configuration in {other}, but the milter's postmap "
        f"reads {milters} (postfix-config-dir)"
    ) in "\n".join(lines)
