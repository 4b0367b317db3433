"""Two milter processes on one PostgreSQL: a CLI change reaches both by itself.

The milters run the installed console script on inet sockets and are driven
over those sockets as an MTA does.  One of them reads through a login that
may only SELECT, as a milter pointed at a read replica would.  The second
test counts, with pg_stat_statements, what the polling costs the database.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.daemon.config import clean_env
from smtpauth_milter.store.engine import Store
from tests.harness.milter import MilterProcess, MilterProcesses, console_script
from tests.harness.pgserver import PgServer
from tests.harness.pgstatements import StatementsPgServer
from tests.harness.waiting import wait_until
from tests.support.verdicts import CONTINUE, verdicts

pytestmark = pytest.mark.postgres

# The documented 2 s (docs/operations.md#how-a-change-propagates) is proven in real time
# once, through Postfix (tests/integration/test_milter_lifecycle.py); here a change only
# has to arrive by itself, so the deadline is generous for a loaded machine. The
# figures (seconds per change, polls per second) are measured by bench/propagation.py.
ARRIVES_WITHIN = 15.0
AUTH_REQUIRED = "530 5.7.0 Authentication required"


def verdict(milter: MilterProcess) -> str:
    """An unauthenticated local sender to a remote recipient."""
    return verdicts(milter.socket, sender="alice@example.com", rcpts=["x@remote.test"])[0]


def both_say(milters: list[MilterProcess], expected: str) -> None:
    """Wait until each milter gives ``expected``, without a restart or a signal."""
    for milter in milters:
        wait_until(
            lambda m=milter: verdict(m) == expected,  # type: ignore[misc]
            ARRIVES_WITHIN,
            f"milter on {milter.socket} says {expected}",
        )


@pytest.fixture
def milters(tmp_path: Path) -> Iterator[MilterProcesses]:
    with MilterProcesses(tmp_path) as procs:
        yield procs


def migrated(url: str) -> str:
    store = Store(url)
    store.create()
    store.dispose()
    assert run_cli(["--db", url, "domain", "add", "example.com"]) == 0
    return url


@pytest.fixture
def store_url(pg_url: str) -> str:
    """A migrated database with one local domain, as an admin sets it up."""
    return migrated(pg_url)


@pytest.fixture
def reader_url(pg_server: PgServer, store_url: str) -> Iterator[str]:
    """The same database through a login that may only read (like a replica's)."""
    dbname = store_url.rpartition("/")[2]
    role, password = f"{dbname}_reader", "reader-pw"
    pg_server.create_user(role, password)
    with pg_server.connect(dbname) as conn:
        conn.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(role)
            )
        )
    yield pg_server.url(dbname, user=role, password=password)
    with pg_server.connect(dbname) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    pg_server.drop_user(role)


def test_a_cli_change_reaches_two_milters_by_itself(
    store_url: str, reader_url: str, milters: MilterProcesses
) -> None:
    pg_url = store_url
    first = milters.start(pg_url)  # the default --refresh, 0.5 s
    second = milters.start(reader_url)
    both = [first, second]
    assert [verdict(m) for m in both] == [CONTINUE, CONTINUE]

    # In process, through the CLI's own entry point.
    assert run_cli(["--db", pg_url, "settings", "set", "require-auth-local", "on"]) == 0
    both_say(both, AUTH_REQUIRED)

    # The installed command, in another process, with the URL in the environment.
    result = subprocess.run(
        [console_script(), "settings", "set", "--domain", "example.com", "require-auth-local", "0"],
        env=clean_env(SMTPAUTH_MILTER_DB=pg_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    both_say(both, CONTINUE)

    # A read-only login cannot write: the CLI says so in one line, nothing changes.
    refused = subprocess.run(
        [console_script(), "settings", "set", "require-auth-local", "off"],
        env=clean_env(SMTPAUTH_MILTER_DB=reader_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "permission denied" in refused.stderr
    assert "reader-pw" not in refused.stderr

    for milter in both:
        assert milter.trouble() == []
        # logged by the refresh thread, written by the log writer just after
        milter.wait_for_log("event=snapshot-loaded", count=3)
        assert len(milter.log.find("event=snapshot-loaded")) == 3  # start + two changes


@pytest.fixture(scope="module")
def counting_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StatementsPgServer]:
    server = StatementsPgServer(tmp_path_factory.mktemp("pg-statements"))
    server.start()
    with server.connect() as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
    yield server
    server.close()


def statement_calls(conn: psycopg.Connection[tuple[object, ...]], dbname: str) -> dict[str, int]:
    rows = conn.execute(
        "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
        "WHERE d.datname = %s AND s.query NOT LIKE %s",
        (dbname, "%pg_stat_statements%"),
    ).fetchall()
    calls: dict[str, int] = {}
    for query, count in rows:
        calls[str(query)] = calls.get(str(query), 0) + int(str(count))
    return calls


def polled(calls: dict[str, int], wanted: int) -> dict[str, int] | None:
    """``calls`` once the milters polled the serial ``wanted`` times, else None."""
    return calls if sum(n for q, n in calls.items() if "FROM store_state" in q) >= wanted else None


def test_what_polling_costs_the_database(
    counting_pg: StatementsPgServer, milters: MilterProcesses
) -> None:
    """Idle: a serial poll per --refresh per milter, nothing else; a change: one reload each."""
    dbname = counting_pg.new_database_name("cost")
    counting_pg.create_database(dbname)
    url = migrated(counting_pg.url(dbname))
    refresh = 0.5
    pair = [milters.start(url, "--refresh", str(refresh)) for _ in range(2)]
    both_say(pair, CONTINUE)  # both have loaded their first snapshot and serve
    with counting_pg.connect() as admin:
        admin.execute("SELECT pg_stat_statements_reset()")
        started = time.monotonic()
        # Idle: wait for several polls of each milter (an event, not a fixed interval).
        wanted = 4 * len(pair)
        idle = wait_until(
            lambda: polled(statement_calls(admin, dbname), wanted), ARRIVES_WITHIN, "idle polls"
        )
        elapsed = time.monotonic() - started
        connections = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,)
        ).fetchone()
        admin.execute("SELECT pg_stat_statements_reset()")
        assert run_cli(["--db", url, "settings", "set", "require-auth-local", "on"]) == 0
        both_say(pair, AUTH_REQUIRED)  # both reloaded: the new verdict comes from the new load
        change = statement_calls(admin, dbname)

    serial_polls = sum(n for q, n in idle.items() if "FROM store_state" in q)
    # At most one poll per --refresh per milter (plus the one in flight each): not more.
    assert serial_polls <= elapsed / refresh * len(pair) + len(pair), (serial_polls, elapsed)
    assert not any("global_setting" in q or "send_as_grant" in q for q in idle), idle
    # The login-sync thread (docs/policy.md#one-count-for-the-whole-site): its own
    # connection, and at most one exchange a second per milter (plus the one in flight).
    # (the statement as SQLAlchemy renders it: white space folded, whatever its line breaks)
    exchanges = sum(n for q, n in idle.items() if "FROM login_frozen WHERE" in " ".join(q.split()))
    assert 1 <= exchanges <= elapsed / 1.0 * len(pair) + len(pair), (exchanges, elapsed, idle)
    assert connections == (2 * len(pair),)
    # One full reload per milter after the change: each table read exactly twice.
    loads = {q: n for q, n in change.items() if "FROM send_as_grant" in q}
    assert list(loads.values()) == [len(pair)], change
    for milter in pair:
        assert milter.trouble() == []
