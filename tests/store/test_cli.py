"""The CLI (docs/cli.md) against a real store file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smtpauth_milter.store.engine import Store
from tests.conftest import CliRunner
from tests.harness.pgserver import PgServer


def test_domains_are_stored_lower_case_and_as_idna(cli: CliRunner) -> None:
    assert cli("domain", "add", "Example.COM", "bücher.example", "example.com").code == 0
    assert cli("domain", "add", "xn--bcher-kva.example").code == 0
    listed = cli("domain", "list")
    assert listed.out.split() == ["example.com", "xn--bcher-kva.example"]
    assert cli("domain", "remove", "BÜCHER.example").code == 0
    assert cli("domain", "list").out.split() == ["example.com"]


def test_settings_show_says_where_each_value_comes_from(cli: CliRunner) -> None:
    cli("domain", "add", "example.com")
    assert cli("settings", "set", "require-auth-local", "yes").code == 0
    assert cli("settings", "set", "--domain", "example.com", "dry-run", "TRUE").code == 0
    shown = cli("settings", "show", "--domain", "example.com", "--json").json()["settings"]
    assert shown["require-auth-local"] == {"value": "on", "source": "global"}
    assert shown["dry-run"] == {"value": "on", "source": "domain"}
    assert shown["require-auth-role"] == {"value": "on", "source": "default"}
    text = cli("settings", "show").out
    assert any(
        line.split()[:3] == ["require-auth-local", "global", "on"] for line in text.splitlines()
    )
    assert any(line.split()[:3] == ["dry-run", "default", "off"] for line in text.splitlines())


def test_unset_returns_to_global_then_default(cli: CliRunner) -> None:
    cli("domain", "add", "example.com")
    cli("settings", "set", "role-senders", "postmaster, Hostmaster")
    cli("settings", "set", "--domain", "example.com", "role-senders", "abuse")

    def shown() -> dict[str, str]:
        data = cli("settings", "show", "--domain", "example.com", "--json").json()
        return data["settings"]["role-senders"]

    assert shown() == {"value": "abuse", "source": "domain"}
    assert cli("settings", "unset", "--domain", "example.com", "role-senders").code == 0
    assert shown() == {"value": "postmaster, hostmaster", "source": "global"}
    assert cli("settings", "unset", "role-senders").code == 0
    assert shown() == {"value": "postmaster, abuse, webmaster", "source": "default"}
    assert cli("settings", "unset", "role-senders").code == 0, "unsetting twice is not an error"


def test_grants_and_networks(cli: CliRunner) -> None:
    assert cli("sender", "allow", "Alice", "Sales+x@Example.com").code == 0
    assert cli("sender", "allow", "alice", "@bücher.example").code == 0
    assert cli("sender", "allow", "bob", "bob@example.net").code == 0
    assert cli("sender", "list", "--login", "ALICE").out.splitlines() == [
        "alice  @xn--bcher-kva.example",
        "alice  sales+x@example.com",
    ]
    assert cli("sender", "revoke", "alice", "@xn--bcher-kva.example").code == 0
    assert len(cli("sender", "list").out.splitlines()) == 2
    assert cli("network", "add", "2001:db8::/32").code == 0
    assert cli("network", "add", "192.0.2.0/24", "--comment", "web servers").code == 0
    assert cli("network", "list").out.splitlines() == ["192.0.2.0/24  web servers", "2001:db8::/32"]
    assert cli("network", "remove", "2001:db8::/32").code == 0
    assert cli("network", "list").out.splitlines() == ["192.0.2.0/24  web servers"]


def _policy_store(cli: CliRunner) -> None:
    cli("domain", "add", "example.com", "example.org")
    cli("settings", "set", "require-auth-local", "on")
    cli("settings", "set", "--domain", "example.com", "exempt-local-recipients", "on")
    cli("settings", "set", "--domain", "example.org", "require-sender-match", "on")
    cli("settings", "set", "--domain", "example.org", "dry-run", "on")
    cli("network", "add", "198.51.100.0/24")
    cli("sender", "allow", "carol", "@example.org")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--from", "alice@example.com", "--rcpt", "x@remote.test"], ("reject", "auth-required")),
        (
            ["--from", "alice@example.com", "--rcpt", "bob@example.com"],
            ("continue", "local-recipient"),
        ),
        (
            ["--from", "PostMaster+x@example.com", "--rcpt", "bob@example.com"],
            ("reject", "role-auth-required"),
        ),
        (
            [
                "--client",
                "198.51.100.7",
                "--from",
                "postmaster@example.com",
                "--rcpt",
                "x@remote.test",
            ],
            ("continue", "trusted-network"),
        ),
        (["--from", "<>", "--rcpt", "x@remote.test"], ("continue", "null-sender")),
        (["--from", "", "--rcpt", "x@remote.test"], ("continue", "null-sender")),
        (
            ["--from", "someone@remote.test", "--rcpt", "x@remote.test"],
            ("continue", "non-local-sender"),
        ),
        (["--from", "a@@example.com", "--rcpt", "x@remote.test"], ("reject", "bad-sender")),
        (
            ["--login", "bob", "--from", "alice@example.com", "--rcpt", "x@remote.test"],
            ("continue", "authenticated"),
        ),
        (
            [
                "--login",
                "bob@example.org",
                "--from",
                "alice@example.org",
                "--rcpt",
                "x@remote.test",
            ],
            ("would-reject", "sender-mismatch"),
        ),
        (
            ["--login", "carol", "--from", "alice@example.org", "--rcpt", "x@remote.test"],
            ("continue", "sender-owned"),
        ),
    ],
)
def test_check_gives_the_spec_verdicts(
    cli: CliRunner, args: list[str], expected: tuple[str, str]
) -> None:
    _policy_store(cli)
    result = cli("check", *args, "--json")
    verdict = result.json()["recipients"][0]
    assert (verdict["action"], verdict["rule"]) == expected
    assert result.code == (0 if expected[0] in ("continue", "would-reject") else 1)


def test_check_reports_each_recipient_with_reply(cli: CliRunner) -> None:
    _policy_store(cli)
    cli(
        "settings",
        "set",
        "--domain",
        "example.com",
        "auth-required-reply",
        "550 5.7.1 Log in first",
    )
    result = cli(
        "check",
        "--from",
        "alice@example.com",
        "--rcpt",
        "bob@example.com",
        "--rcpt",
        "x@remote.test",
    )
    assert result.code == 1
    assert result.out.splitlines() == [
        "rcpt=bob@example.com action=continue rule=local-recipient reply=-",
        'rcpt=x@remote.test action=reject rule=auth-required reply="550 5.7.1 Log in first"',
    ]
    data = cli(
        "check", "--login", "carol", "--from", "x@example.org", "--rcpt", "y@z.test", "--json"
    ).json()
    assert data["grants"] == ["@example.org"]
    assert data["settings"]["require-sender-match"] == "on"


def test_export_import_round_trip_is_idempotent(cli: CliRunner, tmp_path: Path) -> None:
    _policy_store(cli)
    exported = cli("export")
    assert exported.code == 0
    dump = tmp_path / "store.json"
    dump.write_text(exported.out, encoding="utf-8")
    cli("domain", "add", "extra.test")
    cli("settings", "set", "dry-run", "on")
    assert cli("import", str(dump)).code == 0
    assert cli("export").out == exported.out
    assert cli("import", str(dump)).code == 0
    assert cli("export").out == exported.out
    data = json.loads(exported.out)
    assert data["domains"]["example.org"] == {"dry-run": "on", "require-sender-match": "on"}


def test_import_into_another_store_reproduces_decisions(cli: CliRunner, tmp_path: Path) -> None:
    _policy_store(cli)
    dump = tmp_path / "store.json"
    dump.write_text(cli("export").out, encoding="utf-8")
    other = f"sqlite:///{tmp_path / 'other.sqlite'}"
    assert cli("--db", other, "db", "init", db=None).code == 0
    assert cli("--db", other, "import", str(dump), db=None).code == 0
    check = ["check", "--from", "alice@example.com", "--rcpt", "x@remote.test", "--json"]
    assert (
        cli(*check).json()["recipients"] == cli("--db", other, *check, db=None).json()["recipients"]
    )


def test_a_missing_store_is_an_error_until_db_init_creates_it(
    cli: CliRunner, tmp_path: Path
) -> None:
    path = tmp_path / "deep" / "dir" / "new.sqlite"
    url = f"sqlite:///{path}"
    no_store = (
        f"smtpauth-milter: error: no store at {path} (create it with `smtpauth-milter db init`)\n"
    )
    for command in (
        ["domain", "list"],
        ["domain", "add", "example.com"],
        ["check", "--from", "a@example.com", "--rcpt", "b@remote.test"],
        ["db", "current"],
        ["db", "check"],
        ["export"],
    ):
        result = cli("--db", url, *command, db=None)
        assert (result.code, result.out, result.err) == (2, "", no_store), command
    assert not (tmp_path / "deep").exists(), "no command but db init/upgrade creates a store"
    created = cli("--db", url, "db", "init", db=None)
    assert created.code == 0, created.err
    assert created.out.startswith(f"store sqlite:///{path} created, at schema ")
    again = cli("--db", url, "db", "init", db=None)
    assert again.code == 0 and " exists, at schema " in again.out, "db init is idempotent"
    assert cli("--db", url, "domain", "list", db=None).code == 0
    store = Store(url)
    assert store.current() == store.head()
    mode = (tmp_path / "deep" / "dir" / "new.sqlite").stat().st_mode & 0o777
    assert mode & 0o007 == 0, "the store must not be world readable"
    for directory in (tmp_path / "deep", tmp_path / "deep" / "dir"):
        assert directory.stat().st_mode & 0o777 == 0o750, directory
    store.dispose()


def test_a_store_behind_the_schema_is_refused_naming_db_upgrade(
    cli: CliRunner, db_url: str
) -> None:
    assert cli("domain", "add", "example.com").code == 0
    store = Store(db_url)
    store.downgrade("base")
    store.dispose()
    result = cli("domain", "list")
    assert result.code == 2
    assert "smtpauth-milter db upgrade" in result.err
    assert cli("db", "upgrade").code == 0
    assert cli("domain", "list").code == 0


def test_db_current_and_check(cli: CliRunner, db_url: str) -> None:
    migrations = Store(db_url).migrations
    head = migrations.head
    upgraded = cli("db", "upgrade")
    assert upgraded.code == 0
    assert upgraded.out.endswith(
        f" is at schema {head} (readable by smtpauth-milter {migrations.rules[head]} and later)\n"
    )
    current = cli("db", "current")
    assert current.out.splitlines() == [
        f"store: {head}  code: {head}",
        f"readable by: smtpauth-milter {migrations.rules[head]} and later (schema {head})",
    ]
    assert cli("db", "check").code == 0


@pytest.mark.postgres
def test_a_new_postgresql_database_is_refused_until_db_upgrade(
    cli: CliRunner, pg_server: PgServer
) -> None:
    name = pg_server.new_database_name()
    pg_server.create_database(name)
    pg_url = pg_server.url(name)
    refused = cli("--db", pg_url, "domain", "list", db=None)
    assert refused.code == 2
    assert "has no schema yet: run `smtpauth-milter db upgrade`" in refused.err
    assert cli("--db", pg_url, "db", "upgrade", db=None).code == 0
    assert cli("--db", pg_url, "domain", "add", "example.com", db=None).code == 0
