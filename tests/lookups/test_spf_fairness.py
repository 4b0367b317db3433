"""One slow sender domain cannot starve the SPF checks of the others (issue 21, item 7).

``lp.to.test`` (tests/harness/dnsserver.py) has the record ``exists:%{l}.%{d}``
and every name below it is dropped: each local part costs a check its whole
``spf-timeout`` and a new one cannot come from the cache.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator
from typing import TypeVar

import pytest

from smtpauth_milter.core.networks import IPAddress, parse_ip
from smtpauth_milter.core.spf import SpfAnswer, SpfResult
from smtpauth_milter.lookups.runner import LookupFailed, LookupRunner
from smtpauth_milter.lookups.spf import DOMAIN_RUNNING, SpfChecks
from smtpauth_milter.lookups.spfdns import SpfEvaluator
from smtpauth_milter.lookups.spfslots import DomainSlots
from tests.harness.dnsserver import DnsServer

TIMEOUT = 1.0
FLOOD = 80  # more than the pool's 8 workers and 64 queued checks together
SLOW = "lp.to.test"
T = TypeVar("T")


def ip(text: str) -> IPAddress:
    address = parse_ip(text)
    assert address is not None
    return address


class Running:
    """Counts evaluations of the slow domain running at once (the real evaluator, wrapped)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.started = 0

    def wrap(self, evaluate: object) -> object:
        assert callable(evaluate)

        def counted(evaluator: SpfEvaluator, client: IPAddress, sender: str) -> SpfAnswer:
            slow = sender.endswith("@" + SLOW)
            if slow:
                with self._lock:
                    self.now += 1
                    self.started += 1
                    self.most = max(self.most, self.now)
            try:
                answer: SpfAnswer = evaluate(evaluator, client, sender)
                return answer
            finally:
                if slow:
                    with self._lock:
                        self.now -= 1

        return counted


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> Running:
    counter = Running()
    monkeypatch.setattr(SpfEvaluator, "evaluate", counter.wrap(SpfEvaluator.evaluate))
    return counter


@pytest.fixture
def checks() -> Iterator[SpfChecks]:
    spf = SpfChecks()
    yield spf
    spf.stop()


def test_a_slow_macro_domain_leaves_the_other_domains_their_answers(
    checks: SpfChecks, running: Running, dns_server: DnsServer
) -> None:
    client = ip("192.0.2.10")
    entered = threading.Semaphore(0)
    flood: list[SpfAnswer] = []

    def attacker(number: int) -> None:
        entered.release()
        flood.append(checks.check(dns_server.address, TIMEOUT, client, f"<u{number}@{SLOW}>"))

    threads = [threading.Thread(target=attacker, args=(n,)) for n in range(FLOOD)]
    for thread in threads:
        thread.start()
    for _ in threads:
        assert entered.acquire(timeout=5)
    deadline = time.monotonic() + 5
    while running.started < DOMAIN_RUNNING and time.monotonic() < deadline:
        time.sleep(0.005)  # polling, with a deadline, for the slow checks to be running
    assert running.started >= DOMAIN_RUNNING

    began = time.monotonic()
    answer = checks.check(dns_server.address, TIMEOUT, client, "<alice@ip4.spf.test>")
    waited = time.monotonic() - began
    assert answer.result is SpfResult.PASS, answer
    assert waited < TIMEOUT  # in time: well within its own spf-timeout

    for thread in threads:
        thread.join()
    assert {a.result for a in flood} == {SpfResult.TEMPERROR}  # 4xx, never an accept
    assert running.most <= DOMAIN_RUNNING


def test_a_domain_gets_at_most_its_turns_and_queue() -> None:
    slots = DomainSlots(running=2, waiting=1)
    slots.acquire("a.test", 0)
    slots.acquire("a.test", 0)
    slots.acquire("b.test", 0)  # another domain has turns of its own
    with pytest.raises(LookupFailed) as refused:
        slots.acquire("a.test", 0)  # no turn, and no wait allowed
    assert refused.value.reason == "overloaded"

    waited: list[str] = []
    queued = threading.Thread(target=lambda: waited.append(_turn(slots, "a.test", 5)))
    queued.start()
    deadline = time.monotonic() + 5
    while slots.busy("a.test") != (2, 1) and time.monotonic() < deadline:
        time.sleep(0.005)
    assert slots.busy("a.test") == (2, 1)
    assert _turn(slots, "a.test", 5) == "overloaded"  # the queue of one is full
    slots.release("a.test")  # the queued check gets the turn
    queued.join(5)
    assert waited == ["turn"]
    assert _turn(slots, "a.test", 0.05) == "timeout"  # nobody ends a turn in time
    for domain in ("a.test", "a.test", "b.test"):
        slots.release(domain)
    assert slots.busy("a.test") == slots.busy("b.test") == (0, 0)


def _turn(slots: DomainSlots, domain: str, timeout: float) -> str:
    try:
        slots.acquire(domain, timeout)
    except LookupFailed as exc:
        return exc.reason
    return "turn"


class DropsTheFirst(LookupRunner):
    """A runner that gives up on its first ``drops`` jobs before they run, as a runner
    may drop a queued job whose caller stopped waiting."""

    def __init__(self, drops: int) -> None:
        super().__init__("spf", 8, 64)
        self.drops = drops

    def run(self, key: Hashable, fn: Callable[[], T], deadline: float) -> T:
        if self.drops:
            self.drops -= 1
            raise LookupFailed("timeout", "spf: no answer in time")
        return super().run(key, fn, deadline)


def test_a_job_the_runner_drops_leaves_no_turn_or_check_in_flight_behind(
    dns_server: DnsServer,
) -> None:
    checks = SpfChecks(runner=DropsTheFirst(DOMAIN_RUNNING))
    try:
        for number in range(DOMAIN_RUNNING):
            sender = f"<u{number}@ip4.spf.test>"
            dropped = checks.check(dns_server.address, TIMEOUT, ip("192.0.2.10"), sender)
            assert (dropped.result, dropped.timed_out) == (SpfResult.TEMPERROR, True)
        began = time.monotonic()
        answer = checks.check(dns_server.address, TIMEOUT, ip("192.0.2.10"), "<u0@ip4.spf.test>")
        assert answer.result is SpfResult.PASS  # neither joined nor kept waiting for a turn
        assert time.monotonic() - began < TIMEOUT
    finally:
        checks.stop()
