"""sql: maps in trouble, on SQLite and a real PostgreSQL: a map switched while one of
its lookups is stuck, a frozen backend, a URL that cannot work."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import psycopg
import pytest

from smtpauth_milter.core.addresses import Address
from smtpauth_milter.core.ownermaps import MapAnswer, MapOutcome
from smtpauth_milter.lookups.ownership import Ownership, OwnershipMaps
from smtpauth_milter.lookups.runner import LookupRunner
from tests.conftest import CliRunner, copy_sqlite_store
from tests.harness.pgserver import PgServer
from tests.store.test_sqlmap import ALIAS_QUERY, mail_db, map_file, settings_with

__all__ = ["mail_db"]  # a fixture, used by name
SENDER = Address("sales", "example.com")


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {seconds} s"
        time.sleep(0.01)


@contextmanager
def alias_table_locked(url: str, pg: PgServer | None) -> Iterator[None]:
    """Every read of the ``alias`` table waits while this holds (a slowed map)."""
    if pg is None:
        path = url.removeprefix("sqlite:///")
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        return
    with psycopg.connect(pg.dsn(url.rsplit("/", 1)[1])) as locker:
        locker.execute("LOCK TABLE alias IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            locker.rollback()


def locker_for(
    request: pytest.FixtureRequest, url: str
) -> Callable[[], AbstractContextManager[None]]:
    pg = request.getfixturevalue("pg_server") if url.startswith("postgresql") else None
    return lambda: alias_table_locked(url, pg)


def test_a_map_switched_while_its_lookup_is_stuck_answers_from_the_new_map(
    mail_db: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The old map's lookup is stuck on a lock when sender-login-maps changes: the new
    map answers at once from its own data, and the old answer, when it comes, fills no
    cache of the new configuration (issue 21, item 2)."""
    old = map_file(tmp_path, mail_db, ALIAS_QUERY)  # sales@ -> alice@, bob@ (when unlocked)
    new_db = tmp_path / "new.sqlite"
    sqlite3.connect(new_db).close()
    new = tmp_path / "new.toml"
    new.write_text(
        f'url = "sqlite:///{new_db}"\n'
        "query = \"SELECT 'carol@example.com' WHERE :sender = 'sales@example.com'\"\n"
    )
    new.chmod(0o600)
    runner = LookupRunner("t")
    maps = OwnershipMaps(runner=runner)
    with ThreadPoolExecutor(2) as pool:
        try:
            with locker_for(request, mail_db)():
                before = maps.for_settings(settings_with(sender_login_maps=f"sql:{old}"))
                assert before is not None
                stuck = pool.submit(before.answer, SENDER)
                wait_until(lambda: bool(runner._in_flight), 5, "lookup under way")
                after = maps.for_settings(settings_with(sender_login_maps=f"sql:{new}"))
                assert after is not None
                started = time.monotonic()
                answer = pool.submit(after.answer, SENDER).result(timeout=10)
                assert (answer.outcome, answer.owners) == (MapOutcome.FOUND, ("carol@example.com",))
                assert time.monotonic() - started < 2  # it did not wait for the stuck one
                assert not stuck.done()
            stuck.result(timeout=10)  # the old map's lookup ends (answer or failure)
            assert after.answer(SENDER).owners == ("carol@example.com",)  # its cache: its own
        finally:
            maps.stop()


@pytest.fixture
def alias_db(pg_server: PgServer) -> Iterator[str]:
    name = pg_server.new_database_name("frozen")
    pg_server.create_database(name)
    with pg_server.connect(name) as conn:
        conn.execute("CREATE TABLE alias (address text, goto text)")
        conn.execute("INSERT INTO alias VALUES ('sales@example.com', 'alice@example.com')")
    yield name
    pg_server.drop_database(name)


def backends(pg_server: PgServer, name: str) -> list[int]:
    with pg_server.connect() as admin:
        rows = admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND backend_type = "
            "'client backend' AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    return [int(str(row[0])) for row in rows]


@pytest.mark.postgres
def test_a_frozen_backend_holds_no_worker_and_later_lookups_answer_on_a_fresh_connection(
    pg_server: PgServer, alias_db: str, tmp_path: Path
) -> None:
    """SIGSTOP of the one backend the map's pool holds (the kernel still acknowledges,
    nothing answers): on main the pool's pre-ping waited for ever, before any deadline,
    and every later lookup joined it and tempfailed.  Now every step is bounded and later
    lookups (more of them than there are workers) answer within the deadline."""
    path = map_file(tmp_path, pg_server.url(alias_db), ALIAS_QUERY).with_name("frozen.toml")
    path.write_text(f'url = "{pg_server.url(alias_db)}"\nquery = "{ALIAS_QUERY}"\n')
    path.chmod(0o600)
    timeout = 2.0
    settings = settings_with(
        sender_login_maps=f"sql:{path}",
        sender_login_maps_ttl="0",  # every answer is asked of the map
        sender_login_maps_timeout=f"{timeout:g}",
    )
    runner = LookupRunner("t")
    maps = OwnershipMaps(runner=runner)
    try:
        ownership = maps.for_settings(settings)
        assert ownership is not None
        assert ownership.answer(SENDER).owned_by("alice@example.com")
        # the pool holds one connection (the probe's own is closed once it answered)
        wait_until(lambda: len(backends(pg_server, alias_db)) == 1, 10, "one backend")
        [frozen] = backends(pg_server, alias_db)
        os.kill(frozen, signal.SIGSTOP)
        try:
            first = timed_answer(ownership)  # it may spend its time finding out
            assert first[0] < timeout + 0.5
            for _ in range(6):
                took, answer = timed_answer(ownership)
                assert answer.owned_by("alice@example.com"), answer.error
                assert took < timeout
            assert runner.workers() == 4
        finally:
            os.kill(frozen, signal.SIGCONT)
    finally:
        maps.stop()


def timed_answer(ownership: Ownership) -> tuple[float, MapAnswer]:
    started = time.monotonic()
    answer = ownership.answer(SENDER)
    return time.monotonic() - started, answer


def broken_map(tmp_path: Path, url: str, query: str = ALIAS_QUERY) -> Path:
    path = tmp_path / "broken.toml"
    path.write_text(f'url = "{url}"\nquery = "{query}"\n')
    path.chmod(0o600)
    return path


def aliases_sqlite(tmp_path: Path) -> str:
    path = tmp_path / "aliases.sqlite"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alias (address text, goto text)")
        conn.execute("INSERT INTO alias VALUES ('sales@example.com', 'alice@example.com')")
    conn.close()
    return f"sqlite:///{path}"


@pytest.mark.parametrize(
    ("url_option", "query", "why"),
    [
        ("?timeout=abc", ALIAS_QUERY, "could not convert string to float: 'abc'"),
        ("", "SELECT goto FROM no_such_table WHERE address = :sender", "no such table"),
    ],
)
def test_settings_set_refuses_a_sql_map_that_cannot_answer(
    cli: CliRunner, tmp_path: Path, url_option: str, query: str, why: str
) -> None:
    """The map is opened and asked one key before the change is stored (on main both were
    accepted, exit 0, and mail for those senders tempfailed)."""
    path = broken_map(tmp_path, aliases_sqlite(tmp_path) + url_option, query)
    result = cli("settings", "set", "sender-login-maps", f"sql:{path}")
    assert (result.code, result.out) == (2, "")
    assert result.err.count("\n") == 1
    assert result.err.startswith(f"smtpauth-milter: error: bad map sql:{path}: ")
    assert why in result.err
    shown = cli("settings", "show", "--json").json()["settings"]["sender-login-maps"]["value"]
    assert shown == ""
    assert "sender-login-maps" not in cli("history").out  # nothing was written


def test_check_with_a_map_the_driver_refuses_prints_an_error_line_not_a_traceback(
    cli: CliRunner, tmp_path: Path
) -> None:
    good = aliases_sqlite(tmp_path)
    path = broken_map(tmp_path, good)
    assert cli("domain", "add", "example.com").code == 0
    assert cli("settings", "set", "require-sender-match", "on").code == 0
    assert cli("settings", "set", "sender-login-maps", f"sql:{path}").code == 0
    broken_map(tmp_path, good + "?timeout=abc")  # the file changes after it was set
    result = cli("check", "--login", "bob@example.com", "--from", "sales@example.com",
                 "--rcpt", "x@remote.test")  # fmt: skip
    assert result.code == 1 and "Traceback" not in result.err
    assert "rule=sender-map-failed" in result.out
    assert "could not convert string to float: 'abc'" in result.out


def test_the_milters_maps_log_why_a_map_cannot_answer_when_loaded_and_when_asked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Loaded (a settings change, a reload): the new sql: map is probed on a worker and
    its failure logged; asked: the failure is a tempfail with its reason in the log, once
    a minute (on main: no log line at all, only the tempfail)."""
    path = broken_map(tmp_path, aliases_sqlite(tmp_path) + "?timeout=abc")
    maps = OwnershipMaps()
    try:
        with caplog.at_level("WARNING", "smtpauth_milter"):
            ownership = maps.for_settings(settings_with(sender_login_maps=f"sql:{path}"))
            assert ownership is not None
            wait_until(lambda: bool(caplog.records), 10, "a log line from the probe")
            answer = ownership.answer(SENDER)
        assert answer.outcome is MapOutcome.FAILED and "'abc'" in (answer.error or "")
        [line] = [r.getMessage() for r in caplog.records]  # the lookup's: within the minute
        assert line.startswith(f"event=map-unreadable map=sql:{path} error=")
        assert "could not convert string to float: 'abc'" in line
    finally:
        maps.stop()


def test_prepared_maps_are_probed_at_once_and_a_mended_map_is_logged_as_recovered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """What the milter's refresh thread does with each new snapshot: the maps are probed
    on a worker, no lookup asked; when a later configuration's probe answers, the map that
    was logged unreadable is logged recovered (on main it stayed "unreadable" in the log
    until a message happened to need it)."""
    database = tmp_path / "aliases.sqlite"
    path = broken_map(tmp_path, f"sqlite:///{database}")  # no alias table yet
    maps = OwnershipMaps()

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records]

    try:
        with caplog.at_level("WARNING", "smtpauth_milter"):
            maps.prepare(settings_with(sender_login_maps=f"sql:{path}"))
            wait_until(lambda: bool(lines()), 10, "a log line from the probe")
            [line] = lines()
            assert line.startswith(f"event=map-unreadable map=sql:{path} error=")
            assert "no such table: alias" in line
            aliases_sqlite(tmp_path)  # the table is there now
            maps.prepare(settings_with(sender_login_maps=f"sql:{path}", sender_login_maps_ttl="5"))
            wait_until(lambda: len(lines()) == 2, 10, "a second log line")
        assert lines()[1].startswith(f"event=map-recovered map=sql:{path} after=")
    finally:
        maps.stop()


def test_settings_set_asks_a_slow_map_before_it_takes_the_stores_write_lock(
    sqlite_url: str, sqlite_store_template: Path, tmp_path: Path
) -> None:
    """A map that takes its whole timeout to fail (its database locked) is asked before
    the write transaction begins: other writers are never kept waiting for it (before,
    the probe ran inside the transaction and held SQLite's write lock for seconds)."""
    copy_sqlite_store(sqlite_store_template, sqlite_url)
    store = sqlite_url.removeprefix("sqlite:///")
    slow = map_file(tmp_path, aliases_sqlite(tmp_path), ALIAS_QUERY)  # timeout = 3
    command = Path(sys.executable).with_name("smtpauth-milter")
    locker = sqlite3.connect(tmp_path / "aliases.sqlite", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # every read of the map waits, then fails
    try:
        setting = subprocess.Popen(
            [command, "--db", sqlite_url, "settings", "set", "sender-login-maps", f"sql:{slow}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        kept_waiting = 0
        deadline = time.monotonic() + 30
        while setting.poll() is None:
            assert time.monotonic() < deadline, "settings set did not end"
            writer = sqlite3.connect(store, timeout=0.5, isolation_level=None)
            try:
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("ROLLBACK")
            except sqlite3.OperationalError:
                kept_waiting += 1
            finally:
                writer.close()
            time.sleep(0.05)
        _out, err = setting.communicate()
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert setting.returncode == 2 and err.startswith(f"smtpauth-milter: error: bad map sql:{slow}")
    assert kept_waiting == 0
