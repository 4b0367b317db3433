"""The in-memory snapshot: propagation, staleness and recovery."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smtpauth_milter.core.networks import parse_ip
from smtpauth_milter.core.policy import Action, Request, decide
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.daemon.refresh import SnapshotCache
from smtpauth_milter.store import editing
from smtpauth_milter.store.engine import Store
from tests.conftest import CliRunner
from tests.support.clock import Clock


class FlakySource:
    """A real store whose reads can be made to fail on demand."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.down = False
        self.loads = 0

    def prepare(self) -> None:
        self._check()
        self.store.prepare()

    def serial(self) -> int:
        self._check()
        return self.store.serial()

    def load_snapshot(self) -> Snapshot:
        self._check()
        self.loads += 1
        return self.store.load_snapshot()

    def _check(self) -> None:
        if self.down:
            raise ConnectionError("store is down")


def _verdict(cache: SnapshotCache) -> Action:
    request = Request(parse_ip("203.0.113.5"), None, "<alice@example.com>")
    return decide(cache.current(), request, "<x@remote.test>").action


@pytest.fixture
def source(cli: CliRunner, db_url: str) -> Iterator[FlakySource]:
    cli("domain", "add", "example.com")
    cli("settings", "set", "require-auth-local", "on")
    store = Store(db_url)
    yield FlakySource(store)
    store.dispose()


def test_reloads_only_when_the_serial_moves(source: FlakySource, cli: CliRunner) -> None:
    cache = SnapshotCache(source, max_stale=300, clock=Clock())
    assert cache.refresh() and cache.refresh() and cache.refresh()
    assert source.loads == 1
    cli("settings", "set", "dry-run", "on")
    assert cache.refresh()
    assert source.loads == 2
    assert _verdict(cache) is Action.WOULD_REJECT


def test_each_new_snapshot_is_told_once_and_a_failing_listener_is_no_outage(
    source: FlakySource, cli: CliRunner, caplog: pytest.LogCaptureFixture
) -> None:
    """The milter hands new settings to its map lookups here (probed before any message
    needs them): told at the first load and when the serial moves, never per poll; a
    listener's bug is one logged line and the snapshot still decides."""
    told: list[int] = []

    def listener(snapshot: Snapshot) -> None:
        told.append(snapshot.serial)
        if len(told) == 2:
            raise RuntimeError("a bug in the listener")

    cache = SnapshotCache(source, max_stale=300, clock=Clock(), on_snapshot=listener)
    assert cache.refresh() and cache.refresh()
    assert told == [cache.current().serial]
    cli("settings", "set", "dry-run", "on")
    with caplog.at_level(logging.WARNING, logger="smtpauth_milter"):
        assert cache.refresh()  # the listener raised: still a good poll
        assert cache.refresh()
    assert told == [told[0], cache.current().serial] and told[1] != told[0]
    assert _verdict(cache) is Action.WOULD_REJECT
    [line] = [r.getMessage() for r in caplog.records]
    assert line == "event=internal-error where=on-snapshot"
    assert "store-unreadable" not in caplog.text


def test_last_good_snapshot_until_max_stale_then_tempfail_then_recovery(
    source: FlakySource, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    cache = SnapshotCache(source, max_stale=30, clock=clock)
    caplog.set_level(logging.INFO, logger="smtpauth_milter")
    assert cache.refresh()
    source.down = True
    for _ in range(20):  # the refresh thread keeps polling; one warning, not twenty
        clock.now += 1
        assert not cache.refresh()
    assert _verdict(cache) is Action.REJECT, "within --max-stale the last good settings decide"
    warnings = [r for r in caplog.records if "store-unreadable" in r.getMessage()]
    assert len(warnings) == 1
    clock.now += 10.5
    assert not cache.refresh()
    assert _verdict(cache) is Action.TEMPFAIL
    assert not cache.current().trusted
    source.down = False
    assert cache.refresh()
    assert _verdict(cache) is Action.REJECT
    assert any("store-recovered" in r.getMessage() for r in caplog.records)


def test_a_store_down_at_start_tempfails_until_it_is_back(source: FlakySource) -> None:
    source.down = True
    cache = SnapshotCache(source, max_stale=300, clock=Clock())
    assert not cache.refresh()
    assert _verdict(cache) is Action.TEMPFAIL
    source.down = False
    assert cache.refresh()
    assert _verdict(cache) is Action.REJECT


def test_stale_tempfail_keeps_the_configured_reply(source: FlakySource, cli: CliRunner) -> None:
    cli("settings", "set", "tempfail-reply", "421 4.3.5 Policy store offline")
    clock = Clock()
    cache = SnapshotCache(source, max_stale=5, clock=clock)
    assert cache.refresh()
    source.down = True
    clock.now += 6
    request = Request(None, None, "<alice@example.com>")
    verdict = decide(cache.current(), request, "<x@remote.test>")
    assert verdict.action is Action.TEMPFAIL
    assert str(verdict.reply) == "421 4.3.5 Policy store offline"


def _wait_for(predicate: Callable[[], bool], deadline: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < deadline:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not true within {deadline}s")


def test_a_cli_change_reaches_a_running_cache_within_two_seconds(
    source: FlakySource, cli: CliRunner
) -> None:
    cache = SnapshotCache(source.store, max_stale=300)
    cache.start(interval=0.5)
    try:
        assert _verdict(cache) is Action.REJECT
        cli("settings", "set", "--domain", "example.com", "require-auth-local", "off")
        took = _wait_for(lambda: _verdict(cache) is Action.CONTINUE, deadline=2.0)
        assert took < 2.0
        cli("network", "add", "203.0.113.0/24")
        cli("settings", "unset", "--domain", "example.com", "require-auth-local")
        _wait_for(lambda: cache.current().networks.networks != (), deadline=2.0)
    finally:
        cache.stop()


def test_a_sqlite_file_that_disappears_is_a_store_outage(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    store.create()
    with store.write() as session:
        editing.add_domains(session, ["example.com"])
        editing.set_setting(session, "require-auth-local", "on")
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    clock = Clock()
    cache = SnapshotCache(store, max_stale=10, clock=clock)
    assert cache.refresh()
    moved = path.with_suffix(".away")
    path.rename(moved)
    store.dispose()
    try:
        clock.now += 11
        assert not cache.refresh()
        assert _verdict(cache) is Action.TEMPFAIL
        assert not path.exists(), "reading must not create an empty store in its place"
    finally:
        path.unlink(missing_ok=True)
        moved.rename(path)
        store.dispose()
    assert cache.refresh()
    assert _verdict(cache) is Action.REJECT
    store.dispose()


def test_a_snapshot_is_read_from_one_commit(db_url: str) -> None:
    """A load racing a writer must never mix two commits (a torn snapshot)."""
    reader, writer_store = Store(db_url), Store(db_url)
    reader.prepare()
    with writer_store.write() as session:
        editing.add_domains(session, ["example.com"])
    stop = threading.Event()

    def write_state(number: int) -> None:
        with writer_store.write() as session:
            editing.set_setting(session, "auth-required-reply", f"530 5.7.0 state {number}")
            editing.set_setting(
                session, "sender-mismatch-reply", f"553 5.7.1 state {number}", "example.com"
            )

    def writer() -> None:
        number = 0
        while not stop.is_set():
            number += 1
            write_state(number)

    write_state(0)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(150):
            snapshot = reader.load_snapshot()
            domain = snapshot.settings_for("example.com")
            assert domain is not None
            assert (
                snapshot.global_settings.auth_required_reply.text.split()[-1]
                == domain.sender_mismatch_reply.text.split()[-1]
            )
    finally:
        stop.set()
        thread.join()
        reader.dispose()
        writer_store.dispose()


def test_a_missing_store_tempfails_warns_and_recovers_once_created(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = Path(sqlite_url.removeprefix("sqlite:///"))
    store = Store(sqlite_url)
    clock = Clock()
    cache = SnapshotCache(store, max_stale=300, clock=clock)
    with caplog.at_level(logging.WARNING, logger="smtpauth_milter"):
        for _ in range(5):  # every poll fails; one warning line per WARN_EVERY
            assert not cache.refresh()
            clock.now += 1
        assert _verdict(cache) is Action.TEMPFAIL
        assert not path.exists() and not path.parent.exists()
        warnings = [r.getMessage() for r in caplog.records]
        assert warnings == [
            'event=store-unreadable state="no settings loaded yet: tempfailing" '
            f'error="no store at {path} (create it with `smtpauth-milter db init`)"'
        ]
        Store(sqlite_url).create()  # what `smtpauth-milter db init` does
        with store.write() as session:
            editing.add_domains(session, ["example.com"])
            editing.set_setting(session, "require-auth-local", "on")
        assert cache.refresh()
    assert _verdict(cache) is Action.REJECT
    assert "event=store-recovered" in caplog.records[-1].getMessage()
    store.dispose()


def test_a_store_without_local_domains_is_warned_about_every_ten_minutes(
    db_url: str, cli: CliRunner, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(db_url)
    clock = Clock()
    cache = SnapshotCache(store, max_stale=300, clock=clock)
    warning = (
        'event=no-local-domains state="nothing is checked: every message passes" '
        'fix="smtpauth-milter domain add YOUR.DOMAIN"'
    )

    def warned() -> int:
        return sum(r.getMessage() == warning for r in caplog.records)

    with caplog.at_level(logging.WARNING, logger="smtpauth_milter"):
        assert cache.refresh()
        assert warned() == 1, "at start"
        for _ in range(599):
            clock.now += 1
            assert cache.refresh()
        assert warned() == 1
        clock.now += 1
        assert cache.refresh()
        assert warned() == 2, "again after 10 minutes"
        cli("domain", "add", "example.com")
        clock.now += 600
        assert cache.refresh()
        assert warned() == 2, "not with a local domain"
        cli("domain", "remove", "example.com")
        assert cache.refresh()
        assert warned() == 3, "at once when the last domain goes"
    store.dispose()
