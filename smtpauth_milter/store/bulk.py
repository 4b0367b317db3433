"""Many rows in one INSERT ... ON CONFLICT: the milter's batched writes (its login counts,
client addresses and decision counts), thousands of rows a second."""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

# Each statement as its driver runs it, per (table, columns, database): see insert_many.
_COMPILED: dict[tuple[str, tuple[str, ...], str], tuple[str, tuple[int, ...] | None]] = {}


def insert_for(session: Session) -> Any:
    """INSERT ... ON CONFLICT for the session's database (SQLite or PostgreSQL)."""
    return (postgresql if session.get_bind().dialect.name == "postgresql" else sqlite).insert


def insert_many(
    session: Session, stmt: Any, columns: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> None:
    """``stmt`` (an INSERT on one table, from :func:`insert_for`) for every row, each
    row's values in ``columns`` order: compiled once per database and handed to the
    driver's executemany, the values as bound parameters.  SQLAlchemy's per-row
    processing (the ORM's bulk path, or Core's) cost more than the database's work
    (bench/flush_cost.py)."""
    connection = session.connection()
    key = (stmt.table.name, columns, connection.dialect.name)
    found = _COMPILED.get(key)
    if found is None:
        compiled = stmt.compile(dialect=connection.dialect, column_keys=list(columns))
        order = None  # named parameters
        if compiled.positional:
            order = tuple(columns.index(name) for name in compiled.positiontup or ())
        found = _COMPILED[key] = (str(compiled), order)
    sql, order = found
    if order is None:
        params: list[Any] = [dict(zip(columns, row, strict=True)) for row in rows]
    elif order == tuple(range(len(columns))):
        params = rows
    else:
        params = [tuple(row[i] for i in order) for row in rows]
    connection.exec_driver_sql(sql, params)
