"""The reported delimiter reproductions through ``check`` and ``sender list``, on SQLite
and PostgreSQL (docs/policy.md#sub-addresses; on main each answered continue)."""

from __future__ import annotations

from typing import Any

from tests.conftest import CliRunner


def _check(cli: CliRunner, login: str, sender: str) -> dict[str, Any]:
    result = cli("check", "--login", login, "--from", sender, "--rcpt", "x@remote.test", "--json")
    assert result.code in (0, 1), result.err  # 1: a recipient is refused
    recipient: dict[str, Any] = result.json()["recipients"][0]
    return recipient


def test_the_reported_pairs_are_refused_and_the_grant_is_exact(cli: CliRunner) -> None:
    for command in (
        ("domain", "add", "example.com"),
        ("settings", "set", "recipient-delimiter", "+-"),
        ("settings", "set", "require-sender-match", "on"),
        ("sender", "allow", "alice@example.com", "sales-team@example.com"),
    ):
        assert cli(*command).code == 0, command
    for login, sender in (
        ("bob-smith@example.com", "bob@example.com"),
        ("jean-pierre@example.com", "jean@example.com"),
        ("alice@example.com", "sales@example.com"),
        ("alice@example.com", "sales-anything@example.com"),
    ):
        got = _check(cli, login, sender)
        assert (got["action"], got["rule"]) == ("reject", "sender-mismatch"), (login, sender)
        assert "owned_by" not in got
    assert _check(cli, "alice@example.com", "sales-team@example.com")["owned_by"] == "grant"
    assert _check(cli, "bob@example.com", "bob+news@example.com")["owned_by"] == "login"
    assert cli("sender", "list").out.splitlines() == ["alice@example.com  sales-team@example.com"]
    # a grant naming bob-smith@ keeps bob@ from it; changing the delimiter widens nothing
    assert _check(cli, "bob@example.com", "bob-smith@example.com")["owned_by"] == "login"
    assert cli("sender", "allow", "carol", "bob-smith@example.com").code == 0
    assert _check(cli, "bob@example.com", "bob-smith@example.com")["rule"] == "sender-mismatch"
    assert cli("settings", "set", "recipient-delimiter", "-").code == 0
    assert _check(cli, "alice@example.com", "sales@example.com")["rule"] == "sender-mismatch"
