"""Two milters' login limiters sharing one store through their login-sync threads' cycles:
one count for the site, freezes spread, unfreeze, exemptions, an outage
(docs/policy.md#one-count-for-the-whole-site)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpauth_milter.core.policy import Action, Request, Rule, Verdict, decide
from smtpauth_milter.daemon.logins import LoginLimiter
from smtpauth_milter.daemon.loginsync import LoginSync
from smtpauth_milter.daemon.refresh import SnapshotCache
from smtpauth_milter.store import audit, editing, loginedit
from smtpauth_milter.store.engine import Store
from tests.support.clock import Clock

T0 = 1_800_000_000.0


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store(db_url)
    with opened.write() as session:
        editing.add_domains(session, ["example.com"])
        editing.set_setting(session, "login-max-messages", "5/1h")
        editing.set_setting(session, "login-limit-action", "freeze")
    yield opened
    opened.dispose()


class Milter:
    """One milter: its limiter, its snapshot cache and its login-sync cycle."""

    def __init__(self, store: Store, clock: Clock, name: str) -> None:
        self.limiter = LoginLimiter(f"milter@{name}", clock)
        self.cache = SnapshotCache(store, max_stale=300)
        self.cache.refresh()
        self.sync = LoginSync(self.limiter, store, clock)

    def send(self, login: str = "alice@example.com") -> Verdict:
        snapshot = self.cache.current()
        request = Request(ipaddress.ip_address("203.0.113.9"), login, f"<{login}>")
        verdict = decide(snapshot, request, "<x@remote.test>")
        return self.limiter.apply(snapshot, request, verdict, True)


def test_two_milters_share_one_count_and_one_freeze(store: Store) -> None:
    clock = Clock(T0)
    mx1, mx2 = Milter(store, clock, "mx1"), Milter(store, clock, "mx2")
    for _ in range(3):
        assert mx1.send().action is Action.CONTINUE
    for _ in range(2):
        assert mx2.send().action is Action.CONTINUE
    assert mx1.sync.cycle() and mx2.sync.cycle() and mx1.sync.cycle()
    over = mx2.send()  # the sixth in the hour, site-wide
    assert (over.action, over.rule) == (Action.REJECT, Rule.LOGIN_MAX_MESSAGES)
    assert mx2.sync.cycle() and mx1.sync.cycle()
    assert mx1.send().rule is Rule.LOGIN_FROZEN, "mx1 learnt the freeze at its next exchange"
    with store.write() as session:
        audit.begin(session, audit.Actor.now("login unfreeze alice@example.com"))
        was = loginedit.unfreeze(session, "alice@example.com", "root", clock.now)
        loginedit.record_unfreeze(session, "alice@example.com", was)
    assert mx1.sync.cycle() and mx2.sync.cycle()
    assert mx1.send().action is Action.CONTINUE
    assert mx2.send().action is Action.CONTINUE


def test_a_started_milter_knows_the_stored_freezes_before_its_first_session(
    store: Store,
) -> None:
    """A restart must not open a window (one exchange interval) for a frozen login."""
    clock = Clock(T0)
    with store.write() as session:
        loginedit.freeze(session, "alice@example.com", "test", "root", clock.now)
    restarted = Milter(store, clock, "mx")
    restarted.sync.start(interval=3600)  # the thread's next exchange is an hour away
    try:
        assert restarted.send().rule is Rule.LOGIN_FROZEN
    finally:
        restarted.sync.stop()


def test_exemptions_reach_the_milter_with_the_next_snapshot(store: Store) -> None:
    clock = Clock(T0)
    mx = Milter(store, clock, "mx")
    with store.write() as session:
        loginedit.exempt(session, "Alice@example.com", "relay")
    mx.cache.refresh()
    for _ in range(10):
        assert mx.send().action is Action.CONTINUE
    assert mx.limiter.take().counts == {}


def test_an_outage_keeps_counting_and_keeps_freezes(tmp_path: Path, sqlite_url: str) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    store = Store(sqlite_url)
    store.create()
    with store.write() as session:
        editing.add_domains(session, ["example.com"])
        editing.set_setting(session, "login-max-messages", "3/1h")
    clock = Clock(T0)
    mx = Milter(store, clock, "mx")
    with store.write() as session:
        loginedit.freeze(session, "frozen@example.com", "test", "root", clock.now)
    assert mx.sync.cycle()
    path.rename(tmp_path / "away.sqlite")  # the store is gone
    try:
        for _ in range(3):
            assert mx.send().action is Action.CONTINUE
        assert not mx.sync.cycle()
        clock.now += 60
        assert mx.send().action is Action.TEMPFAIL, "counted in memory meanwhile"
        assert mx.send("bob@example.com").action is Action.CONTINUE, "nobody else held back"
        assert mx.send("frozen@example.com").rule is Rule.LOGIN_FROZEN
    finally:
        (tmp_path / "away.sqlite").rename(path)
    assert mx.sync.cycle(), "the kept batch is written when the store is back"
    with store.read() as session:
        totals = loginedit.counts(
            session, "alice@example.com", {"login-max-messages": 3600}, clock.now
        )
    assert totals.counts == {"login-max-messages": 3}, "the tempfailed fourth is not counted"
    store.dispose()


def test_the_overshoot_stays_within_the_documented_bound(store: Store) -> None:
    """docs/policy.md#one-count-for-the-whole-site: H milters, each exchanging once a second
    (out of step), a login sending r messages a second through each: past the limit at most
    (H - 1) x 2 s x r more are accepted."""
    with store.write() as session:
        editing.set_setting(session, "login-max-messages", "50/1h")
        editing.set_setting(session, "login-limit-action", "tempfail")
    clock = Clock(T0)
    hosts, rate, limit = 3, 2, 50
    milters = [Milter(store, clock, f"mx{n}") for n in range(hosts)]
    accepted = 0
    for tick in range(600):  # 60 s in steps of 0.1 s
        clock.now = T0 + tick / 10
        for n, mx in enumerate(milters):
            if tick % 10 == (n * 3) % 10:  # each milter's exchange, a third of a second apart
                assert mx.sync.cycle()
            if tick % (10 // rate) == n % (10 // rate):  # r messages a second, each milter
                accepted += mx.send().action is Action.CONTINUE
    assert limit <= accepted <= limit + (hosts - 1) * 2 * rate, accepted


def test_a_login_coming_back_after_each_pause_stays_within_the_bound(store: Store) -> None:
    """Each exchange reads back only the logins of its batch: a login that comes to a milter
    in short bursts, more than 10 s apart (its site-wide count there stale each time), must
    not get a burst through on that milter's own count at every return once the site-wide
    count is past the limit (docs/policy.md#one-count-for-the-whole-site)."""
    with store.write() as session:
        editing.set_setting(session, "login-max-messages", "20/1h")
        editing.set_setting(session, "login-limit-action", "tempfail")
    clock = Clock(T0)
    steady, bursty = Milter(store, clock, "mx1"), Milter(store, clock, "mx2")
    rate, limit, accepted = 4, 20, 0
    for tick in range(1800):  # 180 s in steps of 0.1 s
        clock.now = T0 + tick / 10
        if tick % 10 == 0:
            assert steady.sync.cycle()
        if tick % 10 == 5:
            assert bursty.sync.cycle()
        if tick % (10 // rate) == 0:  # 4 messages a second through the steady one
            accepted += steady.send().action is Action.CONTINUE
        if tick % 120 in (7, 9):  # two messages through the other one every 12 s
            accepted += bursty.send().action is Action.CONTINUE
    assert limit <= accepted <= limit + 2 * rate, accepted
