"""spf-exempt through a real Postfix + Dovecot, our real milter and a real DNS server.

The sandbox client is 127.0.0.1.  The private unbound (tests/harness/dnsserver.py)
serves ``example.com`` with an SPF record that authorises 127.0.0.1 and
``example.net`` with one that does not; the milter's ``dns-resolver`` points at
it, or at a server that never answers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.harness.dnsserver import Blackhole, DnsServer
from tests.harness.logfile import LogFile
from tests.harness.mta import Sandbox

from .milter_fixture import OurMilter, StoreCli, decision_for, field_of
from .test_policies_postfix import (
    AUTH,
    LOCAL,
    LOCAL_DOMAINS,
    RAL_ON,
    REMOTE,
    ROLE,
    Case,
    ok,
    refused,
    run_case,
    setting,
    unauth,
)

pytestmark = pytest.mark.mta

ZONES = {
    "example.com": '@ TXT "v=spf1 ip4:127.0.0.1 -all"\n',
    "example.net": '@ TXT "v=spf1 ip4:192.0.2.0/24 -all"\n',
}
SPF_TIMEOUT = "1"
TEMPFAIL_REPLY = "451 4.3.0 Temporary policy failure, try again later"


@dataclass
class SpfSetup:
    milter: OurMilter
    dns: DnsServer
    blackhole: Blackhole


@pytest.fixture(scope="module")
def spf_setup(tmp_path_factory: pytest.TempPathFactory, mta_sandbox: Sandbox) -> Iterator[SpfSetup]:
    root = tmp_path_factory.mktemp("spf-postfix")
    with DnsServer(root, ZONES) as dns, Blackhole() as blackhole:
        store = StoreCli(root / "store.sqlite")
        store.run("domain", "add", *LOCAL_DOMAINS)
        store.run("settings", "set", "dns-resolver", dns.address)
        store.run("settings", "set", "spf-timeout", SPF_TIMEOUT)
        store.save_baseline()
        milter = OurMilter(store, mta_sandbox.inet_milter_socket(), LogFile(root / "milter.log"))
        milter.start()
        try:
            yield SpfSetup(milter, dns, blackhole)
        finally:
            mta_sandbox.postfix.use_milter(None)
            milter.stop()


def spf_on(domain: str) -> tuple[str, ...]:
    return setting("spf-exempt", "on", domain)


SPF_PASS = ok("spf-pass")

CASES = [
    Case(
        "authorised-ip-passes-for-remote-and-local-recipients",
        (RAL_ON, spf_on("example.com")),
        (unauth("support@example.com", remote=SPF_PASS, local=SPF_PASS),),
    ),
    Case(
        "setting-off-keeps-the-refusal",
        (RAL_ON,),
        (unauth("support@example.com", remote=AUTH, local=AUTH),),
    ),
    Case(
        "ip-outside-the-record-is-refused",
        (RAL_ON, spf_on("example.net")),
        (unauth("support@example.net", remote=AUTH, local=AUTH),),
    ),
    Case(
        "role-sender-still-needs-a-login",
        (RAL_ON, spf_on("example.com")),
        (unauth("postmaster@example.com", remote=ROLE),),
    ),
    Case(
        "role-sender-with-spf-exempt-role",
        (RAL_ON, setting("spf-exempt-role", "on", "example.com")),
        (unauth("postmaster@example.com", remote=SPF_PASS),),
    ),
]  # fmt: skip
EXPECTED_SPF = {
    "authorised-ip-passes-for-remote-and-local-recipients": "pass",
    "setting-off-keeps-the-refusal": "-",  # not consulted: no spf= field
    "ip-outside-the-record-is-refused": "fail",
    "role-sender-still-needs-a-login": "-",
    "role-sender-with-spf-exempt-role": "pass",
}


def _spf_field(line: str) -> str:
    return field_of(line, "spf") if " spf=" in line else "-"


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_spf_exempt(mta_sandbox: Sandbox, spf_setup: SpfSetup, case: Case) -> None:
    milter = spf_setup.milter
    since = milter.log.mark()
    run_case(mta_sandbox, milter, case)
    for session in case.sessions:
        for rcpt in session.expect:
            line = decision_for(milter.log, rcpt, since)
            assert _spf_field(line) == EXPECTED_SPF[case.id], line


def test_a_dns_server_that_does_not_answer_tempfails(
    mta_sandbox: Sandbox, spf_setup: SpfSetup
) -> None:
    """No answer in spf-timeout: a 4xx for every recipient the login rule covers, never 5xx."""
    milter = spf_setup.milter
    tempfail = refused(TEMPFAIL_REPLY, "spf-temperror", "tempfail")
    case = Case(
        "dns-down",
        (RAL_ON, spf_on("example.com"), setting("dns-resolver", spf_setup.blackhole.address)),
        (unauth("support@example.com", remote=tempfail, local=tempfail),),
    )
    since = milter.log.mark()
    run_case(mta_sandbox, milter, case)
    for rcpt in (REMOTE, LOCAL):
        assert _spf_field(decision_for(milter.log, rcpt, since)) == "temperror"
