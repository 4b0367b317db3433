"""The SPF settings and ``check`` through the real CLI, on SQLite and PostgreSQL.

``check`` looks SPF up against the private unbound (tests/harness/dnsserver.py)
exactly as the milter would, and shows the result and the domain's record.
"""

from __future__ import annotations

import pytest

from tests.conftest import CliRunner
from tests.harness.dnsserver import DnsServer

RECORD = "v=spf1 ip4:192.0.2.0/24 -all"


def _spf_store(cli: CliRunner, resolver: str) -> None:
    for command in (
        ("domain", "add", "ip4.spf.test", "x.to.test"),
        ("settings", "set", "require-auth-local", "on"),
        ("settings", "set", "--domain", "ip4.spf.test", "spf-exempt", "on"),
        ("settings", "set", "--domain", "x.to.test", "spf-exempt", "on"),
        ("settings", "set", "dns-resolver", resolver),
        ("settings", "set", "spf-timeout", "1"),
    ):
        result = cli(*command)
        assert result.code == 0, result.err


def _check(cli: CliRunner, client: str, sender: str, *extra: str) -> tuple[int, list[str]]:
    result = cli("check", "--client", client, "--from", sender, "--rcpt", "x@remote.test", *extra)
    return result.code, result.out.splitlines()


def test_check_shows_spf_pass_and_the_record(cli: CliRunner, dns_server: DnsServer) -> None:
    _spf_store(cli, dns_server.address)
    code, lines = _check(cli, "192.0.2.10", "alice@ip4.spf.test")
    assert code == 0
    assert lines == [
        "rcpt=x@remote.test action=continue rule=spf-pass reply=- spf=pass",
        f'spf=pass record="{RECORD}" detail="sender SPF authorized"',
    ]
    data = cli(
        "check", "--client", "192.0.2.10", "--from", "alice@ip4.spf.test",
        "--rcpt", "x@remote.test", "--json",
    ).json()  # fmt: skip
    assert data["spf"]["result"] == "pass"
    assert data["spf"]["record"] == RECORD
    assert data["recipients"][0]["rule"] == "spf-pass"


def test_check_shows_spf_fail_keeping_the_refusal(cli: CliRunner, dns_server: DnsServer) -> None:
    _spf_store(cli, dns_server.address)
    code, lines = _check(cli, "198.51.100.9", "alice@ip4.spf.test")
    assert code == 1
    assert lines[0].startswith("rcpt=x@remote.test action=reject rule=auth-required ")
    assert lines[0].endswith(" spf=fail")
    assert lines[1].startswith(f'spf=fail record="{RECORD}" ')


def test_check_without_need_for_spf_looks_nothing_up(cli: CliRunner, dns_server: DnsServer) -> None:
    _spf_store(cli, dns_server.address)
    code, lines = _check(cli, "192.0.2.10", "postmaster@ip4.spf.test", "--json")
    assert code == 1
    assert '"spf": null' in "\n".join(lines)
    code, lines = _check(cli, "192.0.2.10", "alice@remote.test")
    assert (code, lines) == (
        0,
        ["rcpt=x@remote.test action=continue rule=non-local-sender reply=-"],
    )


def test_check_tempfails_when_dns_does_not_answer(cli: CliRunner, dns_server: DnsServer) -> None:
    _spf_store(cli, dns_server.address)
    code, lines = _check(cli, "192.0.2.10", "alice@x.to.test")
    assert code == 1
    assert lines[0] == (
        "rcpt=x@remote.test action=tempfail rule=spf-temperror "
        'reply="451 4.3.0 Temporary policy failure, try again later" spf=temperror'
    )


@pytest.mark.parametrize(
    "args",
    [
        ("settings", "set", "dns-resolver", "resolver.example.com"),
        ("settings", "set", "dns-resolver", "[::1]:99999"),
        ("settings", "set", "spf-timeout", "0"),
        ("settings", "set", "spf-timeout", "forever"),
        ("settings", "set", "--domain", "ip4.spf.test", "dns-resolver", "127.0.0.1"),
        ("settings", "set", "--domain", "ip4.spf.test", "spf-exempt", "maybe"),
    ],
)
def test_bad_spf_settings_are_one_error_line_and_change_nothing(
    cli: CliRunner, args: tuple[str, ...]
) -> None:
    cli("domain", "add", "ip4.spf.test")
    before = cli("export").out
    result = cli(*args)
    assert result.code == 2
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("smtpauth-milter: error: "), result.err
    assert cli("export").out == before
