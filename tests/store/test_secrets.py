"""No password is ever printed: the URL's user part, its ``?password=``, PGPASSWORD, a passfile.

Every PostgreSQL test uses the canary password (tests/harness/pgserver.py);
the canary plugin fails the whole run if it shows up in any output or log.
These tests add the forms a password can take besides the URL's user part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL, make_url

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.store.urls import display_url, mask_secrets, url_secrets
from tests.conftest import CliResult
from tests.harness.milter import MilterProcesses
from tests.harness.pgserver import CANARY_PASSWORD, PgServer
from tests.support.verdicts import verdicts


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg://u:s3cr%40t@h/db", "postgresql+psycopg://u:***@h/db"),
        (
            "postgresql+psycopg://u@h/db?password=s3cr%26t",
            "postgresql+psycopg://u@h/db?password=***",
        ),
        (
            "postgresql+psycopg://u:a@h/db?sslmode=require&Password=b&sslpassword=c",
            "postgresql+psycopg://u:***@h/db?Password=***&sslmode=require&sslpassword=***",
        ),
        ("postgresql+psycopg://u@h/db?passfile=/p", "postgresql+psycopg://u@h/db?passfile=%2Fp"),
        ("sqlite:////var/lib/x/store.sqlite", "sqlite:////var/lib/x/store.sqlite"),
        ("not a url", "<unparseable database URL>"),
    ],
)
def test_display_masks_every_password(url: str, shown: str) -> None:
    assert display_url(url) == shown


def test_secrets_are_masked_as_given_and_as_quoted() -> None:
    secrets = url_secrets(make_url("postgresql+psycopg://u:p%40ss@h/db?password=x%26y"))
    text = "p@ss p%40ss x&y x%26y"
    assert mask_secrets(text, secrets) == "*** *** *** ***"


def _query_url(pg_url: str, **query: str) -> str:
    """The same database with the password moved from the user part to the query."""
    given = make_url(pg_url)
    url = URL.create(
        given.drivername, given.username, None, given.host, given.port, given.database, query
    )
    assert url.password is None
    return url.render_as_string(hide_password=False)


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., CliResult]:
    """``smtpauth-milter ARGS...`` in process, with the --db each test gives."""
    for name in ("DB", "CONFIG"):
        monkeypatch.delenv(f"SMTPAUTH_MILTER_{name}", raising=False)

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        code = run_cli(list(args))
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return invoke


@pytest.fixture
def query_url(pg_url: str) -> str:
    return _query_url(pg_url, password=CANARY_PASSWORD)


@pytest.mark.postgres
def test_a_password_in_the_query_is_masked_in_output_and_errors(
    cli: Callable[..., CliResult], query_url: str, pg_server: PgServer, tmp_path: Path
) -> None:
    created = cli("--db", query_url, "db", "init")
    assert created.code == 0, created.err
    assert "?password=***" in created.out
    assert cli("--db", query_url, "domain", "add", "example.com").code == 0
    history = cli("--db", query_url, "history")
    assert history.code == 0 and "domain add example.com" in history.out
    unreachable = query_url.replace(f":{pg_server.port}/", ":1/")
    failed = cli("--db", unreachable, "domain", "list")
    assert failed.code == 2
    assert failed.err.startswith("smtpauth-milter: error: cannot read the store ")
    assert "password=***" in failed.err and CANARY_PASSWORD not in failed.err
    doctor = cli(
        "--db", query_url, "doctor", "--postfix-config", str(tmp_path / "none"),
        "--socket", "inet:1@127.0.0.1",
    )  # fmt: skip
    assert doctor.out.splitlines()[0].startswith("ok: the store postgresql+psycopg://")
    assert "password=***" in doctor.out and CANARY_PASSWORD not in doctor.out + doctor.err


@pytest.mark.postgres
def test_pgpassword_and_a_passfile_are_used_and_never_shown(
    cli: Callable[..., CliResult],
    pg_url: str,
    pg_server: PgServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bare = _query_url(pg_url)
    passfile = tmp_path / "pgpass.secret"  # holds the password on purpose: not scanned
    passfile.write_text(f"127.0.0.1:{pg_server.port}:*:{pg_server.user}:{CANARY_PASSWORD}\n")
    passfile.chmod(0o600)
    with_passfile = _query_url(pg_url, passfile=str(passfile))
    result = cli("--db", with_passfile, "db", "init")
    assert result.code == 0, result.err
    monkeypatch.setenv("PGPASSWORD", CANARY_PASSWORD)
    result = cli("--db", bare, "domain", "add", "example.com")
    assert result.code == 0, result.err
    monkeypatch.setenv("PGPASSWORD", "wrong-" + CANARY_PASSWORD[::-1])
    refused = cli("--db", bare, "domain", "list")
    assert refused.code == 2 and "password authentication failed" in refused.err


@pytest.fixture
def milters(tmp_path: Path) -> Iterator[MilterProcesses]:
    with MilterProcesses(tmp_path) as procs:
        yield procs


@pytest.mark.postgres
def test_the_milter_logs_no_password_from_the_query_or_pgpassword(
    cli: Callable[..., CliResult], query_url: str, pg_url: str, milters: MilterProcesses
) -> None:
    assert cli("--db", query_url, "db", "init").code == 0
    for args in (["domain", "add", "example.com"], ["settings", "set", "require-auth-local", "on"]):
        assert cli("--db", query_url, *args).code == 0
    by_query = milters.start(query_url)
    by_env = milters.start(_query_url(pg_url), env={"PGPASSWORD": CANARY_PASSWORD})
    for milter in (by_query, by_env):
        sent = verdicts(milter.socket, sender="<alice@example.com>", rcpts=["<x@remote.test>"])
        assert sent[0].startswith("530 "), "it reads the store with that password"
        log = milter.log_text()
        assert CANARY_PASSWORD not in log
    assert "password=***" in by_query.log.find(r"event=start")[0]
