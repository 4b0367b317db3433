"""Copies of one template database, reset between tests instead of made again.

``CREATE DATABASE ... TEMPLATE`` costs about 130 ms of CPU on PostgreSQL 15
(a checkpoint before and after the file copy), and the suite makes one for
each of several hundred store tests.  :class:`RecycledDatabases` hands a test
a database that holds exactly what the template holds, and when the test is
done puts it back the way the template is: other sessions on it ended, every
table emptied and refilled with the template's rows, every sequence set back:
about 19 ms of CPU.

Only the data is reset.  A database whose definitions a test changed (tables,
columns, constraints, indexes, privileges, owner, settings: a migration run,
a GRANT to a test role) no longer matches the template's fingerprint and is
dropped, as is one that cannot be reset within its lock timeout; the next
test gets a new copy.  So a test never sees another test's leftovers.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from tests.harness.pgserver import PgServer

# Everything a test could change about a database besides its rows, as one hash.
FINGERPRINT = """
SELECT md5(string_agg(item, E'\\n' ORDER BY item)) FROM (
  SELECT 'db ' || pg_get_userbyid(datdba) || ' ' || coalesce(datacl::text, '')
    FROM pg_database WHERE datname = current_database()
  UNION ALL
  SELECT 'setting ' || setconfig::text FROM pg_db_role_setting s
    JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = current_database()
  UNION ALL
  SELECT 'schema ' || nspname || ' ' || pg_get_userbyid(nspowner) || ' '
      || coalesce(nspacl::text, '')
    FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
  UNION ALL
  SELECT 'relation ' || c.oid::regclass::text || ' ' || c.relkind::text || ' '
      || pg_get_userbyid(c.relowner) || ' ' || coalesce(c.relacl::text, '')
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
  UNION ALL
  SELECT 'column ' || a.attrelid::regclass::text || '.' || a.attname || ' '
      || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull::text || ' '
      || coalesce(pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
      AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
  UNION ALL
  SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname || ' '
      || pg_get_constraintdef(c.oid)
    FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
    WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
  UNION ALL
  SELECT 'index ' || indexdef FROM pg_indexes
    WHERE schemaname NOT LIKE 'pg\\_%' AND schemaname <> 'information_schema'
  UNION ALL
  SELECT 'trigger ' || tgrelid::regclass::text || ' ' || tgname FROM pg_trigger
    WHERE NOT tgisinternal
  UNION ALL
  SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
) AS items (item)
"""
TABLES = (
    "SELECT schemaname, tablename FROM pg_tables"
    " WHERE schemaname NOT LIKE 'pg\\_%' AND schemaname <> 'information_schema' ORDER BY 1, 2"
)
SEQUENCES = (
    "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename), start_value, last_value"
    " FROM pg_sequences ORDER BY 1"
)
LOCK_TIMEOUT = "2s"  # a reset that waits longer drops the database instead


@dataclass(frozen=True)
class _Contents:
    fingerprint: str
    rows: dict[tuple[str, str], list[tuple[object, ...]]]  # (schema, table) -> its rows
    sequences: list[tuple[str, int, int | None]]  # name, start, last value (None: unused)


class RecycledDatabases:
    """Databases equal to ``template`` on ``server``, one test at a time (see the module)."""

    def __init__(self, server: PgServer, template: str) -> None:
        self.server, self.template = server, template
        self._free: list[str] = []
        with server.connect(template) as conn:
            self._template = _read(conn)

    def take(self) -> str:
        """The name of a database that holds exactly what the template holds."""
        if self._free:
            return self._free.pop()
        name = self.server.new_database_name()
        self.server.create_database(name, template=self.template)
        return name

    def give_back(self, name: str) -> None:
        """Reset ``name`` for the next test, or drop it when a test changed more than rows."""
        try:
            clean = self._reset(name)
        except psycopg.Error:
            clean = False
        if clean:
            self._free.append(name)
        else:
            self.server.drop_database(name)

    def close(self) -> None:
        """Drop the databases waiting to be handed out (the server may live on)."""
        while self._free:
            self.server.drop_database(self._free.pop())

    def _reset(self, name: str) -> bool:
        with self.server.connect(name) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(LOCK_TIMEOUT)))
            if _fingerprint(conn) != self._template.fingerprint:
                return False
            with conn.transaction():
                _refill(conn, self._template)
        return True


def _fingerprint(conn: psycopg.Connection[tuple[object, ...]]) -> str:
    row = conn.execute(FINGERPRINT).fetchone()
    return str(row[0]) if row else ""


def _read(conn: psycopg.Connection[tuple[object, ...]]) -> _Contents:
    tables = [(str(schema), str(table)) for schema, table in conn.execute(TABLES)]
    rows = {
        table: list(conn.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(*table))))
        for table in tables
    }
    sequences = [
        (str(name), int(str(start)), None if last is None else int(str(last)))
        for name, start, last in conn.execute(SEQUENCES)
    ]
    return _Contents(_fingerprint(conn), rows, sequences)


def _refill(conn: psycopg.Connection[tuple[object, ...]], contents: _Contents) -> None:
    """Every table as in ``contents`` (foreign keys unchecked while it is refilled)."""
    conn.execute("SET LOCAL session_replication_role = replica")
    for table in contents.rows:  # DELETE: TRUNCATE makes new files for every table and index
        conn.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(*table)))
    for table, rows in contents.rows.items():
        if rows:
            marks = sql.SQL(", ").join([sql.Placeholder()] * len(rows[0]))
            insert = sql.SQL("INSERT INTO {} VALUES ({})").format(sql.Identifier(*table), marks)
            with conn.cursor() as cur:
                cur.executemany(insert, rows)
    for sequence, start, last in contents.sequences:
        if last is None:
            conn.execute("SELECT setval(%s, %s, false)", (sequence, start))
        else:
            conn.execute("SELECT setval(%s, %s, true)", (sequence, last))
