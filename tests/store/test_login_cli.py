"""`smtpauth-milter login ...` and `check --login` on SQLite and PostgreSQL
(docs/cli.md#login-per-login-limits-frozen-and-exempt-logins)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.loginstate import Batch, exchange, writing
from tests.conftest import CliRunner


@pytest.fixture
def cli_store(cli: CliRunner, db_url: str) -> str:
    assert cli("domain", "add", "example.com").code == 0
    assert cli("settings", "set", "--domain", "example.com", "login-max-messages", "5/1h").code == 0
    return db_url


def _count(url: str, login: str, n: int) -> None:
    """What milters would have written: ``n`` messages of ``login`` now."""
    now = time.time()
    store = Store(url)
    try:
        with writing(store) as session:
            exchange(session, Batch(counts={(login, "messages", 60, int(now) // 60): n}), now)
    finally:
        store.dispose()


def test_freeze_shows_in_list_show_check_and_history_then_unfreeze(
    cli: CliRunner, cli_store: str
) -> None:
    result = cli("login", "freeze", "Alice@Example.com", "--reason", "phished password")
    assert (result.code, result.out) == (0, "froze alice@example.com\n")
    assert (
        cli("login", "freeze", "alice@example.com").out == "alice@example.com is frozen already\n"
    )
    listed = cli("login", "list")
    assert listed.out.startswith("alice@example.com  frozen  admin 0  since ")
    assert "phished password" in listed.out
    shown = cli("login", "show", "alice@example.com")
    assert "state  frozen (admin, since" in shown.out
    assert "login-max-messages  0 of 5/1h" in shown.out
    checked = cli(
        "check", "--login", "alice@example.com", "--from", "alice@example.com", "--rcpt", "x@r.test"
    )
    assert checked.code == 1
    assert "action=reject rule=login-frozen" in checked.out
    assert "550 5.7.1 Sending is suspended for this login" in checked.out
    assert (cli("login", "unfreeze", "alice@example.com").code) == 0
    again = cli("login", "unfreeze", "alice@example.com")
    assert (again.code, again.err) == (
        2,
        "smtpauth-milter: error: login alice@example.com is not frozen\n",
    )
    history = cli("history").out
    assert "login-freeze" in history and "login-unfreeze" in history


def test_check_says_when_a_login_is_over_a_limit_and_list_shows_it_near(
    cli: CliRunner, cli_store: str
) -> None:
    _count(cli_store, "bob@example.com", 4)
    assert "bob@example.com  near  login-max-messages 4 of 5/1h" in cli("login", "list").out
    args = ("check", "--login", "bob@example.com", "--from", "bob@example.com")
    assert cli(*args, "--rcpt", "x@r.test").code == 0
    _count(cli_store, "bob@example.com", 1)
    over = cli(*args, "--rcpt", "x@r.test")
    assert over.code == 1
    assert "action=tempfail rule=login-max-messages" in over.out
    assert "login-max-messages  5 of 5/1h" in cli("login", "show", "bob@example.com").out


def test_exempt_and_bad_input(cli: CliRunner, cli_store: str) -> None:
    assert cli("login", "exempt", "lists@example.com", "--comment", "mailing list").code == 0
    assert "lists@example.com  exempt  mailing list" in cli("login", "list").out
    assert "state  exempt" in cli("login", "show", "lists@example.com").out
    assert cli("login", "unexempt", "lists@example.com").code == 0
    for args in (
        ("login", "freeze", "two words"),
        ("login", "unexempt", "lists@example.com"),
        ("login", "freeze", "x@example.com", "--reason", "line\nbreak"),
    ):
        result = cli(*args)
        assert result.code == 2 and result.err.count("\n") == 1, (args, result.err)
    assert cli("login", "list").out == ""


def test_a_separate_state_store(
    cli: CliRunner, cli_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SMTPAUTH_MILTER_STATE: freezes go there, exemptions and history stay in the store."""
    state = f"sqlite:///{tmp_path / 'state.sqlite'}"
    assert cli("db", "init", db=state).code == 0
    monkeypatch.setenv("SMTPAUTH_MILTER_STATE", state)
    assert cli("login", "freeze", "carol@example.com").code == 0
    assert "carol@example.com  frozen" in cli("login", "list", db=state).out
    monkeypatch.delenv("SMTPAUTH_MILTER_STATE")
    assert "carol" not in cli("login", "list").out
    assert "login-freeze" in cli("history").out


def test_export_and_import_carry_exemptions_into_the_history(
    cli: CliRunner, cli_store: str, tmp_path: Path
) -> None:
    cli("login", "exempt", "lists@example.com", "--comment", "mailing list")
    exported = cli("export")
    assert exported.json()["exempt_logins"] == {"lists@example.com": "mailing list"}
    dump = tmp_path / "store.json"
    dump.write_text(exported.out, encoding="utf-8")
    cli("login", "unexempt", "lists@example.com")
    cli("login", "exempt", "app@example.com")
    assert cli("import", str(dump)).code == 0
    assert "lists@example.com  exempt  mailing list" in cli("login", "list").out
    assert "app@example.com" not in cli("login", "list").out
    entries = cli("history", "--json").json()["entries"]
    imported = [(e["action"], e["subject"]) for e in entries if e["command"].startswith("import")]
    assert ("login-unexempt", "app@example.com") in imported
    assert ("login-exempt", "lists@example.com") in imported
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "smtpauth-milter/1", "exempt_logins": {"two words": ""}}')
    result = cli("import", str(bad))
    assert result.code == 2 and "bad login" in result.err
    assert "lists@example.com  exempt" in cli("login", "list").out, "nothing changed"


def test_a_login_the_milter_counted_is_listed_escaped(cli: CliRunner, cli_store: str) -> None:
    """SASL logins come from the MTA: control and bidi characters never reach the terminal."""
    hostile = "evil\u202egpj.exe\x1b[31m@example.com"
    _count(cli_store, hostile, 5)
    listed = cli("login", "list").out
    assert "\u202e" not in listed and "\x1b" not in listed
    assert "evil\\u202egpj.exe\\x1b[31m@example.com  near  login-max-messages 5 of 5/1h" in listed
