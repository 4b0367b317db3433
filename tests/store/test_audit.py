"""The audit trail: every CLI and import change recorded in its own transaction."""

from __future__ import annotations

import json
import os
import pwd
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.store import audit
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.models import AuditEntry
from tests.conftest import CliRunner

ME = pwd.getpwuid(os.geteuid()).pw_name


def _history(cli: CliRunner, *args: str) -> list[dict[str, Any]]:
    result = cli("history", "--json", *args)
    assert result.code == 0, result.err
    entries: list[dict[str, Any]] = result.json()["entries"]
    return entries


def _changes(entries: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["action"], e["domain"], e["subject"], e["old"], e["new"]) for e in entries]


def test_every_command_kind_is_recorded_with_old_and_new_value(cli: CliRunner) -> None:
    commands = [
        ("domain", "add", "example.com", "Bücher.example"),
        ("settings", "set", "--domain", "example.com", "dry-run", "on"),
        ("settings", "set", "--domain", "example.com", "dry-run", "no"),
        ("settings", "set", "require-auth-local", "yes"),
        ("settings", "unset", "require-auth-local"),
        ("settings", "unset", "--domain", "example.com", "dry-run"),
        ("sender", "allow", "Alice", "@Example.com"),
        ("sender", "revoke", "alice", "@example.com"),
        ("network", "add", "192.0.2.0/24", "--comment", "web servers"),
        ("network", "add", "192.0.2.0/24", "--comment", "web"),
        ("network", "remove", "192.0.2.0/24"),
        ("settings", "set", "--domain", "xn--bcher-kva.example", "dry-run", "on"),
        ("domain", "remove", "bücher.example"),
    ]
    for args in commands:
        assert cli(*args).code == 0, args
    entries = _history(cli)
    assert _changes(entries) == [
        ("domain-add", "example.com", "example.com", None, None),
        ("domain-add", "xn--bcher-kva.example", "xn--bcher-kva.example", None, None),
        ("setting-set", "example.com", "dry-run", None, "on"),
        ("setting-set", "example.com", "dry-run", "on", "off"),
        ("setting-set", None, "require-auth-local", None, "on"),
        ("setting-unset", None, "require-auth-local", "on", None),
        ("setting-unset", "example.com", "dry-run", "off", None),
        ("grant-allow", "example.com", "alice", None, "@example.com"),
        ("grant-revoke", "example.com", "alice", "@example.com", None),
        ("network-add", None, "192.0.2.0/24", None, "web servers"),
        ("network-comment", None, "192.0.2.0/24", "web servers", "web"),
        ("network-remove", None, "192.0.2.0/24", "web", None),
        ("setting-set", "xn--bcher-kva.example", "dry-run", None, "on"),
        ("domain-remove", "xn--bcher-kva.example", "xn--bcher-kva.example", "dry-run=on", None),
    ]
    assert (
        entries[0]["command"] == entries[1]["command"] == "domain add example.com 'Bücher.example'"
    )
    assert entries[2]["command"] == "settings set --domain example.com dry-run on"
    assert entries[9]["command"] == "network add 192.0.2.0/24 --comment 'web servers'"
    assert {e["user"] for e in entries} == {ME}
    stamps = [datetime.fromisoformat(e["at"]) for e in entries]
    assert stamps == sorted(stamps)
    assert all(abs(datetime.now(UTC) - at) < timedelta(minutes=5) for at in stamps)
    assert entries[0]["at"] == entries[1]["at"], "one command, one timestamp"


def test_no_op_commands_and_reads_record_nothing(cli: CliRunner) -> None:
    cli("domain", "add", "example.com")
    cli("settings", "set", "dry-run", "on")
    before = _history(cli)
    for args in (
        ("domain", "add", "EXAMPLE.com"),
        ("settings", "set", "dry-run", "yes"),
        ("settings", "unset", "require-auth-local"),
        ("settings", "show"),
        ("domain", "list"),
        ("export",),
        ("check", "--from", "a@example.com", "--rcpt", "b@example.net"),
    ):
        assert cli(*args).code in (0, 1), args
    assert _history(cli) == before


def test_a_failing_command_records_nothing(cli: CliRunner, tmp_path: Path) -> None:
    cli("domain", "add", "a.example", "b.example")
    before = _history(cli)
    failed = cli("domain", "remove", "a.example", "nosuch.example")
    assert failed.code == 2
    assert "nosuch.example" in failed.err
    assert cli("domain", "list").out.split() == ["a.example", "b.example"]
    assert cli("settings", "set", "--domain", "nosuch.example", "dry-run", "on").code == 2
    assert cli("network", "remove", "192.0.2.0/24").code == 2
    assert cli("sender", "revoke", "alice", "@a.example").code == 2
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "format": "smtpauth-milter/1",
                "domains": {"c.example": {}},
                "settings": {"dry-run": "maybe"},
            }
        ),
        encoding="utf-8",
    )
    assert cli("import", str(bad)).code == 2
    assert _history(cli) == before


def test_the_command_never_carries_the_database_url(cli: CliRunner, db_url: str) -> None:
    assert cli("domain", "add", "example.com").code == 0
    (entry,) = _history(cli)
    assert entry["command"] == "domain add example.com"
    assert db_url not in json.dumps(entry)
    assert "--db" not in entry["command"]


def _age(store_url: str, hours: float) -> None:
    """Move every entry ``hours`` into the past, as if written then."""
    store = Store(store_url)
    try:
        with store.write() as session:
            for entry in session.scalars(select(AuditEntry)):
                entry.at = entry.at - timedelta(hours=hours)
    finally:
        store.dispose()


def test_since_and_domain_filters(cli: CliRunner, db_url: str) -> None:
    cli("domain", "add", "old.example")
    _age(db_url, 72)
    cli("domain", "add", "example.com", "example.org")
    cli("settings", "set", "--domain", "example.com", "dry-run", "on")
    cli("sender", "allow", "alice", "sales@example.com")
    cli("settings", "set", "dry-run", "on")
    cli("domain", "remove", "old.example")
    assert len(_history(cli)) == 7
    assert [e["subject"] for e in _history(cli, "--since", "2d")] == [
        "example.com",
        "example.org",
        "dry-run",
        "alice",
        "dry-run",
        "old.example",
    ]
    assert _history(cli, "--since", "1m") == _history(cli, "--since", "2d")
    today = datetime.now(UTC).date().isoformat()
    assert len(_history(cli, "--since", today)) == 6
    assert len(_history(cli, "--since", "2000-01-01T00:00:00+02:00")) == 7
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert _history(cli, "--since", future) == []
    assert _changes(_history(cli, "--domain", "EXAMPLE.com")) == [
        ("domain-add", "example.com", "example.com", None, None),
        ("setting-set", "example.com", "dry-run", None, "on"),
        ("grant-allow", "example.com", "alice", None, "sales@example.com"),
    ]
    removed = _history(cli, "--domain", "old.example", "--since", "1h")
    assert _changes(removed) == [("domain-remove", "old.example", "old.example", None, None)]


@pytest.mark.parametrize("since", ["yesterday", "2h ago", "-1d", "2026-13-01", "7y", ""])
def test_a_bad_since_is_one_line_and_exit_2(cli: CliRunner, since: str) -> None:
    result = cli("history", "--since", since)
    assert result.code == 2
    assert result.out == ""
    assert result.err.count("\n") == 1
    assert result.err.startswith("smtpauth-milter: error: ")
    assert "--since" in result.err


def test_text_output_is_one_safe_line_per_entry(cli: CliRunner) -> None:
    assert cli("network", "add", "192.0.2.0/24", "--comment", 'web "x=1" \\ servers').code == 0
    lines = cli("history").out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("at=")
    assert f"user={ME} " in lines[0]
    assert 'command="network add 192.0.2.0/24 --comment' in lines[0]
    assert "action=network-add domain=- subject=192.0.2.0/24" in lines[0]
    assert 'new="web \\"x=1\\" \\\\ servers"' in lines[0]
    assert " old=" not in lines[0]


def test_export_excludes_history_and_import_keeps_it_adding_its_own(
    cli: CliRunner, tmp_path: Path
) -> None:
    cli("domain", "add", "example.com", "example.org")
    cli("settings", "set", "--domain", "example.org", "dry-run", "on")
    cli("network", "add", "192.0.2.0/24")
    exported = cli("export")
    assert "history" not in exported.out and "audit" not in exported.out
    assert set(exported.json()) == {
        "format",
        "settings",
        "domains",
        "aliases",
        "networks",
        "grants",
        "exempt_logins",
    }
    dump = tmp_path / "store.json"
    dump.write_text(exported.out, encoding="utf-8")
    cli("domain", "remove", "example.org")
    cli("domain", "add", "extra.test")
    cli("settings", "set", "dry-run", "on")
    cli("network", "add", "192.0.2.0/24", "--comment", "changed")
    cli("sender", "allow", "bob", "@example.com")
    before = _history(cli)
    assert cli("import", str(dump)).code == 0
    after = _history(cli)
    assert after[: len(before)] == before, "import keeps the old history"
    added = after[len(before) :]
    assert {e["command"] for e in added} == {f"import {dump}"}
    assert _changes(added) == [
        ("setting-unset", None, "dry-run", "on", None),
        ("domain-remove", "extra.test", "extra.test", None, None),
        ("domain-add", "example.org", "example.org", None, None),
        ("setting-set", "example.org", "dry-run", None, "on"),
        ("network-comment", None, "192.0.2.0/24", "changed", ""),
        ("grant-revoke", "example.com", "bob", "@example.com", None),
        ("import", None, str(dump), None, "6 changes"),
    ]
    assert cli("import", str(dump)).code == 0
    again = _history(cli)[len(after) :]
    assert _changes(again) == [("import", None, str(dump), None, "0 changes")]
    assert cli("export").out == exported.out, "the trail does not leak into the export"


def test_the_milter_snapshot_never_reads_the_audit_table(cli: CliRunner, db_url: str) -> None:
    cli("domain", "add", "example.com")
    cli("settings", "set", "--domain", "example.com", "dry-run", "on")
    store = Store(db_url)
    statements: list[str] = []
    event.listen(
        store.engine,
        "before_cursor_execute",
        lambda _c, _cur, statement, *_: statements.append(statement),
    )
    try:
        snapshot = store.load_snapshot()
        store.serial()
    finally:
        store.dispose()
    assert snapshot.serial > 1
    assert statements
    assert not [s for s in statements if "audit_entry" in s]


def test_writes_without_an_actor_record_nothing(db_url: str) -> None:
    """Code that edits the store directly (tests, tools) is not the CLI: no entry."""
    from smtpauth_milter.store import editing

    store = Store(db_url)
    try:
        store.create()
        with store.write() as session:
            editing.add_domains(session, ["example.com"])
        with store.read() as session:
            assert audit.history(session) == []
        with store.write() as session:
            audit.begin(session, audit.Actor("tester", "domain add x.example", datetime.now(UTC)))
            editing.add_domains(session, ["x.example"])
            session.execute(update(AuditEntry).values(os_user="tester2"))
        with store.read() as session:
            (entry,) = audit.history(session)
        assert (entry.user, entry.subject) == ("tester2", "x.example")
    finally:
        store.dispose()


NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2h", NOW - timedelta(hours=2)),
        ("7d", NOW - timedelta(days=7)),
        ("30m", NOW - timedelta(minutes=30)),
        ("45s", NOW - timedelta(seconds=45)),
        ("2w", NOW - timedelta(weeks=2)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T08:30", datetime(2026, 11, 1, 8, 30, tzinfo=UTC)),
        ("2026-11-01 08:30:00+02:00", datetime(2026, 11, 1, 6, 30, tzinfo=UTC)),
        ("2026-11-01T08:30:00Z", datetime(2026, 11, 1, 8, 30, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert audit.parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "2", "h", "1y", "2026-02-30", "99999999999w"])
def test_parse_since_refuses_nonsense(text: str) -> None:
    with pytest.raises(SettingError):
        audit.parse_since(text, NOW)


def test_os_user_never_takes_a_name_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a passwd entry the uid is the name: LOGNAME/USER are anyone's to set."""

    def missing(_uid: int) -> Any:
        raise KeyError(_uid)

    monkeypatch.setattr(audit.pwd, "getpwuid", missing)
    monkeypatch.setattr(audit.os, "getuid", lambda: 54321)
    monkeypatch.delenv("SUDO_USER", raising=False)
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.setenv(name, "root")
    assert audit.os_user() == "uid:54321"
    assert audit.parse_user("uid:54321") == ("uid:54321", None)


def test_os_user_marks_the_sudo_caller_as_claimed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit.os, "getuid", lambda: 0)
    monkeypatch.setenv("SUDO_USER", "alice")
    root = pwd.getpwuid(0).pw_name
    assert audit.os_user() == f"{root} (claimed sudo: alice)"
    assert audit.parse_user(audit.os_user()) == (root, "alice")


def test_a_hostile_sudo_claim_is_escaped_and_fits_the_column(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audit.os, "getuid", lambda: 0)
    monkeypatch.setenv("SUDO_USER", "bob)\n\x9b[2J\u202e" + "x" * 300)
    recorded = audit.os_user()
    assert len(recorded) == audit.MAX_USER
    assert recorded.isprintable()
    user, claim = audit.parse_user(recorded)
    assert user == pwd.getpwuid(0).pw_name
    assert claim is not None and claim.startswith("bob)\\n\\x9b[2J\\u202exxx")
