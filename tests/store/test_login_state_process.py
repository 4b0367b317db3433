"""`run --state`: a milter process writes its login counts and freezes to the state store,
and nothing to the settings store (docs/operations.md#the-milters-state-least-privilege).

On SQLite the state is a second file; on PostgreSQL the milter reads the settings
through a SELECT-only login and writes the state through a role that may write
only the state tables, the deployment operations.md describes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.store import loginedit
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.loginstate import grants
from tests.harness.milter import MilterProcesses
from tests.harness.pgserver import PgServer
from tests.harness.waiting import wait_until
from tests.support.verdicts import CONTINUE, verdicts

FROZEN = "550 5.7.1 Sending is suspended for this login: contact your mail administrator"


@pytest.fixture
def milters(tmp_path: Path) -> Iterator[MilterProcesses]:
    with MilterProcesses(tmp_path) as procs:
        yield procs


def seed(url: str) -> None:
    for args in (
        ["domain", "add", "example.com"],
        ["settings", "set", "login-max-messages", "1/1h"],
        ["settings", "set", "login-limit-action", "freeze"],
    ):
        assert run_cli(["--db", url, *args]) == 0


def frozen(url: str) -> set[str]:
    store = Store(url)
    try:
        with store.read() as session:
            return set(loginedit.frozen_logins(session, 4e9 - 1))
    finally:
        store.dispose()


def freeze_through(milters: MilterProcesses, db: str, state: str) -> None:
    milter = milters.start(db, env={"SMTPAUTH_MILTER_STATE": state}, ready="loaded")
    session = {"sender": "alice@example.com", "login": "alice@example.com", "rcpts": ["x@r.test"]}
    assert verdicts(milter.socket, **session) == [CONTINUE]  # type: ignore[arg-type]
    assert verdicts(milter.socket, **session) == [FROZEN]  # type: ignore[arg-type]
    wait_until(lambda: frozen(state) == {"alice@example.com"}, 5.0, "the freeze in the state")
    assert milter.trouble() == []


def test_a_sqlite_state_file_beside_the_settings_store(
    tmp_path: Path, milters: MilterProcesses
) -> None:
    db, state = (f"sqlite:///{tmp_path / name}" for name in ("store.sqlite", "state.sqlite"))
    for url in (db, state):
        assert run_cli(["--db", url, "db", "init"]) == 0
    seed(db)
    freeze_through(milters, db, state)
    assert frozen(db) == set(), "nothing written to the settings store"


@pytest.fixture
def roles(pg_server: PgServer, pg_store_url: str) -> Iterator[tuple[str, str]]:
    """The store through a SELECT-only login, and through the state role."""
    seed(pg_store_url)
    dbname = pg_store_url.rpartition("/")[2]
    reader, writer = f"{dbname}_reader", f"{dbname}_state"
    pg_server.create_user(reader, "reader-pw")
    pg_server.create_user(writer, "state-pw")
    with pg_server.connect(dbname) as conn:
        conn.execute(
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(reader)
            )
        )
        for statement in grants(writer, dbname):
            conn.execute(sql.SQL(statement))  # type: ignore[arg-type]
    yield (
        pg_server.url(dbname, user=reader, password="reader-pw"),
        pg_server.url(dbname, user=writer, password="state-pw"),
    )
    with pg_server.connect(dbname) as conn:
        for role in (reader, writer):
            conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    for role in (reader, writer):
        pg_server.drop_user(role)


@pytest.mark.postgres
def test_postgresql_a_select_only_store_login_and_a_state_role(
    roles: tuple[str, str], milters: MilterProcesses
) -> None:
    freeze_through(milters, *roles)
