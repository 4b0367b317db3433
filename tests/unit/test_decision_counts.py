"""The Dashboard's counting in each milter: keys per hour, rule, action and domain, refused
logins and clients, bounded memory, give-back after an outage (daemon/decisions.py)."""

from __future__ import annotations

import threading

import pytest

from smtpauth_milter.core.policy import Action, Rule, Verdict
from smtpauth_milter.core.replies import Reply
from smtpauth_milter.daemon import decisions
from smtpauth_milter.daemon.decisions import OTHERS, DecisionCounts
from tests.support.clock import Clock

T0 = 1_800_000_000.0  # an hour boundary: 500000 * 3600
HOUR0 = int(T0) // 3600
REFUSED = Verdict(Action.REJECT, Rule.SENDER_MISMATCH, Reply.parse("553 5.7.1 no"), "example.com")
ACCEPTED = Verdict(Action.CONTINUE, Rule.AUTHENTICATED, None, "example.com")
NOBODY = Verdict(Action.CONTINUE, Rule.NO_SETTINGS)


def test_counts_per_hour_rule_action_and_domain_and_the_refused_logins_and_clients() -> None:
    clock = Clock(T0)
    counts = DecisionCounts(clock)
    counts.count(ACCEPTED, "alice@example.com", "203.0.113.9")
    counts.count(ACCEPTED, "alice@example.com", "203.0.113.9")
    counts.count(REFUSED, "mallory@example.com", "198.51.100.7")
    counts.count(NOBODY, None, None)
    clock.now += 3600
    counts.count(REFUSED, None, "198.51.100.7")
    taken = counts.take()
    assert taken.decisions == {
        (HOUR0, "authenticated", "continue", "example.com"): 2,
        (HOUR0, "sender-mismatch", "reject", "example.com"): 1,
        (HOUR0, "no-settings", "continue", ""): 1,
        (HOUR0 + 1, "sender-mismatch", "reject", "example.com"): 1,
    }
    assert taken.refused == {
        (HOUR0, "login", "mallory@example.com", "example.com"): 1,
        (HOUR0, "client", "198.51.100.7", "example.com"): 1,
        (HOUR0 + 1, "client", "198.51.100.7", "example.com"): 1,
    }
    assert not counts.take(), "taken once"


def test_refused_keys_are_bounded_the_rest_counted_as_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(decisions, "MAX_REFUSED", 4)
    counts = DecisionCounts(Clock(T0))
    for i in range(10):
        counts.count(REFUSED, f"u{i}@example.com", None)
    refused = counts.take().refused
    assert len(refused) == 5
    assert refused[HOUR0, "login", OTHERS, "example.com"] == 6
    assert sum(refused.values()) == 10


def test_give_back_adds_again_but_drops_hours_the_store_would_prune() -> None:
    clock = Clock(T0)
    counts = DecisionCounts(clock)
    counts.count(REFUSED, "mallory@example.com", None)
    first = counts.take()
    clock.now += 3600
    counts.count(REFUSED, "mallory@example.com", None)
    counts.give_back(first)
    taken = counts.take()
    assert taken.decisions[HOUR0, "sender-mismatch", "reject", "example.com"] == 1
    assert taken.decisions[HOUR0 + 1, "sender-mismatch", "reject", "example.com"] == 1
    counts.give_back(taken)
    clock.now += 48 * 3600
    counts.give_back(counts.take())
    assert set(counts.take().decisions) == {(HOUR0 + 1, "sender-mismatch", "reject", "example.com")}


def test_counting_from_many_threads_loses_nothing() -> None:
    counts = DecisionCounts(Clock(T0))

    def work() -> None:
        for _ in range(2000):
            counts.count(ACCEPTED, "alice@example.com", None)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counts.take().decisions == {(HOUR0, "authenticated", "continue", "example.com"): 8000}
