"""The login-sync thread's cycle flushes each milter's decision counts into the state store
in its one transaction; two milters' counts add up; old hours are pruned; an outage keeps
them for the next cycle (store/decisioncounts.py, daemon/loginsync.py)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from smtpauth_milter.core.policy import Action, Rule, Verdict
from smtpauth_milter.core.replies import Reply
from smtpauth_milter.daemon.decisions import DecisionCounts
from smtpauth_milter.daemon.logins import LoginLimiter
from smtpauth_milter.daemon.loginsync import LoginSync
from smtpauth_milter.store import decisioncounts
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.loginstate import Batch
from smtpauth_milter.store.models import DecisionCount, LoginCount, RefusedCount
from tests.support.clock import Clock

T0 = 1_800_000_000.0
REFUSED = Verdict(Action.REJECT, Rule.SENDER_MISMATCH, Reply.parse("553 5.7.1 no"), "example.com")
TEMPFAILED = Verdict(Action.TEMPFAIL, Rule.LOGIN_MAX_MESSAGES, Reply.parse("452 4.7.1 x"), "x.org")
ACCEPTED = Verdict(Action.CONTINUE, Rule.AUTHENTICATED, None, "example.com")


def _milter(store: Store, clock: Clock, name: str) -> tuple[DecisionCounts, LoginSync]:
    counts = DecisionCounts(clock)
    return counts, LoginSync(LoginLimiter(name, clock), store, clock, decisions=counts)


def _rows(store: Store) -> int:
    with store.read() as session:
        return sum(
            session.scalar(select(func.count()).select_from(m)) or 0
            for m in (DecisionCount, RefusedCount)
        )


def test_two_milters_flush_into_one_summary_and_old_hours_are_pruned(db_url: str) -> None:
    store = Store(db_url)
    store.create()
    clock = Clock(T0)
    (c1, mx1), (c2, mx2) = _milter(store, clock, "mx1"), _milter(store, clock, "mx2")
    for _ in range(3):
        c1.count(ACCEPTED, "alice@example.com", "203.0.113.9")
    c1.count(REFUSED, "mallory@example.com", "198.51.100.7")
    c2.count(REFUSED, "mallory@example.com", "198.51.100.7")
    c2.count(TEMPFAILED, "bob@x.org", "192.0.2.1")
    assert mx1.cycle() and mx2.cycle()
    assert not c1.take() and not c2.take(), "flushed"
    with store.read() as session:
        everything = decisioncounts.summary(session, clock.now)
        mine = decisioncounts.summary(session, clock.now, domains=frozenset({"example.com"}))
    assert everything.by_rule == {
        "authenticated": {"continue": 3},
        "sender-mismatch": {"reject": 2},
        "login-max-messages": {"tempfail": 1},
    }
    assert everything.by_domain == {
        "example.com": {"continue": 3, "reject": 2},
        "x.org": {"tempfail": 1},
    }
    assert everything.top_logins == [("mallory@example.com", 2), ("bob@x.org", 1)]
    assert everything.top_clients == [("198.51.100.7", 2), ("192.0.2.1", 1)]
    assert "x.org" not in mine.by_domain and "login-max-messages" not in mine.by_rule
    assert mine.top_logins == [("mallory@example.com", 2)]
    clock.now += 25 * 3600
    with store.read() as session:
        assert decisioncounts.summary(session, clock.now).by_rule == {}, "the last 24 h only"
    assert _rows(store) == 7
    clock.now += 24 * 3600  # past 48 h: the next prune deletes them
    assert mx1.cycle()
    assert _rows(store) == 0
    store.dispose()


def test_an_outage_keeps_the_counts_for_the_next_cycle(tmp_path: Path, sqlite_url: str) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    store = Store(sqlite_url)
    store.create()
    clock = Clock(T0)
    counts, sync = _milter(store, clock, "mx")
    assert sync.cycle()
    path.rename(tmp_path / "away.sqlite")
    try:
        counts.count(REFUSED, "mallory@example.com", None)
        assert not sync.cycle()
    finally:
        (tmp_path / "away.sqlite").rename(path)
    assert sync.cycle()
    with store.read() as session:
        assert decisioncounts.summary(session, clock.now).by_rule == {
            "sender-mismatch": {"reject": 1}
        }
    store.dispose()


def test_a_store_that_refuses_the_counts_still_takes_the_login_counts(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A state role not yet granted the 0007 tables (here: the table is missing): the
    login counts and freezes are written, the decision counts wait in memory."""
    store = Store(sqlite_url)
    store.create()
    with store.write() as session:
        session.execute(text("DROP TABLE decision_count"))
    clock = Clock(T0)
    counts, limiter = DecisionCounts(clock), LoginLimiter("mx", clock)
    sync = LoginSync(limiter, store, clock, decisions=counts)
    counts.count(ACCEPTED, "alice@example.com", None)
    bucket = int(clock.now) // 60
    limiter.give_back(Batch(counts={("alice@example.com", "messages", 60, bucket): 1}), clock.now)
    with caplog.at_level(logging.WARNING, logger="smtpauth_milter"):
        assert sync.cycle(), "the login counts were written"
    assert "event=decision-counts-unwritable" in caplog.text
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(LoginCount)) == 1
    assert counts.take().decisions, "kept for the next cycle"
    store.dispose()
