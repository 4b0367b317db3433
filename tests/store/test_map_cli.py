"""The CLI on sender-login-maps, against a SQLite and a PostgreSQL store.

``check`` shows the map, key and owners that matched (and a failing map);
every command that stores a file-naming setting (``settings set``,
``import``) checks the files first: one error line, exit 2, nothing changed.
Postfix tables are read by the real ``postmap`` with a private main.cf named
by ``postfix-config-dir``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import CliResult, CliRunner
from tests.harness.mta.postfix import write_settled

REMOTE = "x@remote.test"


def postfix_dir(tmp_path: Path) -> Path:
    conf = tmp_path / "postfix"
    conf.mkdir()
    write_settled(conf / "main.cf", "compatibility_level = 3.6\n")
    return conf


@pytest.fixture
def maps_cli(cli: CliRunner, tmp_path: Path) -> CliRunner:
    """A store with example.com local, sender match on, Postfix's main.cf in a private dir."""
    for args in (
        ("domain", "add", "example.com"),
        ("settings", "set", "require-sender-match", "on"),
        ("settings", "set", "postfix-config-dir", str(postfix_dir(tmp_path))),
    ):
        assert cli(*args).code == 0, args
    return cli


def one_error(result: CliResult, *needles: str) -> None:
    assert result.code == 2 and result.out == ""
    assert result.err.count("\n") == 1 and result.err.startswith("smtpauth-milter: error: ")
    for needle in needles:
        assert needle in result.err, result.err


def shown(cli: CliRunner, key: str) -> str:
    value: str = cli("settings", "show", "--json").json()["settings"][key]["value"]
    return value


def check(cli: CliRunner, login: str, sender: str, *extra: str) -> CliResult:
    return cli("check", "--login", login, "--from", sender, "--rcpt", REMOTE, *extra)


def test_check_names_the_map_the_key_and_the_owners(maps_cli: CliRunner, tmp_path: Path) -> None:
    table = tmp_path / "owners"
    table.write_text("sales@example.com  alice@example.com, bob@example.com\n@example.com carol\n")
    assert maps_cli("settings", "set", "sender-login-maps", f"texthash:{table}").code == 0
    result = check(maps_cli, "bob@example.com", "Sales+Q@Example.COM")
    assert result.code == 0, result.err
    rcpt_line, map_line = result.out.splitlines()
    assert f"owned_by=texthash:{table}" in rcpt_line and "owner_key=sales@example.com" in rcpt_line
    assert "rule=sender-owned" in rcpt_line and "action=continue" in rcpt_line
    assert map_line == (
        f"sender_login_maps=found map=texthash:{table} key=sales@example.com "
        "owners=alice@example.com,bob@example.com error=-"
    )
    data = check(maps_cli, "dave", "other@example.com", "--json").json()
    assert data["sender_login_maps"] == {
        "sender_login_maps": "found", "map": f"texthash:{table}", "key": "@example.com",
        "owners": "carol", "error": None,
    }  # fmt: skip
    assert data["recipients"][0]["rule"] == "sender-mismatch"
    assert data["recipients"][0]["reply"].startswith("553 5.7.1")


def test_check_with_a_sql_map_and_with_no_owner(maps_cli: CliRunner, tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "mail.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE alias (address text, goto text)")
        conn.execute("INSERT INTO alias VALUES ('team@example.com', 'erin@example.com')")
    config = tmp_path / "alias.toml"
    config.write_text(
        f'url = "sqlite:///{db}"\nquery = "SELECT goto FROM alias WHERE address = :sender"\n'
    )
    config.chmod(0o600)
    assert maps_cli("settings", "set", "sender-login-maps", f"sql:{config}").code == 0
    found = check(maps_cli, "erin@example.com", "team@example.com", "--json").json()
    assert found["sender_login_maps"]["map"] == f"sql:{config}"
    assert found["recipients"][0]["owner_key"] == "team@example.com"
    missing = check(maps_cli, "erin@example.com", "nobody@example.com")
    assert missing.code == 1
    assert missing.out.splitlines()[-1] == (
        "sender_login_maps=not-found map=- key=- owners=- error=-"
    )
    assert "rule=sender-mismatch" in missing.out.splitlines()[0]


def test_check_with_a_failing_map_tempfails_and_says_why(
    maps_cli: CliRunner, tmp_path: Path
) -> None:
    table = tmp_path / "owners"
    table.write_text("sales@example.com alice@example.com\n")
    assert maps_cli("settings", "set", "sender-login-maps", f"texthash:{table}").code == 0
    table.unlink()  # postmap: fatal: open database
    result = check(maps_cli, "alice@example.com", "sales@example.com")
    assert result.code == 1
    rcpt_line, map_line = result.out.splitlines()
    assert "action=tempfail" in rcpt_line and "rule=sender-map-failed" in rcpt_line
    assert 'reply="451 4.3.0 ' in rcpt_line
    assert map_line.startswith("sender_login_maps=failed ") and "open database" in map_line
    # the login's own address needs no map: decided without asking it
    own = check(maps_cli, "alice@example.com", "alice@example.com")
    assert own.code == 0 and "sender_login_maps" not in own.out


def test_import_checks_the_maps_like_settings_set_and_changes_nothing(
    maps_cli: CliRunner, tmp_path: Path
) -> None:
    table = tmp_path / "owners"
    table.write_text("sales@example.com alice@example.com\n")
    assert maps_cli("settings", "set", "sender-login-maps", f"texthash:{table}").code == 0
    before = maps_cli("export").out
    data = json.loads(before)
    for value, why in (
        (f"texthash:{tmp_path / 'gone'}", "is missing"),
        (f"hash:{table}", f"{table}.db is missing (run postmap on it first)"),
    ):
        data["settings"]["sender-login-maps"] = value
        data["settings"]["dry-run"] = "on"  # a good change in the same file is not kept either
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(data))
        one_error(maps_cli("import", str(bad)), "bad map", why)
        assert maps_cli("export").out == before
    one_error(
        maps_cli("settings", "set", "sender-login-maps", f"texthash:{tmp_path / 'gone'}"),
        "bad map", "is missing",
    )  # fmt: skip
    assert shown(maps_cli, "sender-login-maps") == f"texthash:{table}"


def test_postfix_config_dir_needs_a_main_cf(maps_cli: CliRunner, tmp_path: Path) -> None:
    good = shown(maps_cli, "postfix-config-dir")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error(
        maps_cli("settings", "set", "postfix-config-dir", str(empty)),
        f"bad postfix-config-dir {empty}: {empty}/main.cf is missing",
    )
    one_error(maps_cli("settings", "set", "postfix-config-dir", "relative/dir"), "bad directory")
    data = maps_cli("export").json()
    data["settings"]["postfix-config-dir"] = str(empty)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    one_error(maps_cli("import", str(bad)), "main.cf is missing")
    assert shown(maps_cli, "postfix-config-dir") == good
    assert maps_cli("settings", "unset", "postfix-config-dir").code == 0
    assert shown(maps_cli, "postfix-config-dir") == ""


def test_sender_login_maps_timeout_is_checked(maps_cli: CliRunner) -> None:
    one_error(
        maps_cli("settings", "set", "sender-login-maps-timeout", "0"),
        "bad sender-login-maps-timeout '0': seconds, more than 0 and at most 30",
    )
    assert maps_cli("settings", "set", "sender-login-maps-timeout", "1.50").code == 0
    assert shown(maps_cli, "sender-login-maps-timeout") == "1.5"
