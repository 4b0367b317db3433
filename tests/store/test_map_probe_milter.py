"""A running milter probes new sql: maps before any message needs them (issue 21, item 5).

A map that worked when it was set, and broke afterwards (its table dropped), is
a broken map ``settings set`` could not see.  The milter asks it one key on a
lookup worker when it starts, and when a snapshot brings a new
``sender-login-maps``, and logs ``event=map-unreadable`` with the reason, with no
message sent.  A good map logs nothing.  The probe changes no verdict: the
sender that needs the map still fails closed on its own lookup, and the login's
own address still passes.  The map's database is SQLite and a real PostgreSQL.

On main the map was probed only when the first message needed it: these log
lines never came.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from smtpauth_milter.admin.cli import run_cli
from tests.conftest import copy_sqlite_store
from tests.harness.milter import MilterProcess, MilterProcesses
from tests.store.test_sqlmap import mail_db
from tests.support.verdicts import CONTINUE, verdicts

__all__ = ["mail_db"]  # a fixture, used by name
TEMPFAIL = "451 4.3.0 Temporary policy failure, try again later"
SEEN_WITHIN = 10.0  # seconds: a refresh (0.2 s) and one probe, on a loaded machine
UNREADABLE = "event=map-unreadable"


@pytest.fixture
def store(sqlite_url: str, sqlite_store_template: Path) -> str:
    copy_sqlite_store(sqlite_store_template, sqlite_url)
    for args in (
        ["domain", "add", "example.com"],
        ["settings", "set", "require-sender-match", "on"],
        ["settings", "set", "sender-login-maps-ttl", "0"],
    ):
        assert run_cli(["--db", sqlite_url, *args]) == 0
    return sqlite_url


@pytest.fixture
def milters(tmp_path: Path) -> Iterator[MilterProcesses]:
    with MilterProcesses(tmp_path) as procs:
        yield procs


def sql_map(tmp_path: Path, name: str, url: str, table: str, column: str) -> str:
    """``sql:FILE`` asking ``table`` who owns the sender."""
    path = tmp_path / f"{name}.toml"
    query = f"SELECT {column} FROM {table} WHERE {'address' if table == 'alias' else 'username'} = :sender"
    path.write_text(f'url = "{url}"\nquery = "{query}"\n')
    path.chmod(0o600)
    return f"sql:{path}"


def set_maps(store: str, maps: str) -> None:
    """``settings set``: it probes the map, so the map answers at this moment."""
    assert run_cli(["--db", store, "settings", "set", "sender-login-maps", maps]) == 0


def drop_alias_table(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alias"))
    engine.dispose()


def unreadable(milter: MilterProcess, map_name: str) -> list[str]:
    return [line for line in milter.log.find(UNREADABLE) if f" map={map_name} " in line]


def assert_verdicts_unchanged(milter: MilterProcess) -> None:
    """The sender whose verdict needs the broken map tempfails on its own lookup; the
    login's own address never asks the maps."""
    assert verdicts(
        milter.socket,
        sender="sales@example.com",
        rcpts=["x@remote.test"],
        login="alice@example.com",
    ) == [TEMPFAIL]
    assert verdicts(
        milter.socket,
        sender="alice@example.com",
        rcpts=["x@remote.test"],
        login="alice@example.com",
    ) == [CONTINUE]


def test_a_map_broken_after_it_was_set_is_logged_at_start_with_no_message(
    store: str, mail_db: str, tmp_path: Path, milters: MilterProcesses
) -> None:
    broken = sql_map(tmp_path, "aliases", mail_db, "alias", "goto")
    set_maps(store, broken)
    drop_alias_table(mail_db)
    milter = milters.start(store, "--refresh", "0.2", ready="loaded")
    milter.wait_for_log(rf"{UNREADABLE} map={broken} error=.*alias", SEEN_WITHIN)
    assert len(unreadable(milter, broken)) == 1  # once, not once per refresh
    assert "Traceback" not in milter.log_text()
    assert_verdicts_unchanged(milter)
    assert len(unreadable(milter, broken)) == 1  # the lookup's failure: within the minute


def test_a_map_a_refresh_brings_is_probed_and_a_good_one_logs_nothing(
    store: str, mail_db: str, tmp_path: Path, milters: MilterProcesses
) -> None:
    good = sql_map(tmp_path, "mailboxes", mail_db, "mailbox", "username")
    set_maps(store, good)
    milter = milters.start(store, "--refresh", "0.2", ready="loaded")
    since = milter.log.mark()
    broken = sql_map(tmp_path, "aliases", mail_db, "alias", "goto")
    set_maps(store, f"{good}, {broken}")
    drop_alias_table(mail_db)
    # The milter may have probed that list before the drop: one more map setting changed
    # after it is sure to arrive with the map already broken.
    assert run_cli(["--db", store, "settings", "set", "sender-login-maps-timeout", "2"]) == 0
    milter.wait_for_log(rf"{UNREADABLE} map={broken} error=.*alias", SEEN_WITHIN, since=since)
    # The good map was probed at start and again with the new list, long before the broken one
    # failed its probe: had either probe failed, its line would be in the log by now.
    assert unreadable(milter, good) == []
    assert_verdicts_unchanged(milter)
    assert unreadable(milter, good) == [] and milter.log.find("Traceback", since) == []
