"""The lookup layer: bounded TTL cache, bounded worker pool, cached lookups."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import pytest

from smtpauth_milter.lookups.cache import Hit, TtlCache
from smtpauth_milter.lookups.cached import CachedLookup
from smtpauth_milter.lookups.runner import LookupFailed, LookupRunner
from tests.support.clock import Clock


def test_cache_answers_until_the_ttl_runs_out() -> None:
    clock = Clock()
    cache: TtlCache[str, frozenset[str] | None] = TtlCache(10, clock)
    cache.put("a", frozenset({"alice"}), ttl=60)
    cache.put("b", None, ttl=30)  # a negative answer is cached too
    assert cache.get("a") == Hit(frozenset({"alice"}))
    assert cache.get("b") == Hit(None)
    clock.now += 30
    assert cache.get("b") is None
    assert cache.get("a") == Hit(frozenset({"alice"}))
    clock.now += 30
    assert cache.get("a") is None
    assert len(cache) == 0


def test_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    cache: TtlCache[int, int] = TtlCache(3, Clock())
    for key in (1, 2, 3):
        cache.put(key, key, ttl=60)
    assert cache.get(1) == Hit(1)  # 1 is now the most recently used
    cache.put(4, 4, ttl=60)
    assert cache.get(2) is None
    assert [cache.get(k) for k in (1, 3, 4)] == [Hit(1), Hit(3), Hit(4)]
    assert len(cache) == 3


def test_cache_keeps_nothing_for_a_ttl_of_zero() -> None:
    cache: TtlCache[str, int] = TtlCache(3, Clock())
    cache.put("a", 1, ttl=0)
    assert cache.get("a") is None
    with pytest.raises(ValueError, match="at least one"):
        TtlCache(0)


def test_runner_answers_and_passes_failures_on() -> None:
    runner = LookupRunner("test", workers=2, queue_size=4)
    try:
        assert runner.run("k", lambda: 42, deadline=5) == 42

        def broken() -> int:
            raise OSError("table gone")

        with pytest.raises(LookupFailed) as caught:
            runner.run("k2", broken, deadline=5)
        assert caught.value.reason == "error"
        assert "table gone" in str(caught.value)
    finally:
        runner.stop()


def test_runner_bounds_the_wait_of_the_caller() -> None:
    release = threading.Event()
    runner = LookupRunner("hung", workers=1, queue_size=1)
    try:
        started = time.monotonic()
        with pytest.raises(LookupFailed) as caught:
            runner.run("k", release.wait, deadline=0.2)
        waited = time.monotonic() - started
        assert caught.value.reason == "timeout"
        assert 0.2 <= waited < 2.0
    finally:
        release.set()
        runner.stop()


def test_runner_refuses_at_once_when_the_queue_is_full() -> None:
    release = threading.Event()
    runner = LookupRunner("slow", workers=1, queue_size=1)
    try:
        # one job runs on the only worker, one waits in the queue: the pool is full
        first = threading.Thread(target=lambda: _swallow(runner, "a", release.wait))
        first.start()
        _wait_until(lambda: runner._jobs.empty() and "a" in runner._in_flight)
        second = threading.Thread(target=lambda: _swallow(runner, "b", release.wait))
        second.start()
        _wait_until(lambda: runner._jobs.full())
        started = time.monotonic()
        with pytest.raises(LookupFailed) as caught:
            runner.run("c", lambda: 1, deadline=5)
        assert caught.value.reason == "overloaded"
        assert time.monotonic() - started < 1.0
        release.set()
        first.join(5)
        second.join(5)
    finally:
        release.set()
        runner.stop()


def test_runner_coalesces_callers_of_the_same_key() -> None:
    calls = []
    release = threading.Event()
    runner = LookupRunner("shared", workers=2, queue_size=4)

    def fetch() -> str:
        calls.append(1)
        release.wait(5)
        return "answer"

    answers: list[str] = []
    try:
        threads = [
            threading.Thread(target=lambda: answers.append(runner.run("same", fetch, 5)))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        _wait_until(lambda: len(calls) == 1)
        # every caller is waiting on the one future before the answer comes
        future = runner._in_flight["same"]
        _wait_until(lambda: len(future._condition._waiters) == 4)  # type: ignore[attr-defined]
        release.set()
        for thread in threads:
            thread.join(5)
        assert answers == ["answer"] * 4
        assert len(calls) == 1
    finally:
        release.set()
        runner.stop()


def test_cached_lookup_caches_answers_not_failures() -> None:
    clock = Clock()
    events: list[tuple[str, str]] = []
    answers = {"alice@example.com": (frozenset({"alice"}), 60.0)}
    down = {"now": False}

    def fetch(key: str) -> tuple[frozenset[str] | None, float]:
        if down["now"]:
            raise OSError("map unreadable")
        return answers.get(key, (None, 60.0))

    runner = LookupRunner("map", workers=1, queue_size=4)
    lookup: CachedLookup[str, frozenset[str] | None] = CachedLookup(
        "texthash:/x",
        fetch,
        runner=runner,
        cache=TtlCache(100, clock),
        deadline=5,
        observe=lambda source, outcome, _s: events.append((source, outcome)),
        clock=clock,
    )
    try:
        assert lookup.get("alice@example.com") == frozenset({"alice"})
        assert lookup.get("alice@example.com") == frozenset({"alice"})
        assert lookup.get("nobody@example.com") is None
        down["now"] = True
        assert lookup.get("alice@example.com") == frozenset({"alice"})  # still fresh
        with pytest.raises(LookupFailed):
            lookup.get("carol@example.com")
        clock.now += 61
        with pytest.raises(LookupFailed):
            lookup.get("alice@example.com")
        down["now"] = False
        assert lookup.get("alice@example.com") == frozenset({"alice"})  # recovers at once
        assert [o for _, o in events] == [
            "answer", "hit", "answer", "hit", "error", "error", "answer",
        ]  # fmt: skip
    finally:
        runner.stop()


def _swallow(runner: LookupRunner, key: str, fn: object) -> None:
    with contextlib.suppress(LookupFailed):
        runner.run(key, fn, deadline=10)  # type: ignore[arg-type]


def _wait_until(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


def test_post_runs_on_a_worker_and_never_blocks_even_when_the_queue_is_full() -> None:
    release = threading.Event()
    ran: list[str] = []
    runner = LookupRunner("post", workers=1, queue_size=1)
    try:
        first = threading.Thread(target=lambda: _swallow(runner, "a", release.wait))
        first.start()
        _wait_until(lambda: runner._jobs.empty() and "a" in runner._in_flight)
        runner.post(lambda: ran.append(threading.current_thread().name))  # fills the queue
        started = time.monotonic()
        runner.post(lambda: ran.append("deferred " + threading.current_thread().name))
        runner.post(lambda: 1 / 0)  # a failing posted job harms nothing
        assert time.monotonic() - started < 1.0 and ran == []
        release.set()
        _wait_until(lambda: len(ran) == 2)
        # the one worker runs what was kept right after its job, then the queue
        assert ran == ["deferred post-lookup-0", "post-lookup-0"]
        assert runner.run("after", lambda: 7, deadline=5) == 7  # the worker lives on
        first.join(5)
    finally:
        release.set()
        runner.stop()


def test_a_worker_stuck_past_its_deadline_is_replaced_so_the_pool_never_shrinks() -> None:
    """Both workers hang in lookups whose callers gave up: a third lookup still gets a
    worker at once (on main it queued behind the hung ones and timed out)."""
    release = threading.Event()
    runner = LookupRunner("stuck", workers=2, queue_size=4)
    try:
        for key in ("a", "b"):
            with pytest.raises(LookupFailed):
                runner.run(key, release.wait, deadline=0.2)
        started = time.monotonic()
        assert runner.run("c", lambda: 7, deadline=5) == 7
        assert time.monotonic() - started < 1.0
        assert runner.workers() == 2  # two new ones; the stuck ones are abandoned
        release.set()  # the abandoned threads end with their lookups
        _wait_until(
            lambda: sum(t.name.startswith("stuck-lookup") for t in threading.enumerate()) == 2
        )
    finally:
        release.set()
        runner.stop()


def test_a_lookup_that_failed_or_overran_is_never_joined() -> None:
    release = threading.Event()
    runner = LookupRunner("join", workers=2, queue_size=4)
    try:
        with pytest.raises(LookupFailed) as caught:
            runner.run("k", release.wait, deadline=0.2)
        assert caught.value.reason == "timeout"
        # the same key again: a lookup of its own, not the stuck one
        assert runner.run("k", lambda: "fresh", deadline=5) == "fresh"
        assert "k" not in runner._in_flight
    finally:
        release.set()
        runner.stop()


def test_a_lookup_still_queued_when_its_caller_gave_up_is_not_run() -> None:
    release = threading.Event()
    ran: list[str] = []
    runner = LookupRunner("queued", workers=1, queue_size=4)
    try:
        with pytest.raises(LookupFailed):
            runner.run("a", release.wait, deadline=0.2)  # abandoned: a new worker starts
        hold = threading.Event()
        blocker = threading.Thread(target=lambda: _swallow(runner, "b", hold.wait))
        blocker.start()
        _wait_until(lambda: "b" in runner._in_flight and runner._jobs.empty())
        with pytest.raises(LookupFailed):
            runner.run("c", lambda: ran.append("c"), deadline=0.1)  # queued behind b
        hold.set()
        blocker.join(5)
        assert runner.run("d", lambda: "d", deadline=5) == "d"
        assert ran == []
    finally:
        release.set()
        runner.stop()


def test_cached_lookups_of_two_configurations_never_share_a_lookup_under_way() -> None:
    """The general form of issue 21 item 2 (maps and SPF alike): the same source name and
    key, a new configuration (a new CachedLookup) while the old one's lookup is stuck:
    the new one asks its own fetch (on main it joined the old lookup and got its answer)."""
    release = threading.Event()
    runner = LookupRunner("spf", workers=2, queue_size=4)

    def old_fetch(key: str) -> tuple[str, float]:
        release.wait(5)
        return "old resolver's answer", 60.0

    def lookup(fetch: Callable[[str], tuple[str, float]]) -> CachedLookup[str, str]:
        return CachedLookup("spf", fetch, runner=runner, cache=TtlCache(10), deadline=5)

    old, new = lookup(old_fetch), lookup(lambda key: ("new resolver's answer", 60.0))
    try:
        stuck = threading.Thread(target=old.get, args=("192.0.2.1 a@example.com",))
        stuck.start()
        _wait_until(lambda: bool(runner._in_flight))
        assert new.get("192.0.2.1 a@example.com") == "new resolver's answer"
        release.set()
        stuck.join(5)
        assert new.get("192.0.2.1 a@example.com") == "new resolver's answer"  # its own cache
    finally:
        release.set()
        runner.stop()
