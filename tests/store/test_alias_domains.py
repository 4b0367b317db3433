"""Alias domains and send-as-anyone through the CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliRunner

MISMATCH = "553 5.7.1 Sender address rejected: not owned by authenticated user"


def _aliases(cli: CliRunner) -> None:
    assert cli("domain", "add", "example.com", "example.org").code == 0
    added = cli("domain", "add", "Example.NET", "bücher.example", "--alias-of", "EXAMPLE.com")
    assert added.code == 0, added.err
    assert added.out.splitlines() == [
        "added example.net  alias of example.com",
        "added xn--bcher-kva.example  alias of example.com",
    ]


def _refused(cli: CliRunner, *args: str, says: str) -> None:
    """Exit 2, one error line, and the store exactly as before."""
    before = cli("export").out
    result = cli(*args)
    assert result.code == 2, (args, result.out, result.err)
    assert result.err.startswith("smtpauth-milter: error: ") and result.err.count("\n") == 1
    assert says in result.err, result.err
    assert cli("export").out == before


def _check(cli: CliRunner, login: str, sender: str) -> dict[str, Any]:
    result = cli("check", "--login", login, "--from", sender, "--rcpt", "x@remote.test", "--json")
    recipient: dict[str, Any] = result.json()["recipients"][0]
    return recipient


def test_alias_domains_are_listed_with_their_target(cli: CliRunner) -> None:
    _aliases(cli)
    assert cli("domain", "list").out.splitlines() == [
        "example.com",
        "example.net  alias of example.com",
        "example.org",
        "xn--bcher-kva.example  alias of example.com",
    ]
    assert cli("domain", "add", "example.net", "--alias-of", "example.com").out == ""
    changed = cli("domain", "add", "example.org", "--alias-of", "example.com")
    assert changed.out.splitlines() == ["example.org  alias of example.com (was standalone)"]


def test_bad_relations_are_refused_and_change_nothing(cli: CliRunner) -> None:
    _aliases(cli)
    _refused(
        cli,
        *("domain", "add", "new.test", "--alias-of", "example.net"),
        says="example.net is itself an alias domain of example.com: use --alias-of example.com",
    )
    _refused(
        cli,
        *("domain", "add", "example.com", "--alias-of", "example.org"),
        says="example.com cannot become an alias domain: example.net, xn--bcher-kva.example are",
    )
    _refused(cli, "domain", "add", "x.test", "--alias-of", "nowhere.test", says="unknown domain")
    _refused(cli, "domain", "add", "example.org", "--alias-of", "example.org", says="of itself")
    _refused(cli, "domain", "add", "x.test", "--alias-of", "bad..name", says="bad..name")
    _refused(
        cli,
        *("domain", "remove", "example.com", "example.net"),
        says="cannot remove example.com: alias domains point at it: xn--bcher-kva.example",
    )
    assert cli("domain", "remove", "example.com", "example.net", "bücher.example").code == 0
    assert cli("domain", "list").out.split() == ["example.org"]


def test_the_alias_uses_its_target_settings_and_says_so(cli: CliRunner) -> None:
    _aliases(cli)
    cli("settings", "set", "--domain", "example.com", "require-sender-match", "on")
    cli("settings", "set", "--domain", "example.com", "dry-run", "on")
    cli("settings", "set", "--domain", "example.net", "dry-run", "off")
    shown = cli("settings", "show", "--domain", "example.net", "--json").json()["settings"]
    assert shown["require-sender-match"] == {"value": "on", "source": "target"}
    assert shown["dry-run"] == {"value": "off", "source": "domain"}
    assert shown["bare-login-match"] == {"value": "off", "source": "default"}
    assert _check(cli, "alice@example.com", "alice@example.net")["owned_by"] == "alias-domain"
    refused = _check(cli, "bob@example.com", "alice@example.net")
    assert (refused["action"], refused["rule"], refused["reply"]) == (
        "reject",
        "sender-mismatch",
        MISMATCH,
    )
    text = cli(
        *("check", "--login", "alice@example.com", "--from", "Alice+x@example.net"),
        *("--rcpt", "x@remote.test"),
    )
    assert text.out == (
        "rcpt=x@remote.test action=continue rule=sender-owned reply=- owned_by=alias-domain\n"
    )
    cli("sender", "allow", "carol", "@example.com")
    assert _check(cli, "carol", "anyone@bücher.example")["owned_by"] == "alias-domain"
    cli("settings", "set", "--domain", "example.com", "require-header-from-match", "on")
    header = cli(
        *("check", "--login", "carol", "--from", "list@remote.test"),
        *("--header-from", "Anyone <anyone@example.net>", "--json"),
    ).json()["headers"]
    assert (header["rule"], header["domain"], header["owned_by"]) == (
        "header-from-owned",
        "example.net",
        "alias-domain",
    )


def test_export_import_keeps_the_relation_and_the_trail_records_it(
    cli: CliRunner, tmp_path: Path
) -> None:
    _aliases(cli)
    dump = tmp_path / "store.json"
    exported = cli("export")
    assert exported.json()["aliases"] == {
        "example.net": "example.com",
        "xn--bcher-kva.example": "example.com",
    }
    dump.write_text(exported.out, encoding="utf-8")
    cli("domain", "remove", "example.net")
    cli("domain", "add", "example.org", "--alias-of", "example.com")
    assert cli("import", str(dump)).code == 0
    assert cli("export").out == exported.out
    changes = [
        (e["action"], e["subject"], e["old"], e["new"])
        for e in cli("history", "--json").json()["entries"]
    ]
    assert changes == [
        ("domain-add", "example.com", None, None),
        ("domain-add", "example.org", None, None),
        ("domain-add", "example.net", None, "alias-of=example.com"),
        ("domain-add", "xn--bcher-kva.example", None, "alias-of=example.com"),
        ("domain-remove", "example.net", "alias-of=example.com", None),
        ("domain-alias", "example.org", None, "alias-of=example.com"),
        # the import: its own entries, then its summary
        ("domain-add", "example.net", None, "alias-of=example.com"),
        ("domain-alias", "example.org", "alias-of=example.com", None),
        ("import", str(dump), None, "2 changes"),
    ]


@pytest.mark.parametrize(
    ("aliases", "says"),
    [
        ({"b.test": "a.test", "c.test": "b.test"}, "alias domain"),
        ({"b.test": "missing.test"}, "unknown domain"),
        ({"missing.test": "a.test"}, "must be one of the domains"),
        ({"b.test": 3}, "must be one of the domains"),
    ],
)
def test_a_bad_alias_in_an_import_changes_nothing(
    cli: CliRunner, tmp_path: Path, aliases: dict[str, Any], says: str
) -> None:
    cli("domain", "add", "keep.test")
    data = {
        "format": "smtpauth-milter/1",
        "domains": {"a.test": {}, "b.test": {}, "c.test": {}},
        "aliases": aliases,
    }
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    _refused(cli, "import", str(path), says=says)


def test_send_as_anyone(cli: CliRunner) -> None:
    cli("domain", "add", "example.com", "example.org")
    cli("settings", "set", "require-sender-match", "on")
    allowed = cli("sender", "allow", "Relay", "*")
    assert (allowed.code, allowed.out) == (0, "relay may send as anyone\n")
    cli("sender", "allow", "alice", "@example.org")
    listed = cli("sender", "list")
    assert listed.out.splitlines() == ["alice  @example.org", "relay  *"]
    assert listed.err == ("smtpauth-milter: warning: login relay may send as anyone ('*' grant)\n")
    assert cli("sender", "list", "--login", "alice").err == ""
    assert _check(cli, "relay", "postmaster@example.org")["owned_by"] == "send-as-anyone"
    assert _check(cli, "alice", "postmaster@example.com")["rule"] == "sender-mismatch"
    _refused(cli, "sender", "allow", "relay", "@*", says="bad address, @domain or '*'")
    assert cli("sender", "revoke", "relay", "*").code == 0
    assert _check(cli, "relay", "postmaster@example.org")["rule"] == "sender-mismatch"
    entries = cli("history", "--json").json()["entries"]
    grants = [
        (e["action"], e["domain"], e["new"], e["old"]) for e in entries if "grant" in e["action"]
    ]
    assert grants == [
        ("grant-allow", None, "*", None),
        ("grant-allow", "example.org", "@example.org", None),
        ("grant-revoke", None, None, "*"),
    ]
