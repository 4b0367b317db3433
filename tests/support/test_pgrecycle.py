"""A recycled PostgreSQL store holds exactly what the template holds, whatever a test did."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

from smtpauth_milter.store.engine import Store
from tests.conftest import create_store
from tests.harness.pgrecycle import RecycledDatabases
from tests.harness.pgserver import PgServer

pytestmark = pytest.mark.postgres

Dump = dict[str, list[tuple[object, ...]]]


def dump(server: PgServer, name: str) -> Dump:
    with server.connect(name) as conn:
        listed = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        tables = [str(row[0]) for row in listed]
        return {t: sorted(conn.execute(f'SELECT * FROM "{t}"'), key=repr) for t in tables}


@pytest.fixture
def databases(pg_server: PgServer) -> Iterator[RecycledDatabases]:
    """A pool of its own, on a template with rows in every kind of table."""
    template = pg_server.new_database_name("recycle_template")
    pg_server.create_database(template)
    create_store(pg_server.url(template))
    store = Store(pg_server.url(template))
    with store.write() as session:
        session.execute(sa.text("INSERT INTO domain (name) VALUES ('template.example')"))
    store.dispose()
    pool = RecycledDatabases(pg_server, template)
    yield pool
    pool.close()
    pg_server.drop_database(template)


def test_rows_and_sequences_a_test_changed_are_put_back(
    pg_server: PgServer, databases: RecycledDatabases
) -> None:
    first = databases.take()
    before = dump(pg_server, first)
    assert before["domain"], "the template has a domain row"
    with pg_server.connect(first) as conn:
        conn.execute("INSERT INTO domain (name) VALUES ('added.example')")
        conn.execute("DELETE FROM domain WHERE name = 'template.example'")
        conn.execute("UPDATE store_state SET serial = serial + 41")
        next_id = conn.execute("SELECT nextval(pg_get_serial_sequence('domain', 'id'))")
        used = next_id.fetchone()
    idle = pg_server.connect(first)  # left open (in a transaction) by the "test"
    idle.execute("BEGIN")
    idle.execute("SELECT * FROM domain")
    databases.give_back(first)
    assert idle.closed or idle.broken or _dead(idle)
    idle.close()
    again = databases.take()
    assert again == first, "a reset database is handed out again"
    assert dump(pg_server, again) == before
    with pg_server.connect(again) as conn:
        conn.execute("INSERT INTO domain (name) VALUES ('next.example')")
        row = conn.execute("SELECT id FROM domain WHERE name = 'next.example'").fetchone()
    assert used is not None and row is not None and row[0] < used[0], "the sequence went back"
    databases.give_back(again)


def _dead(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


@pytest.mark.parametrize(
    "change",
    [
        "ALTER TABLE domain ADD COLUMN extra text",
        "CREATE INDEX extra ON domain (name, id)",
        "CREATE TABLE extra (id int)",
        "GRANT SELECT ON domain TO PUBLIC",
        "DROP TABLE audit_entry",
        "UPDATE alembic_version SET version_num = 'other'",  # rows: reset, kept
    ],
)
def test_a_database_whose_definitions_changed_is_dropped(
    pg_server: PgServer, databases: RecycledDatabases, change: str
) -> None:
    name = databases.take()
    before = dump(pg_server, name)
    with pg_server.connect(name) as conn:
        conn.execute(change)
    databases.give_back(name)
    with pg_server.connect() as admin:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        kept = exists.fetchone() is not None
    if change.startswith("UPDATE"):
        assert kept and dump(pg_server, name) == before
    else:
        assert not kept, f"{change!r} was not noticed"
        other = databases.take()
        assert other != name and dump(pg_server, other) == before
        databases.give_back(other)
