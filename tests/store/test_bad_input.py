"""Every bad input: one line on stderr, exit 2, no traceback, nothing changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CliRunner

BAD_COMMANDS = {
    "unknown key": ["settings", "set", "require-auth-everything", "on"],
    "bad bool": ["settings", "set", "dry-run", "maybe"],
    "bad reply class": ["settings", "set", "auth-required-reply", "530 4.7.0 Nope"],
    "bad reply code": ["settings", "set", "auth-required-reply", "250 2.0.0 Fine"],
    "bad reply text": ["settings", "set", "tempfail-reply", "451 4.3.0 \x1b[31mred"],
    "permanent tempfail reply": ["settings", "set", "tempfail-reply", "550 5.7.1 go away"],
    "global-only per domain": [
        "settings",
        "set",
        "--domain",
        "example.com",
        "tempfail-reply",
        "451 4.3.0 later",
    ],
    "unknown domain set": ["settings", "set", "--domain", "nowhere.test", "dry-run", "on"],
    "unknown domain unset": ["settings", "unset", "--domain", "nowhere.test", "dry-run"],
    "unknown domain show": ["settings", "show", "--domain", "nowhere.test"],
    "unknown key unset": ["settings", "unset", "nope"],
    "bad delimiter": ["settings", "set", "recipient-delimiter", "@"],
    "bad role list": ["settings", "set", "role-senders", "postmaster, a b"],
    "bad domain": ["domain", "add", "exa mple.com"],
    "bad idn": ["domain", "add", "xn--.example"],
    "one bad of many": ["domain", "add", "good.test", "bad..test"],
    "remove unknown domain": ["domain", "remove", "nowhere.test"],
    "bad cidr": ["network", "add", "10.0.0.1/8"],
    "not a cidr": ["network", "add", "example.com"],
    "remove unknown network": ["network", "remove", "203.0.113.0/24"],
    "bad grant address": ["sender", "allow", "alice", "alice@@example.com"],
    "bad grant domain": ["sender", "allow", "alice", "@"],
    "bad login": ["sender", "allow", "al ice", "alice@example.com"],
    "revoke unknown": ["sender", "revoke", "alice", "bob@example.com"],
    "check bad client": [
        "check",
        "--client",
        "999.1.1.1",
        "--from",
        "a@example.com",
        "--rcpt",
        "b@x",
    ],
    "check no rcpt": ["check", "--from", "a@example.com"],
    "unknown command": ["frobnicate"],
    "missing argument": ["settings", "set", "dry-run"],
    "run bad socket": ["run", "--socket", "tcp:25"],
    "run bad max-stale": ["run", "--max-stale", "soon"],
    "import missing file": ["import", "/nonexistent/export.json"],
}


def _seed(cli: CliRunner) -> str:
    cli("domain", "add", "example.com")
    cli("settings", "set", "require-auth-local", "on")
    cli("network", "add", "192.0.2.0/24")
    cli("sender", "allow", "alice", "@example.com")
    return cli("export").out


def _assert_one_clean_line(err: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("smtpauth-milter: error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize("args", list(BAD_COMMANDS.values()), ids=list(BAD_COMMANDS))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(cli: CliRunner, args: list[str]) -> None:
    before = _seed(cli)
    result = cli(*args)
    assert result.code == 2
    _assert_one_clean_line(result.err)
    assert cli("export").out == before


@pytest.mark.parametrize(
    "content",
    [
        "not json",
        '{"format": "something-else"}',
        '{"format": "smtpauth-milter/1", "settings": {"dry-run": "maybe"}}',
        '{"format": "smtpauth-milter/1", "domains": {"example.com": {"tempfail-reply": "451 4.3.0 x"}}}',
        '{"format": "smtpauth-milter/1", "domains": {"ok.test": {}}, "networks": [{"cidr": "1.2.3.4/8"}]}',
        '{"format": "smtpauth-milter/1", "grants": [{"login": "a"}]}',
        '{"format": "smtpauth-milter/1", "extra": 1}',
    ],
)
def test_a_bad_import_changes_nothing(cli: CliRunner, tmp_path: Path, content: str) -> None:
    before = _seed(cli)
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    result = cli("import", str(path))
    assert result.code == 2
    _assert_one_clean_line(result.err)
    assert cli("export").out == before


def test_an_unreachable_store_never_shows_the_password(cli: CliRunner) -> None:
    url = "postgresql+psycopg://milter:S3cr3t-pw@127.0.0.1:9/smtpauth"
    result = cli("--db", url, "domain", "list", db=None)
    assert result.code == 2
    _assert_one_clean_line(result.err)
    assert "S3cr3t-pw" not in result.err
    assert "***" in result.err


def test_a_bad_config_file_is_one_line(cli: CliRunner, tmp_path: Path) -> None:
    config = tmp_path / "milter.toml"
    config.write_text('db = "sqlite:///x"\nsockets = "inet:1@127.0.0.1"\n', encoding="utf-8")
    result = cli("--config", str(config), "domain", "list")
    assert result.code == 2
    _assert_one_clean_line(result.err)
    assert "sockets" in result.err
