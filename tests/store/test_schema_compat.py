"""A store upgraded by a newer release: readable or not, by the milter and by each command.

The newer release is played by a copy of this version's migrations with
test-only revisions after its head (``tests/upgrades.py``): ``t9001`` says
this version can still read it, ``t9002`` says it cannot.  SQLite and a real
PostgreSQL.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from smtpauth_milter import __version__
from smtpauth_milter.core.errors import SchemaError
from smtpauth_milter.core.networks import parse_ip
from smtpauth_milter.core.policy import Action, Request, decide
from smtpauth_milter.daemon.refresh import SnapshotCache
from smtpauth_milter.store import editing, schema
from smtpauth_milter.store.engine import Store
from tests.conftest import CliRunner, copy_sqlite_store
from tests.harness.waiting import wait_until
from tests.upgrades import newer_migrations

COMPATIBLE, INCOMPATIBLE = "t9001", "t9002"
NEEDS = "99.0"
INCOMPATIBLE_LINE = (
    f"is at schema {INCOMPATIBLE}, which needs smtpauth-milter {NEEDS} or later "
    f"(this is {__version__}): upgrade smtpauth-milter"
)


@pytest.fixture
def newer(db_url: str, tmp_path: Path) -> Iterator[Store]:
    """The newer release's view of the same store (its migrations, its ``db upgrade``)."""
    location = newer_migrations(tmp_path, [(COMPATIBLE, "0.1.0"), (INCOMPATIBLE, NEEDS)])
    store = Store(db_url, migrations=str(location))
    yield store
    store.dispose()


@pytest.fixture
def ours(db_url: str) -> Iterator[Store]:
    store = Store(db_url)
    store.prepare()
    with store.write() as session:
        editing.add_domains(session, ["example.com"])
        editing.set_setting(session, "require-auth-local", "on")
    yield store
    store.dispose()


def _verdict(snapshot_source: SnapshotCache, client: str = "203.0.113.5") -> Action:
    request = Request(parse_ip(client), None, "<alice@example.com>")
    return decide(snapshot_source.current(), request, "<x@remote.test>").action


def test_db_upgrade_records_the_rule_of_the_revision_it_leaves_the_store_at(
    ours: Store, newer: Store
) -> None:
    head = ours.head()
    assert ours.rule() == schema.Rule(head, ours.migrations.rules[head])
    newer.upgrade(COMPATIBLE)
    assert ours.rule() == schema.Rule(COMPATIBLE, "0.1.0")
    newer.upgrade()
    assert ours.rule() == schema.Rule(INCOMPATIBLE, NEEDS)
    newer.downgrade(head)
    assert ours.rule() == schema.Rule(head, ours.migrations.rules[head])
    ours.downgrade("0002")  # before the rule table existed: nothing to record, nothing left
    assert ours.rule() is None
    ours.upgrade()
    assert ours.rule() == schema.Rule(head, ours.migrations.rules[head])
    assert ours.drift() is None


def test_every_schema_change_bumps_the_serial(ours: Store, newer: Store) -> None:
    serial = ours.serial()
    newer.upgrade(COMPATIBLE)
    assert ours.serial() == serial + 1
    newer.downgrade(ours.head())
    assert ours.serial() == serial + 2


def test_on_a_compatible_newer_schema_this_version_reads_but_does_not_write(
    ours: Store, newer: Store
) -> None:
    newer.upgrade(COMPATIBLE)
    ours.prepare()
    assert set(ours.load_snapshot().domains) == {"example.com"}
    with pytest.raises(SchemaError, match="this command needs the newer version"):
        ours.prepare(exact=True)
    with pytest.raises(SchemaError, match=f"at schema {COMPATIBLE}, newer than"):
        ours.upgrade()
    assert ours.current() == COMPATIBLE


def test_on_an_incompatible_newer_schema_this_version_reads_nothing(
    ours: Store, newer: Store
) -> None:
    newer.upgrade()
    for attempt in (ours.prepare, ours.load_snapshot, lambda: ours.prepare(exact=True)):
        with pytest.raises(SchemaError) as refused:
            attempt()
        assert str(refused.value) == f"the store {ours.display} {INCOMPATIBLE_LINE}"


@pytest.mark.parametrize(
    ("tamper", "why"),
    [
        ("UPDATE schema_compat SET revision = 'other'", "records no rule"),
        ("DELETE FROM schema_compat", "records no rule"),
        ("UPDATE schema_compat SET readable_by = 'any'", "its rule 'any' is not a version"),
    ],
)
def test_a_newer_schema_without_a_trustworthy_rule_is_refused(
    ours: Store, newer: Store, tamper: str, why: str
) -> None:
    newer.upgrade(COMPATIBLE)
    with ours.engine.begin() as conn:
        conn.execute(text(tamper))
    with pytest.raises(SchemaError, match=why):
        ours.load_snapshot()


def test_the_snapshot_cache_keeps_deciding_on_a_compatible_schema_and_tempfails_at_once_on_an_incompatible_one(
    ours: Store, newer: Store, caplog: pytest.LogCaptureFixture
) -> None:
    now = [1000.0]
    cache = SnapshotCache(ours, max_stale=300, clock=lambda: now[0])
    assert cache.refresh()
    assert _verdict(cache) is Action.REJECT
    newer.upgrade(COMPATIBLE)
    with newer.write() as session:  # the newer release edits; this version sees it
        editing.add_network(session, "203.0.113.0/24")
    assert cache.refresh()
    assert cache.current().serial == ours.serial()
    assert _verdict(cache) is Action.CONTINUE
    assert _verdict(cache, client="198.51.100.7") is Action.REJECT
    caplog.set_level(logging.WARNING, logger="smtpauth_milter")
    newer.upgrade()
    now[0] += 1  # far inside --max-stale: still no riding it out
    assert not cache.refresh()
    assert _verdict(cache) is Action.TEMPFAIL
    assert cache.current().global_settings.tempfail_reply.code == 451
    for _ in range(5):
        now[0] += 1
        assert not cache.refresh()
        assert _verdict(cache) is Action.TEMPFAIL
    # at WARNING or above: an earlier test in this process may have left the
    # logger at INFO (run's setup_logging), and the first refreshes log at INFO
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "event=store-unreadable" in warnings[0]
    assert 'state="schema not readable by this version: tempfailing"' in warnings[0]
    assert INCOMPATIBLE_LINE in warnings[0]
    newer.downgrade(COMPATIBLE)  # the newer release backs out: decisions come back
    now[0] += 1
    assert cache.refresh()
    assert _verdict(cache) is Action.CONTINUE
    assert "event=store-recovered" in caplog.records[-1].getMessage()


def test_the_cli_reads_a_compatible_newer_schema_and_refuses_changes_in_one_line(
    cli: CliRunner, ours: Store, newer: Store
) -> None:
    newer.upgrade(COMPATIBLE)
    serial = ours.serial()
    for args in (
        ["domain", "list"],
        ["settings", "show"],
        ["network", "list"],
        ["sender", "list"],
        ["history"],
        ["check", "--from", "alice@example.com", "--rcpt", "x@remote.test"],
    ):
        result = cli(*args)
        assert result.code in (0, 1), (args, result)  # check: 1 when a recipient is refused
        assert result.err == "", (args, result.err)
    assert cli("domain", "list").out.split() == ["example.com"]
    for args in (
        ["domain", "add", "example.org"],
        ["settings", "set", "dry-run", "on"],
        ["network", "add", "192.0.2.0/24"],
        ["export"],
        ["db", "upgrade"],
        ["db", "check"],
    ):
        result = cli(*args)
        assert result.code == 2, (args, result)
        assert result.out == ""
        lines = result.err.splitlines()
        assert len(lines) == 1, (args, result.err)
        assert lines[0].startswith(f"smtpauth-milter: error: the store {ours.display} is at ")
        assert "upgrade smtpauth-milter" in lines[0]
    assert ours.serial() == serial, "nothing changed"
    assert ours.current() == COMPATIBLE
    current = cli("db", "current")
    assert current.code == 0
    assert current.out.splitlines() == [
        f"store: {COMPATIBLE}  code: {ours.head()}",
        f"readable by: smtpauth-milter 0.1.0 and later (schema {COMPATIBLE})",
    ]


def test_the_cli_refuses_an_incompatible_newer_schema_in_one_line(
    cli: CliRunner, ours: Store, newer: Store
) -> None:
    newer.upgrade()
    for args in (["domain", "list"], ["check", "--from", "a@example.com", "--rcpt", "b@x.test"]):
        result = cli(*args)
        assert result.code == 2
        assert (
            result.err == f"smtpauth-milter: error: the store {ours.display} {INCOMPATIBLE_LINE}\n"
        )


def test_db_upgrade_waits_for_a_milter_writing_its_login_counts_on_sqlite(
    sqlite_url: str, sqlite_store_template: Path, tmp_path: Path
) -> None:
    """A milter writes its login counts in short write transactions; `db upgrade` and
    `db downgrade` run meanwhile must wait for each and succeed, not fail with "database
    is locked" (a migration that reads before it writes cannot wait for a lock upgrade)."""
    copy_sqlite_store(sqlite_store_template, sqlite_url)
    location = newer_migrations(tmp_path / "newer", [(COMPATIBLE, "0.1.0")])
    newer = Store(sqlite_url, migrations=str(location))
    head = Store(sqlite_url).head()
    stop = threading.Event()
    writes = 0

    def milter_writing() -> None:
        nonlocal writes
        conn = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=10)
        conn.isolation_level = None
        while not stop.is_set():
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE store_state SET serial = serial")
            time.sleep(0.005)
            conn.execute("COMMIT")
            writes += 1
            time.sleep(0.02)  # a milter exchanges once a second; this is 50 times as often
        conn.close()

    writer = threading.Thread(target=milter_writing)
    writer.start()
    try:
        wait_until(lambda: writes >= 3 or None, 10, "the writer to write")
        for _ in range(5):
            newer.upgrade(COMPATIBLE)
            newer.downgrade(head)
        newer.upgrade(COMPATIBLE)
        after = writes
        wait_until(lambda: writes > after or None, 10, "the milter to write again")
    finally:
        stop.set()
        writer.join()
        newer.dispose()
