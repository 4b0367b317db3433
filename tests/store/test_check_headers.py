"""``smtpauth-milter check`` explains the end-of-headers decision too (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.conftest import CliRunner

HF_MISMATCH = "550 5.7.1 From header not owned by authenticated user"


def _store(cli: CliRunner) -> None:
    """example.com checks From: in dry-run, example.net checks it for real, example.org not."""
    commands = [
        ("domain", "add", "example.com", "example.net", "example.org"),
        ("settings", "set", "--domain", "example.com", "require-header-from-match", "on"),
        ("settings", "set", "--domain", "example.com", "dry-run", "on"),
        ("settings", "set", "--domain", "example.net", "require-header-from-match", "on"),
        ("sender", "allow", "sec@example.net", "@example.org"),
    ]
    for command in commands:
        assert cli(*command).code == 0, command


@pytest.mark.parametrize(
    ("args", "action", "rule", "domain", "code"),
    [
        pytest.param(["--from", "x@remote.test", "--no-header-from"], "continue", "header-from-not-checked", None, 0, id="no-from-remote-envelope"),
        pytest.param(["--from", "alice@example.com", "--no-header-from"], "would-reject", "bad-header-from", "example.com", 0, id="no-from-dry-run-domain"),
        pytest.param(["--from", "bob@example.net", "--no-header-from"], "reject", "bad-header-from", "example.net", 1, id="no-from-enforcing-domain"),
        pytest.param(["--from", "x@remote.test", "--header-from", "a@remote.test, b@remote.test"], "continue", "header-from-not-checked", None, 0, id="two-remote-addresses"),
        pytest.param(["--from", "x@remote.test", "--header-from", "a@remote.test", "--header-from", "bob@example.net"], "reject", "bad-header-from", "example.net", 1, id="two-from-fields"),
        pytest.param(["--from", "x@remote.test", "--header-from", "bob@example.net <evil@remote.test>"], "reject", "bad-header-from", "example.net", 1, id="unparseable"),
        pytest.param(["--from", "x@remote.test", "--header-from", "Bob <bob@example.net>"], "reject", "header-from-auth-required", "example.net", 1, id="unauthenticated"),
        pytest.param(["--from", "x@remote.test", "--login", "bob@example.net", "--header-from", "Bob <Bob+x@example.net>"], "continue", "header-from-owned", "example.net", 0, id="owned"),
        pytest.param(["--from", "x@remote.test", "--login", "sec@example.net", "--header-from", "bob@example.net", "--header-sender", "list@example.org"], "continue", "header-sender-owned", "example.net", 0, id="sender-owned-by-grant"),
        pytest.param(["--from", "x@remote.test", "--login", "mallory@example.org", "--header-from", "bob@example.net", "--header-sender", "boss@example.net"], "reject", "header-from-mismatch", "example.net", 1, id="mismatch"),
        pytest.param(["--from", "x@remote.test", "--header-from", "alice@example.org"], "continue", "header-from-not-checked", "example.org", 0, id="rule-off-domain"),
        pytest.param(["--client", "192.0.2.7", "--from", "x@remote.test", "--no-header-from"], "continue", "trusted-network", None, 0, id="trusted-network"),
    ],
)  # fmt: skip
def test_check_explains_the_header_decision(
    cli: CliRunner, args: list[str], action: str, rule: str, domain: str | None, code: int
) -> None:
    _store(cli)
    assert cli("network", "add", "192.0.2.0/24").code == 0
    result = cli("check", *args, "--json")
    assert result.code == code, result
    headers = result.json()["headers"]
    assert (headers["action"], headers["rule"], headers["domain"]) == (action, rule, domain)
    assert result.json()["recipients"] == []


def test_check_text_prints_recipients_then_the_header_line(cli: CliRunner) -> None:
    _store(cli)
    result = cli(
        "check", "--from", "bob@example.net", "--rcpt", "x@remote.test",
        "--header-from", "Team: a@remote.test, bob@example.net;", "--header-from", "x@remote.test",
    )  # fmt: skip
    assert result.code == 1
    assert result.out.splitlines() == [
        "rcpt=x@remote.test action=continue rule=auth-not-required reply=-",
        'header_from="Team: a@remote.test, bob@example.net; | x@remote.test" '
        f'action=reject rule=bad-header-from reply="{HF_MISMATCH}"',
    ]


def test_check_json_gives_the_header_values_as_given(cli: CliRunner) -> None:
    _store(cli)
    data = cli(
        "check", "--from", "alice@example.com", "--login", "sec@example.net",
        "--header-from", "alice@example.com", "--header-sender", "S <boss@example.net>", "--json",
    ).json()  # fmt: skip
    assert data["headers"] == {
        "from": ["alice@example.com"],
        "sender": ["S <boss@example.net>"],
        "action": "would-reject",
        "rule": "header-from-mismatch",
        "reply": HF_MISMATCH,
        "domain": "example.com",
    }


def test_check_without_header_options_has_no_header_decision(cli: CliRunner) -> None:
    _store(cli)
    result = cli("check", "--from", "alice@example.com", "--rcpt", "x@remote.test", "--json")
    assert "headers" not in result.json()
    assert "header_from" not in cli("check", "--from", "a@example.com", "--rcpt", "x@y.test").out


def test_a_hostile_header_value_stays_on_one_line(cli: CliRunner) -> None:
    _store(cli)
    hostile = "bob@example.net\r\nrcpt=x action=continue rule=owned"
    result = cli("check", "--from", "x@remote.test", "--header-from", hostile)
    assert result.code == 1
    assert len(result.out.splitlines()) == 1
    assert result.out.split(" action=")[-1].startswith("reject rule=bad-header-from ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([], "give --rcpt, --header-from or --no-header-from", id="nothing-to-decide"),
        pytest.param(["--header-sender", "a@example.net"], "--header-sender needs --header-from or --no-header-from", id="sender-alone"),
        pytest.param(["--header-from", "a@example.net", "--no-header-from"], "--header-from and --no-header-from exclude each other", id="both"),
    ],
)  # fmt: skip
def test_bad_header_options_are_one_error_line(
    cli: CliRunner, args: list[str], message: str
) -> None:
    _store(cli)
    result = cli("check", "--from", "x@remote.test", *args)
    assert (result.code, result.out) == (2, "")
    assert result.err == f"smtpauth-milter: error: {message}\n"


def test_check_explains_routed_recipients_and_role_senders(cli: CliRunner) -> None:
    """Items shared with decide(): a %-hack recipient is not local; no-reply is a role."""
    _store(cli)
    for command in (
        ("settings", "set", "require-auth-local", "on"),
        ("settings", "set", "exempt-local-recipients", "on"),
        ("settings", "set", "recipient-delimiter", "+-"),
        ("settings", "set", "role-senders", "no-reply, mailer-daemon"),
    ):
        assert cli(*command).code == 0
    result = cli(
        "check", "--from", "alice@example.org",
        "--rcpt", "bob@example.org", "--rcpt", "victim%gmail.com@example.org",
    )  # fmt: skip
    assert [line.split()[2] for line in result.out.splitlines()] == [
        "rule=local-recipient",
        "rule=auth-required",
    ]
    role = cli("check", "--from", "No-Reply@example.org", "--rcpt", "x@remote.test").out
    assert " rule=role-auth-required " in role
