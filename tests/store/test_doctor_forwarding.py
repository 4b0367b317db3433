"""``doctor`` warns when exempt-local-recipients meets Postfix's aliases (docs/policy.md#forwarding-aliases).

A recipient counts as local by its domain alone, so an alias that forwards
off-site is exempted too.  Real store, real ``postconf -c DIR`` on private
main.cf files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.admin.doctor.checks import Severity
from smtpauth_milter.admin.doctor.forwarding import check_forwarding
from tests.harness.mta.postfix import write_settled

BASE = """\
myhostname = mx.example.com
mydomain = example.com
mydestination = $mydomain, localhost.$mydomain, localhost
virtual_mailbox_domains = example.net
relay_domains =
smtpd_milters = inet:127.0.0.1:1
milter_default_action = tempfail
"""
NO_ALIASES = "alias_maps =\nvirtual_alias_maps =\n"


def doctor(tmp_path: Path, capsys: pytest.CaptureFixture[str], *setup: list[str], cf: str) -> str:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    assert run_cli(["--db", url, "db", "init"]) == 0
    assert run_cli(["--db", url, "domain", "add", "example.com", "example.net"]) == 0
    for command in setup:
        assert run_cli(["--db", url, *command]) == 0
    config = tmp_path / "postfix"
    config.mkdir()
    write_settled(config / "main.cf", BASE + cf)
    capsys.readouterr()
    run_cli(
        ["--db", url, "doctor", "--postfix-config", str(config), "--socket", "inet:1@127.0.0.1"]
    )
    return capsys.readouterr().out


def forwarding_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if "exempt-local-recipients is on" in line]


EXEMPT_COM = ["settings", "set", "--domain", "example.com", "exempt-local-recipients", "on"]


def test_exempt_with_virtual_aliases_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = doctor(
        tmp_path,
        capsys,
        EXEMPT_COM,
        cf=NO_ALIASES + "virtual_alias_maps = texthash:/etc/postfix/virtual\n",
    )
    lines = forwarding_lines(out)
    assert len(lines) == 1, out
    assert lines[0].startswith("warning: exempt-local-recipients is on for example.com and"), lines
    assert "(virtual_alias_maps = texthash:/etc/postfix/virtual)" in lines[0]
    assert " — fix: turn exempt-local-recipients off" in lines[0]
    assert "docs/policy.md#forwarding-aliases" in lines[0]


def test_exempt_everywhere_with_debians_default_aliases_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    global_on = ["settings", "set", "exempt-local-recipients", "on"]
    out = doctor(tmp_path, capsys, global_on, cf="alias_maps = hash:/etc/aliases\n")
    (line,) = forwarding_lines(out)
    assert "is on for example.com, example.net and Postfix has aliases" in line
    assert "(alias_maps = hash:/etc/aliases)" in line


@pytest.mark.parametrize(
    ("setup", "cf"),
    [
        pytest.param([], "virtual_alias_maps = texthash:/etc/postfix/virtual\n", id="exempt-off"),
        pytest.param([EXEMPT_COM], NO_ALIASES, id="no-aliases"),
        pytest.param(
            [EXEMPT_COM, ["settings", "set", "--domain", "example.com", "exempt-local-recipients", "off"]],
            "alias_maps = hash:/etc/aliases\n",
            id="turned-off-again",
        ),
    ],
)  # fmt: skip
def test_no_warning_without_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setup: list[list[str]], cf: str
) -> None:
    assert forwarding_lines(doctor(tmp_path, capsys, *setup, cf=cf)) == []


def test_the_pure_check() -> None:
    params = {"virtual_alias_maps": "", "alias_maps": " "}
    assert check_forwarding(["example.com"], params) is None
    assert check_forwarding([], {"alias_maps": "hash:/etc/aliases"}) is None
    many = [f"d{i}.test" for i in range(7)]
    found = check_forwarding(many, {"alias_maps": "hash:/etc/aliases"})
    assert found is not None and found.severity is Severity.WARNING
    assert "on for d0.test, d1.test, d2.test, d3.test, d4.test and 2 more and" in found.what
