"""A store outage seen by a running milter process, over its socket, and by its snapshot.

PostgreSQL is stopped for real (a private server, so the session's shared one
is untouched); a SQLite file is moved away or locked.  Until ``--max-stale``
the milter decides from its last good snapshot, then it tempfails every
checked recipient (never a 5xx, never a continue it would have refused), it
warns once when the outage starts and once when it starts tempfailing (not
per message), and it recovers by itself once the store is back.

The ``--max-stale`` bound is proven in real time once here, with a locked
SQLite file (the one outage where the refresh thread is stuck inside a read
while decisions go on), and through Postfix in
tests/integration/test_milter_lifecycle.py.  PostgreSQL stopped and SQLite
moved away are proven twice without waiting for the bound: a process rides out
the outage on its last good snapshot and recovers by itself (``--max-stale``
far away), and the same real failure turns into a tempfail once the injected
clock passes ``--max-stale`` (:class:`SnapshotCache` over the real store; for
SQLite moved away in test_refresh.py).
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.core.networks import parse_ip
from smtpauth_milter.core.policy import Action, Request, decide
from smtpauth_milter.daemon.config import clean_env
from smtpauth_milter.daemon.refresh import SnapshotCache
from smtpauth_milter.store.engine import Store
from tests.harness.milter import MilterProcess, MilterProcesses, console_script
from tests.harness.pgserver import PgServer
from tests.store.test_refresh import Clock
from tests.support.verdicts import CONTINUE, seconds_until, verdicts

MAX_STALE = 3.0
REFRESH = 0.2
MILTER_ARGS = ("--max-stale", str(MAX_STALE), "--refresh", str(REFRESH))
# The bound out of reach: the process keeps its last good snapshot for the whole test.
FAR_MAX_STALE_ARGS = ("--max-stale", "3600", "--refresh", str(REFRESH))
TEMPFAIL = "451 4.3.0 Temporary policy failure, try again later"
AUTH_REQUIRED = "530 5.7.0 Authentication required"

# name -> (session, verdict while the settings are known)
CASES: dict[str, tuple[dict[str, object], str]] = {
    "unauthenticated local sender": ({"sender": "alice@example.com"}, AUTH_REQUIRED),
    "authenticated local sender": ({"sender": "alice@example.com", "login": "alice"}, CONTINUE),
    "non-local sender": ({"sender": "bob@remote.test"}, CONTINUE),
    # Rule 1 (no settings) comes before rule 2 (trusted network), docs/policy.md:
    # without trustworthy settings even a trusted client is tempfailed.
    "trusted network": ({"sender": "alice@example.com", "client_addr": "192.0.2.10"}, CONTINUE),
}
KNOWN = {name: expected for name, (_, expected) in CASES.items()}
ALL_TEMPFAIL = dict.fromkeys(CASES, TEMPFAIL)


def probe(milter: MilterProcess) -> dict[str, str]:
    """The verdict of every case, one real session each."""
    return {
        name: verdicts(milter.socket, rcpts=["x@remote.test"], **kwargs)[0]  # type: ignore[arg-type]
        for name, (kwargs, _) in CASES.items()
    }


def seed(url: str) -> None:
    for args in (
        ["db", "init"],
        ["domain", "add", "example.com"],
        ["settings", "set", "require-auth-local", "on"],
        ["network", "add", "192.0.2.0/24"],
        # The probes send one login's mail as fast as they can, for minutes: far more
        # than the shipped per-login limits allow (docs/policy.md#stolen-logins).
        ["settings", "set", "login-max-messages", "off"],
        ["settings", "set", "login-max-recipients", "off"],
    ):
        assert run_cli(["--db", url, *args]) == 0


@pytest.fixture
def milters(tmp_path: Path) -> Iterator[MilterProcesses]:
    with MilterProcesses(tmp_path) as procs:
        yield procs


@pytest.fixture(scope="module")
def own_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """A PostgreSQL server of our own: these tests stop it."""
    server = PgServer(tmp_path_factory.mktemp("pg-outage"))
    server.start()
    yield server
    server.close()


def ride_out_an_outage(
    milter: MilterProcess, break_store: Callable[[], None], mend_store: Callable[[], None]
) -> dict[str, float]:
    """Break the store, check every phase over the socket, mend it; returns timings."""
    assert probe(milter) == KNOWN
    broken_at = time.monotonic()
    break_store()
    # The last good read was at most one refresh before break_store() began.
    stale_earliest = broken_at - REFRESH + MAX_STALE
    probes = 0
    while time.monotonic() < stale_earliest - 0.3:
        assert probe(milter) == KNOWN, "within --max-stale the last good snapshot decides"
        probes += 1
    assert probes >= 3

    def tempfailing() -> bool:
        seen = probe(milter)
        for name, verdict in seen.items():  # on the way: the old verdict or a tempfail, only
            assert verdict in (KNOWN[name], TEMPFAIL), (name, verdict)
        return seen == ALL_TEMPFAIL

    seconds_until(tempfailing, timeout=MAX_STALE + 2.0, what="tempfail after --max-stale")
    tempfail_after = time.monotonic() - broken_at
    down_until = time.monotonic() + 5 * REFRESH  # several failed polls while stale
    while time.monotonic() < down_until:
        assert probe(milter) == ALL_TEMPFAIL, "no flapping while the store is down"
    mended_at = time.monotonic()
    mend_store()
    recovered = seconds_until(lambda: probe(milter) == KNOWN, timeout=5.0, what="recovery")
    return {
        "tempfail_after": tempfail_after,
        "recovered_after": recovered,
        "mend": time.monotonic() - mended_at - recovered,
    }


def ride_out_within_max_stale(
    milter: MilterProcess, break_store: Callable[[], None], mend_store: Callable[[], None]
) -> None:
    """Break the store: the outage is logged once, the last good snapshot decides every
    probe; mend it: the milter logs the recovery by itself and decides from the store."""
    assert probe(milter) == KNOWN
    since = milter.log.mark()
    break_store()
    milter.wait_for_log("event=store-unreadable", timeout=10, since=since)
    for _ in range(5):  # many decisions during the outage
        assert probe(milter) == KNOWN, "within --max-stale the last good snapshot decides"
    mend_store()
    milter.wait_for_log("event=store-recovered", timeout=10, since=since)
    assert probe(milter) == KNOWN
    warnings = milter.log.find("event=store-unreadable")
    assert len(warnings) == 1, warnings
    assert "using the snapshot from" in warnings[0]
    assert len(milter.log.find("event=store-recovered")) == 1
    assert milter.log.find("rule=no-settings") == []
    assert milter.trouble() == []
    assert milter.alive


def clock_rides_out(
    url: str,
    break_store: Callable[[], None],
    mend_store: Callable[[], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same real failure on the injected clock: last good, then tempfail, then back;
    polled every --refresh throughout, it warns once when the outage starts and once when
    tempfailing starts, not per poll."""
    caplog.set_level(logging.INFO, logger="smtpauth_milter")
    clock = Clock()
    store = Store(url)

    def polls_for(seconds: float) -> None:
        for _ in range(round(seconds / REFRESH)):
            clock.now += REFRESH
            assert not cache.refresh()

    try:
        cache = SnapshotCache(store, max_stale=MAX_STALE, clock=clock)
        assert cache.refresh()
        assert decided(cache) == KNOWN
        break_store()
        polls_for(MAX_STALE - 2 * REFRESH)
        assert decided(cache) == KNOWN, "within --max-stale the last good snapshot decides"
        polls_for(3 * REFRESH)
        assert decided(cache) == ALL_TEMPFAIL
        polls_for(5 * REFRESH)
        assert decided(cache) == ALL_TEMPFAIL, "no flapping while the store is down"
        mend_store()
        assert cache.refresh()
        assert decided(cache) == KNOWN
    finally:
        store.dispose()
    warnings = [r.getMessage() for r in caplog.records if "store-unreadable" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert "using the snapshot from" in warnings[0]
    assert "tempfailing" in warnings[1]
    assert sum("store-recovered" in r.getMessage() for r in caplog.records) == 1


def decided(cache: SnapshotCache) -> dict[str, str]:
    """What the milter would answer each case with the cache's current snapshot."""
    out = {}
    for name, (kwargs, _) in CASES.items():
        client = parse_ip(str(kwargs.get("client_addr", "203.0.113.9")))
        login = kwargs.get("login")
        request = Request(client, None if login is None else str(login), f"<{kwargs['sender']}>")
        verdict = decide(cache.current(), request, "<x@remote.test>")
        out[name] = CONTINUE if verdict.action is Action.CONTINUE else str(verdict.reply)
    return out


def own_database(own_pg: PgServer, prefix: str) -> str:
    name = own_pg.new_database_name(prefix)
    own_pg.create_database(name)
    url = own_pg.url(name)
    store = Store(url)
    store.upgrade()
    store.dispose()
    seed(url)
    return url


@pytest.mark.postgres
def test_postgresql_stopped_and_started_under_a_running_milter(
    own_pg: PgServer, milters: MilterProcesses
) -> None:
    milter = milters.start(own_database(own_pg, "outage"), *FAR_MAX_STALE_ARGS)
    try:
        ride_out_within_max_stale(milter, own_pg.stop, own_pg.start)
    finally:
        own_pg.start()  # a no-op when the test got that far


@pytest.mark.postgres
def test_postgresql_stopped_past_max_stale_tempfails_on_the_clock(
    own_pg: PgServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = own_database(own_pg, "outage-clock")
    try:
        clock_rides_out(url, own_pg.stop, own_pg.start, caplog)
    finally:
        own_pg.start()


@pytest.mark.postgres
def test_the_cli_against_a_stopped_postgresql_is_one_line_without_the_password(
    own_pg: PgServer,
) -> None:
    name = own_pg.new_database_name("dead")
    own_pg.create_database(name)
    url = own_pg.url(name)
    own_pg.stop()
    try:
        for args in (["domain", "list"], ["settings", "set", "require-auth-local", "on"]):
            result = subprocess.run(
                [console_script(), *args],
                env=clean_env(SMTPAUTH_MILTER_DB=url),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert result.returncode == 2, result
            assert result.stdout == ""
            lines = result.stderr.splitlines()
            assert len(lines) == 1, result.stderr
            assert lines[0].startswith("smtpauth-milter: error: cannot ")
            assert own_pg.password not in result.stderr
            assert "***" in result.stderr
            assert "Traceback" not in result.stderr
    finally:
        own_pg.start()


def test_a_sqlite_store_moved_away_and_back(tmp_path: Path, milters: MilterProcesses) -> None:
    path = tmp_path / "state" / "store.sqlite"
    url = f"sqlite:///{path}"
    seed(url)
    milter = milters.start(url, *FAR_MAX_STALE_ARGS)
    away = path.with_name("store.sqlite.away")
    # The milter opens the path on every read: moved away, it finds an empty
    # file (or none) with no settings in it, which is an outage, not "no policy".
    ride_out_within_max_stale(milter, lambda: path.rename(away), lambda: away.replace(path))


def test_a_sqlite_store_locked_longer_than_max_stale(
    tmp_path: Path, milters: MilterProcesses
) -> None:
    path = tmp_path / "state" / "store.sqlite"
    url = f"sqlite:///{path}"
    seed(url)
    milter = milters.start(url, *MILTER_ARGS)
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        # An exclusive lock (a long write, a backup tool) blocks every reader.
        timings = ride_out_an_outage(
            milter, lambda: locker.execute("BEGIN EXCLUSIVE"), lambda: locker.execute("ROLLBACK")
        )
    finally:
        locker.close()
    assert timings["recovered_after"] < 2.0
    # The refresh thread waits up to SQLite's 10 s busy timeout inside one read,
    # so a shorter lock never raises and is not logged as unreadable; the
    # decisions themselves (rule=no-settings) are.
    assert milter.log.find("event=store-unreadable") == []
    assert len(milter.log.find("rule=no-settings")) >= 5 * len(CASES)
    assert milter.trouble() == []
    assert milter.alive
