"""SQLite stores: a new file made safely, an existing one never created by accident,
and transactions that are real ones (one consistent view per read)."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from smtpauth_milter.store.urls import sqlite_path

WRITE = "smtpauth_write"  # execution option: this transaction writes (BEGIN IMMEDIATE)


def create_file(path: Path) -> None:
    """An empty store file, 0640, in new directories 0750 (whatever the umask)."""
    missing = [parent for parent in path.parents if not parent.exists()]
    for parent in reversed(missing):
        with contextlib.suppress(FileExistsError):
            parent.mkdir(mode=0o750)
            parent.chmod(0o750)
    if not path.exists():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640))


def sqlite_engine(url: URL) -> Engine:
    """An engine without a pool: every read opens the path again, so a store file that
    is replaced, moved or deleted is noticed instead of read from its old inode."""
    path = sqlite_path(url)
    if path is None:
        engine = create_engine(url, connect_args={"timeout": 10}, poolclass=NullPool)
    else:
        engine = create_engine(url, creator=lambda: _open_existing(path), poolclass=NullPool)
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # Let SQLAlchemy's transactions be real ones (pysqlite would not BEGIN
    # before a SELECT, so the statements of one snapshot load could each see
    # a different commit): see _sqlite_begin.
    dbapi_connection.isolation_level = None


def _sqlite_begin(connection: Connection) -> None:
    """BEGIN for reads (one consistent view), BEGIN IMMEDIATE for writes (no lock upgrade race)."""
    writing = connection.get_execution_options().get(WRITE, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if writing else "BEGIN")


def _open_existing(path: Path) -> Any:
    """Open a SQLite file read-write without ever creating it (``mode=rw``).

    A mistyped path or an unmounted volume must not become a new, empty store
    that trusts every sender: SQLite's default would create the file.
    """
    uri = f"file:{quote(str(path), safe='/')}?mode=rw"
    return sqlite3.connect(uri, uri=True, timeout=10, check_same_thread=False)
