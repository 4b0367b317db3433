"""The adapter with spf-exempt, through pymilter's TestCtx and a real DNS server.

The sender domains are zones of the private unbound (tests/harness/dnsserver.py):
``ip4.spf.test`` authorises 192.0.2.0/24, ``x.to.test`` never answers, nor do the
``exists:%{l}.%{d}`` names of ``lp.to.test``'s record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import Milter
import pytest
from Milter.testctx import TestCtx as MilterTestCtx

from smtpauth_milter.core.networks import IPAddress, NetworkSet
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.core.spf import SpfAnswer
from smtpauth_milter.daemon.metrics import Metrics
from smtpauth_milter.daemon.milter import SmtpAuthMilter
from smtpauth_milter.daemon.refresh import SnapshotCache
from smtpauth_milter.lookups.spf import DEADLINE_MARGIN, SpfChecks
from smtpauth_milter.lookups.spfdns import SpfEvaluator
from tests.harness.dnsserver import Blackhole, DnsServer
from tests.support.fixedsource import FixedSource

AUTHORISED = "192.0.2.10"
OUTSIDER = "198.51.100.9"
TIMEOUT = 1.0


def snapshot(resolver: str, **domain: str) -> Snapshot:
    values = {"require-auth-local": "on", "spf-exempt": "on"}
    values |= {k.replace("_", "-"): v for k, v in domain.items()}
    local = dict.fromkeys(("ip4.spf.test", "x.to.test", "spf.test", "lp.to.test"), values)
    glob = {"dns-resolver": resolver, "spf-timeout": str(TIMEOUT)}
    return Snapshot.build(glob, local, NetworkSet.of(()), (), serial=1)


class Calls:
    """The lookups layer's observer: what it was asked, and how it went."""

    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def __call__(self, source: str, outcome: str, seconds: float) -> None:
        self.outcomes.append(outcome)


Start = Callable[..., tuple[MilterTestCtx, Calls]]


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Start]:
    monkeypatch.setattr(MilterTestCtx, "default_opts", list(MilterTestCtx.default_opts))
    checks: list[SpfChecks] = []

    def start(
        snap: Snapshot, ip: str, metrics: Metrics | None = None
    ) -> tuple[MilterTestCtx, Calls]:
        cache = SnapshotCache(FixedSource(snap), max_stale=300)
        cache.refresh()
        calls = Calls()
        spf = SpfChecks(observe=calls)
        checks.append(spf)
        monkeypatch.setattr(Milter, "factory", lambda: SmtpAuthMilter(cache, spf, metrics))
        ctx = MilterTestCtx()
        ctx._opts = list(MilterTestCtx.default_opts)
        assert ctx._connect(ip=ip) == Milter.CONTINUE
        return ctx, calls

    yield start
    for spf in checks:
        spf.stop()


def test_spf_pass_continues_and_is_looked_up_once_per_message(
    session: Start, dns_server: DnsServer, caplog: pytest.LogCaptureFixture
) -> None:
    ctx, calls = session(snapshot(dns_server.address), AUTHORISED)
    with caplog.at_level(logging.INFO, logger="smtpauth_milter"):
        assert ctx._envfrom("<alice@ip4.spf.test>") == Milter.CONTINUE
        assert ctx._envrcpt("<x@remote.test>") == Milter.CONTINUE
        assert ctx._envrcpt("<y@remote.test>") == Milter.CONTINUE
    assert calls.outcomes == ["answer"]  # the second recipient reuses the message's result
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert all(" rule=spf-pass " in line and line.endswith(" spf=pass") for line in lines)

    assert ctx._envfrom("<alice@ip4.spf.test>") == Milter.CONTINUE  # next message
    assert ctx._envrcpt("<x@remote.test>") == Milter.CONTINUE
    assert calls.outcomes == ["answer", "hit"]  # the cache answered


def test_spf_fail_keeps_the_refusal(session: Start, dns_server: DnsServer) -> None:
    ctx, _ = session(snapshot(dns_server.address), OUTSIDER)
    ctx._envfrom("<alice@ip4.spf.test>")
    assert ctx._envrcpt("<x@remote.test>") == Milter.REJECT
    assert ctx._reply == ("530", "5.7.0", "Authentication required")


def test_no_lookup_when_spf_cannot_change_the_verdict(
    session: Start, dns_server: DnsServer, caplog: pytest.LogCaptureFixture
) -> None:
    ctx, calls = session(snapshot(dns_server.address, spf_exempt="off"), AUTHORISED)
    with caplog.at_level(logging.INFO, logger="smtpauth_milter"):
        ctx._envfrom("<alice@ip4.spf.test>")
        assert ctx._envrcpt("<x@remote.test>") == Milter.REJECT
        ctx._envfrom("<postmaster@ip4.spf.test>")  # role sender: spf-exempt-role is off
        assert ctx._envrcpt("<x@remote.test>") == Milter.REJECT
        ctx._envfrom("<alice@remote.test>")
        assert ctx._envrcpt("<x@remote.test>") == Milter.CONTINUE
    assert calls.outcomes == []
    assert not any("spf=" in r.getMessage() for r in caplog.records)


def test_a_dns_server_that_never_answers_tempfails_within_the_bound(
    session: Start, blackhole: Blackhole
) -> None:
    metrics = Metrics()
    ctx, calls = session(snapshot(blackhole.address), AUTHORISED, metrics)
    ctx._envfrom("<alice@ip4.spf.test>")
    started = time.monotonic()
    assert ctx._envrcpt("<x@remote.test>") == Milter.TEMPFAIL
    # the libmilter thread waited spf-timeout plus the margin at most (plus a loaded machine)
    assert time.monotonic() - started < TIMEOUT + DEADLINE_MARGIN + 1.0
    assert ctx._reply == ("451", "4.3.0", "Temporary policy failure, try again later")
    assert calls.outcomes in (["answer"], ["timeout"])
    assert metrics.registry.get_sample_value("smtpauth_milter_spf_timeouts_total") == 1
    assert (
        metrics.registry.get_sample_value(
            "smtpauth_milter_spf_results_total", {"result": "temperror"}
        )
        == 1
    )


def test_a_name_that_never_answers_tempfails_and_is_not_cached(
    session: Start, dns_server: DnsServer
) -> None:
    ctx, calls = session(snapshot(dns_server.address), AUTHORISED)
    for _ in range(2):
        ctx._envfrom("<alice@x.to.test>")
        assert ctx._envrcpt("<x@remote.test>") == Milter.TEMPFAIL
    assert "hit" not in calls.outcomes
    assert len(calls.outcomes) == 2


def test_an_spf_library_that_cannot_be_loaded_tempfails_and_is_tried_again(
    session: Start, dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyspf is imported by the first check, on the lookup pool: a broken install is
    that check's temperror (a 4xx), not a crash or a wait on the libmilter thread."""
    made: list[str] = []

    def broken(resolver: str, timeout: float, system: object) -> None:
        made.append(resolver)
        raise ImportError("No module named 'spf'")

    monkeypatch.setattr("smtpauth_milter.lookups.spf.make_evaluator", broken)
    ctx, calls = session(snapshot(dns_server.address), AUTHORISED)
    for _ in range(2):
        ctx._envfrom("<alice@ip4.spf.test>")
        assert ctx._envrcpt("<x@remote.test>") == Milter.TEMPFAIL
        assert ctx._reply == ("451", "4.3.0", "Temporary policy failure, try again later")
    assert calls.outcomes == ["error", "error"]
    assert made == [dns_server.address] * 2


def test_a_slow_macro_domain_tempfails_its_flood_and_another_domain_passes_in_time(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21, item 7 through the adapter: 80 sessions of senders that vary the local
    part of ``lp.to.test`` (each check its whole spf-timeout) get 451; meanwhile an
    SPF-exempt sender of ``ip4.spf.test`` gets its answer (continue) in time."""
    monkeypatch.setattr(MilterTestCtx, "default_opts", list(MilterTestCtx.default_opts))
    slow_started = threading.Event()
    evaluate = SpfEvaluator.evaluate

    def watched(evaluator: SpfEvaluator, client: IPAddress, sender: str) -> SpfAnswer:
        if sender.endswith("@lp.to.test"):
            slow_started.set()
        return evaluate(evaluator, client, sender)

    monkeypatch.setattr(SpfEvaluator, "evaluate", watched)
    cache = SnapshotCache(FixedSource(snapshot(dns_server.address)), max_stale=300)
    cache.refresh()
    spf = SpfChecks()
    monkeypatch.setattr(Milter, "factory", lambda: SmtpAuthMilter(cache, spf, None))

    def connected() -> MilterTestCtx:
        ctx = MilterTestCtx()
        ctx._opts = list(MilterTestCtx.default_opts)
        assert ctx._connect(ip=AUTHORISED) == Milter.CONTINUE
        return ctx

    replies: list[tuple[int, object]] = []

    def attacker(ctx: MilterTestCtx, number: int) -> None:
        ctx._envfrom(f"<u{number}@lp.to.test>")
        replies.append((ctx._envrcpt("<x@remote.test>"), ctx._reply))

    flood = [threading.Thread(target=attacker, args=(connected(), n)) for n in range(80)]
    try:
        for thread in flood:
            thread.start()
        assert slow_started.wait(5)
        ctx = connected()
        began = time.monotonic()
        ctx._envfrom("<alice@ip4.spf.test>")
        assert ctx._envrcpt("<x@remote.test>") == Milter.CONTINUE
        assert time.monotonic() - began < TIMEOUT
        for thread in flood:
            thread.join()
    finally:
        spf.stop()
    tempfail = (Milter.TEMPFAIL, ("451", "4.3.0", "Temporary policy failure, try again later"))
    assert replies == [tempfail] * 80
