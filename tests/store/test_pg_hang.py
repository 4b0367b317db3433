"""A PostgreSQL that hangs instead of failing, under a running milter process.

Two hangs no server-side or TCP setting alone can bound: a middlebox that
keeps acknowledging but never forwards (a TCP proxy that swallows every byte,
in front of the real throwaway PostgreSQL), and a session holding ACCESS
EXCLUSIVE on a table the milter reads.  Either way the milter decides from
its last good snapshot, warns within seconds (not never), tempfails once
``--max-stale`` has passed, and reads the store again soon after the hang ends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.store.deadline import CONNECT_TIMEOUT, LOCK_TIMEOUT_MS, READ_DEADLINE
from tests.harness.milter import MilterProcess, MilterProcesses
from tests.harness.pgserver import PgServer
from tests.support.blackhole import BlackholeProxy
from tests.support.verdicts import seconds_until, verdicts

pytestmark = pytest.mark.postgres

MAX_STALE = 3.0
REFRESH = 0.2
MILTER_ARGS = ("--max-stale", str(MAX_STALE), "--refresh", str(REFRESH))
TEMPFAIL = "451 4.3.0 Temporary policy failure, try again later"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
SLACK = 2.0  # process scheduling on a shared machine


def verdict(milter: MilterProcess) -> str:
    return verdicts(milter.socket, sender="<alice@example.com>", rcpts=["<x@remote.test>"])[0]


def seed(url: str) -> None:
    for args in (
        ["db", "upgrade"],
        ["domain", "add", "example.com"],
        ["settings", "set", "require-auth-local", "on"],
    ):
        assert run_cli(["--db", url, *args]) == 0


@pytest.fixture
def milters(tmp_path: Path) -> Iterator[MilterProcesses]:
    with MilterProcesses(tmp_path) as procs:
        yield procs


def ride_out_a_hang(milter: MilterProcess, warn_within: float) -> float:
    """Called right after the hang began: check each phase; returns when it started."""
    hung_at = time.monotonic()
    # Within --max-stale the last good snapshot decides (the last read was <= REFRESH ago).
    while time.monotonic() < hung_at - REFRESH + MAX_STALE - 0.5:
        assert verdict(milter) == AUTH_REQUIRED
    seconds_until(lambda: verdict(milter) == TEMPFAIL, MAX_STALE + SLACK, "tempfail at --max-stale")
    seconds_until(
        lambda: bool(milter.log.find("event=store-unreadable")),
        max(0.0, warn_within - (time.monotonic() - hung_at)) + SLACK,
        "a warning while the store hangs",
    )
    assert verdict(milter) == TEMPFAIL
    return hung_at


def test_a_middlebox_that_swallows_everything(
    pg_server: PgServer, pg_url: str, milters: MilterProcesses
) -> None:
    seed(pg_url)
    with BlackholeProxy((pg_server.host, int(pg_url.rsplit(":", 1)[1].split("/")[0]))) as proxy:
        proxied = pg_url.replace(
            f"@{pg_url.split('@', 1)[1].split('/', 1)[0]}/", f"@127.0.0.1:{proxy.port}/"
        )
        milter = milters.start(proxied, *MILTER_ARGS)
        assert verdict(milter) == AUTH_REQUIRED
        proxy.hole()
        ride_out_a_hang(milter, warn_within=READ_DEADLINE)
        assert "did not answer within" in milter.log_text()
        healed_at = time.monotonic()
        proxy.heal()
        # The poll under way may still wait for its deadline or connect timeout.
        bound = max(READ_DEADLINE, CONNECT_TIMEOUT) + REFRESH + SLACK
        seconds_until(lambda: verdict(milter) == AUTH_REQUIRED, bound, "recovery after the hang")
        assert time.monotonic() - healed_at < bound
        milter.log.wait_for("event=store-recovered")  # the log writer writes it just after
        assert milter.trouble() == []


@pytest.mark.parametrize("table", ["store_state", "global_setting"])
def test_a_lock_held_on_a_table_the_milter_reads(
    pg_server: PgServer, pg_url: str, milters: MilterProcesses, table: str
) -> None:
    seed(pg_url)
    milter = milters.start(pg_url, *MILTER_ARGS)
    assert verdict(milter) == AUTH_REQUIRED
    dbname = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_server.dsn(dbname)) as locker:  # one open transaction
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        if table != "store_state":  # make the milter load the settings it cannot read
            with pg_server.connect(dbname) as other:
                other.execute("UPDATE store_state SET serial = serial + 1")
        ride_out_a_hang(milter, warn_within=LOCK_TIMEOUT_MS / 1000)
        assert "lock timeout" in milter.log_text()
        released_at = time.monotonic()
        locker.rollback()
    seconds_until(
        lambda: verdict(milter) == AUTH_REQUIRED,
        LOCK_TIMEOUT_MS / 1000 + REFRESH + SLACK,
        "recovery after the lock is released",
    )
    assert time.monotonic() - released_at < LOCK_TIMEOUT_MS / 1000 + REFRESH + SLACK
    assert milter.trouble() == []
