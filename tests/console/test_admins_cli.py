"""`smtpauth-milter admin`: console accounts in the store, Argon2id hashes, in the audit trail."""

from __future__ import annotations

import io
import socket

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.models import ConsoleAdmin
from tests.conftest import CliRunner

PASSWORD = "correct horse battery"


@pytest.fixture
def stdin(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    feed = io.StringIO(PASSWORD + "\n")
    monkeypatch.setattr("sys.stdin", feed)
    return feed


def _hashes(db_url: str) -> dict[str, str]:
    store = Store(db_url)
    try:
        with store.read() as session:
            rows = session.execute(select(ConsoleAdmin.name, ConsoleAdmin.password_hash))
            return {name: hashed for name, hashed in rows}  # noqa: C416 (Row objects)
    finally:
        store.dispose()


def test_add_list_passwd_remove_each_audited(
    cli: CliRunner, db_url: str, stdin: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("domain", "add", "example.com", "example.org").code == 0
    added = cli("admin", "add", "root-admin")
    assert (added.code, added.out) == (0, "added root-admin (role=server)\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    added = cli("admin", "add", "alice", "--domain", "Example.ORG", "--domain", "example.com")
    assert added.out == "added alice (role=domain domains=example.com,example.org)\n"
    listed = cli("admin", "list")
    assert listed.out.splitlines() == [
        "alice  role=domain domains=example.com,example.org",
        "root-admin  role=server",
    ]
    hashes = _hashes(db_url)
    assert hashes["alice"].startswith("$argon2id$")
    assert PasswordHasher().verify(hashes["alice"], PASSWORD)
    assert PASSWORD not in cli("history").out
    monkeypatch.setattr("sys.stdin", io.StringIO("another long password\n"))
    assert cli("admin", "passwd", "alice").code == 0
    assert PasswordHasher().verify(_hashes(db_url)["alice"], "another long password")
    assert cli("admin", "remove", "alice").code == 0
    assert cli("admin", "list").out == "root-admin  role=server\n"
    trail = [
        e for e in cli("history", "--json").json()["entries"] if e["action"].startswith("admin")
    ]
    assert [(e["action"], e["subject"], e["old"], e["new"]) for e in trail] == [
        ("admin-add", "root-admin", None, "role=server"),
        ("admin-add", "alice", None, "role=domain domains=example.com,example.org"),
        ("admin-passwd", "alice", None, None),
        ("admin-remove", "alice", "role=domain domains=example.com,example.org", None),
    ]
    assert all(e["command"].startswith("admin ") for e in trail)


@pytest.mark.parametrize(
    ("args", "feed", "message"),
    [
        (["admin", "add", "bad name"], PASSWORD, "bad admin name 'bad name'"),
        (["admin", "add", "bob", "--domain", "nowhere.example"], PASSWORD, "unknown domain"),
        (["admin", "add", "bob"], "short", "a password must be 10 to 1024 characters"),
        (["admin", "add", "bob"], "", "a password must be 10 to 1024 characters"),
        (["admin", "passwd", "nobody"], PASSWORD, "no console admin named 'nobody'"),
        (["admin", "remove", "nobody"], PASSWORD, "no console admin named 'nobody'"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_changed(
    cli: CliRunner,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    feed: str,
    message: str,
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(feed + "\n"))
    result = cli(*args)
    assert result.code == 2
    assert result.err.count("\n") == 1 and message in result.err, result.err
    assert _hashes(db_url) == {}
    assert cli("history").out == ""


def test_a_name_that_exists_already_is_refused(cli: CliRunner, stdin: io.StringIO) -> None:
    assert cli("admin", "add", "carol").code == 0
    stdin.seek(0)
    again = cli("admin", "add", "carol")
    assert again.code == 2 and "exists already" in again.err


def test_without_the_console_extra_one_line_and_exit_2(
    cli: CliRunner, stdin: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        "importlib.util.find_spec", lambda name, *a: None if name == "argon2" else real(name, *a)
    )
    for args in (["admin", "add", "dave"], ["console"]):
        result = cli(*args)
        assert result.code == 2, result
        assert result.err == (
            f"smtpauth-milter: error: `smtpauth-milter {args[0]}` needs the console extra "
            "(missing: argon2-cffi): pip install 'smtpauth-milter[console]'\n"
        )


@pytest.mark.parametrize("listen", ["8895", "127.0.0.1:0", "127.0.0.1:99999", ":8895", "host:port"])
def test_console_with_a_bad_listen_address_is_one_line_exit_2(cli: CliRunner, listen: str) -> None:
    result = cli("console", "--listen", listen)
    assert result.code == 2
    assert result.err.count("\n") == 1 and "is not HOST:PORT" in result.err, result.err


def test_console_on_a_taken_port_is_one_line_exit_2(cli: CliRunner) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = cli("console", "--listen", f"127.0.0.1:{port}")
    assert result.code == 2
    assert result.err == (
        f"smtpauth-milter: error: the console cannot listen on 127.0.0.1:{port}: "
        "Address already in use\n"
    )
