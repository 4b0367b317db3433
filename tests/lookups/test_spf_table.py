"""SPF against a real DNS server: every result, and the verdict it gives with spf-exempt on.

Each row is one check_host() through pyspf and our DNS lookups against unbound
serving the zones of tests/harness/dnsserver.py, then the decision for an
unauthenticated sender of that (local) domain with require-auth-local and
spf-exempt on: only ``pass`` continues, ``temperror`` tempfails, the rest keep
the refusal.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import pytest

from smtpauth_milter.core.networks import NetworkSet, parse_ip
from smtpauth_milter.core.policy import Action, Request, Rule, decide
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.core.spf import MAX_TTL, SpfResult
from smtpauth_milter.lookups.spfdns import SpfEvaluator
from tests.harness.dnsserver import SOA_MINIMUM, Blackhole, DnsServer

TIMEOUT = 1.0  # spf-timeout for the rows; the slow rows take about this long
# dnspython overruns a lifetime by its last backoff sleep (measured: 0.2 s on 3 s);
# the rest is room for a loaded machine.
SLOW_BOUND = TIMEOUT + 1.5


class Row(NamedTuple):
    ip: str
    sender: str
    result: SpfResult
    ttl: float | None = None  # the cache lifetime the answer earned, when the row checks it


P, F, S, N = SpfResult.PASS, SpfResult.FAIL, SpfResult.SOFTFAIL, SpfResult.NEUTRAL
NONE, PERM, TEMP = SpfResult.NONE, SpfResult.PERMERROR, SpfResult.TEMPERROR

ROWS = [
    Row("192.0.2.10", "a@ip4.spf.test", P, 300),
    Row("198.51.100.9", "a@ip4.spf.test", F, 300),
    Row("::ffff:192.0.2.10", "a@ip4.spf.test", P),
    Row("2001:db8:1::25", "a@ip6.spf.test", P),
    Row("2001:db8:2::1", "a@ip6.spf.test", F),
    Row("192.0.2.10", "a@ip6.spf.test", F),
    Row("192.0.2.20", "a@a.spf.test", P),
    Row("2001:db8:20::1", "a@a.spf.test", P),
    Row("198.51.100.5", "a@a.spf.test", P),
    Row("198.51.100.77", "a@a.spf.test", F),
    Row("192.0.2.30", "a@mx.spf.test", P),
    Row("2001:db8:30::1", "a@mx.spf.test", P),
    Row("192.0.2.31", "a@mx.spf.test", F),
    Row("192.0.2.10", "a@include.spf.test", P),
    Row("2001:db8:1::1", "a@include.spf.test", P),
    Row("198.51.100.9", "a@include.spf.test", S),
    Row("192.0.2.10", "a@inc-none.spf.test", PERM),
    Row("192.0.2.10", "a@redirect.spf.test", P),
    Row("198.51.100.9", "a@redirect.spf.test", F),
    Row("192.0.2.10", "a@redir-nx.spf.test", PERM, SOA_MINIMUM),
    Row("192.0.2.10", "A@CName.SPF.test", P),
    Row("192.0.2.10", "a@short.spf.test", P, 5),
    Row("192.0.2.40", "bob+tag@exists.spf.test", P),
    Row("192.0.2.40", "bob@exists.spf.test", P),
    Row("192.0.2.40", "alice@exists.spf.test", F, SOA_MINIMUM),
    Row("192.0.2.41", "bob@exists.spf.test", F),
    Row("2001:db8:1::5", "x@exists6.spf.test", P),
    Row("2001:db8:1::6", "x@exists6.spf.test", F),
    Row("192.0.2.10", "a@void2.spf.test", P),
    Row("192.0.2.10", "a@void3.spf.test", PERM),
    Row("192.0.2.10", "a@lim10.spf.test", P),
    Row("192.0.2.10", "a@lim11.spf.test", PERM),
    Row("198.51.100.101", "a@lim11.spf.test", P),
    Row("192.0.2.10", "a@lim-nest.spf.test", PERM),
    Row("192.0.2.10", "a@big.spf.test", P),
    Row("198.51.100.9", "a@big.spf.test", F),
    Row("192.0.2.10", "a@two.spf.test", PERM),
    Row("192.0.2.10", "a@bad.spf.test", PERM),
    Row("192.0.2.10", "a@neutral.spf.test", N),
    Row("192.0.2.10", "a@nospf.spf.test", NONE),
    Row("192.0.2.10", "a@nx.spf.test", NONE, SOA_MINIMUM),
    Row("192.0.2.10", "a@ip4.spf.test.", P),  # a trailing dot is the same domain
    Row("192.0.2.50", "a@ptr.spf.test", P),
    Row("192.0.2.51", "a@ptr.spf.test", F),
    Row("198.51.100.9", "a@exp.spf.test", F),
    Row("192.0.2.10", "a@x.sf.test", TEMP, 0),
    Row("192.0.2.10", "a@inc-servfail.spf.test", TEMP, 0),
]
SLOW_ROWS = [
    Row("192.0.2.10", "a@x.to.test", TEMP, 0),
    Row("192.0.2.10", "a@inc-timeout.spf.test", TEMP, 0),
]


def _snapshot(domain: str) -> Snapshot:
    on = {"require-auth-local": "on", "spf-exempt": "on"}
    return Snapshot.build({}, {domain: on}, NetworkSet.of(()), ())


def _expected_verdict(result: SpfResult) -> tuple[Action, Rule]:
    if result is SpfResult.PASS:
        return Action.CONTINUE, Rule.SPF_PASS
    if result is SpfResult.TEMPERROR:
        return Action.TEMPFAIL, Rule.SPF_TEMPERROR
    return Action.REJECT, Rule.AUTH_REQUIRED


def _check(evaluator: SpfEvaluator, row: Row) -> None:
    client = parse_ip(row.ip)
    assert client is not None
    answer = evaluator.evaluate(client, row.sender)
    assert answer.result is row.result, (row, answer)
    if row.ttl is not None:
        assert answer.ttl == row.ttl, (row, answer)
    domain = row.sender.rpartition("@")[2].lower().rstrip(".")
    request = Request(client, None, f"<{row.sender}>", spf=answer.result)
    verdict = decide(_snapshot(domain), request, "<x@remote.test>")
    assert (verdict.action, verdict.rule) == _expected_verdict(row.result), (row, verdict)


@pytest.mark.parametrize("row", ROWS, ids=[f"{r.sender}-from-{r.ip}" for r in ROWS])
def test_result_and_verdict(dns_server: DnsServer, row: Row) -> None:
    _check(SpfEvaluator(dns_server.address, TIMEOUT), row)


@pytest.mark.parametrize("row", SLOW_ROWS, ids=[r.sender for r in SLOW_ROWS])
def test_a_name_that_never_answers_is_a_bounded_temperror(dns_server: DnsServer, row: Row) -> None:
    started = time.monotonic()
    _check(SpfEvaluator(dns_server.address, TIMEOUT), row)
    assert time.monotonic() - started < SLOW_BOUND


def test_a_resolver_that_never_answers_is_a_bounded_temperror(blackhole: Blackhole) -> None:
    evaluator = SpfEvaluator(blackhole.address, TIMEOUT)
    started = time.monotonic()
    _check(evaluator, Row("192.0.2.10", "a@ip4.spf.test", TEMP, 0))
    elapsed = time.monotonic() - started
    assert TIMEOUT * 0.9 <= elapsed < SLOW_BOUND
    client = parse_ip("192.0.2.10")
    assert client is not None
    assert evaluator.evaluate(client, "a@ip4.spf.test").timed_out


def test_exp_is_never_fetched(dns_server: DnsServer) -> None:
    """exp=x.to.test never answers: fetching it would make this pass take the whole deadline."""
    evaluator = SpfEvaluator(dns_server.address, 3.0)
    client = parse_ip("192.0.2.10")
    assert client is not None
    started = time.monotonic()
    answer = evaluator.evaluate(client, "a@exp-slow.spf.test")
    assert answer.result is SpfResult.PASS
    assert time.monotonic() - started < 1.5


def test_the_record_shown_is_the_sender_domains_own(dns_server: DnsServer) -> None:
    evaluator = SpfEvaluator(dns_server.address, TIMEOUT)
    client = parse_ip("192.0.2.10")
    assert client is not None
    included = evaluator.evaluate(client, "a@include.spf.test")
    assert included.record == "v=spf1 include:ip4.spf.test include:ip6.spf.test ~all"
    assert evaluator.evaluate(client, "a@nx.spf.test").record is None


def test_a_sender_without_domain_is_none_and_asks_nobody(blackhole: Blackhole) -> None:
    client = parse_ip("192.0.2.10")
    assert client is not None
    answer = SpfEvaluator(blackhole.address, TIMEOUT).evaluate(client, "nobody")
    assert (answer.result, answer.ttl, answer.timed_out) == (SpfResult.NONE, MAX_TTL, False)
