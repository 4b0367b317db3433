"""A SQL ownership map: ``sql:/etc/smtpauth-milter/NAME.toml``.

The file holds ``url`` (SQLAlchemy: PostgreSQL via psycopg, SQLite, MySQL or
MariaDB via PyMySQL) and ``query``, plus an optional ``timeout`` in seconds
for one query (never more than what is left of ``sender-login-maps-timeout``).
The key is always a bound parameter (``:sender``; also ``:user`` and
``:domain``, its local part and domain), never text in the SQL.  Like
Postfix's pgsql/mysql tables, a query that uses ``:user`` is not run for an
``@domain`` key and one that uses ``:domain`` is not run for a bare local
part.  The file may hold a password: it must not be readable by others
(mode 0640 or stricter) and nothing here ever prints it.

The file is read and the engine made on first use, on a lookup worker thread:
never on a libmilter thread.  A map replaced by a settings change is disposed
of on a worker too (its pooled connections closed); a lookup that was already
on its way uses a connection of its own, closed at once.

Every step of a lookup is bounded by what is left of its time: taking a
connection from the pool (``pool_timeout``), making a new one (the driver's
connect timeout), checking that a pooled one still answers (a ``SELECT 1``
given half of what is left: a connection whose server froze is cut off and a
new one made with the rest) and each query (the server's statement timeout,
and the :data:`WATCHDOG` that shuts the connection's socket down, or
interrupts SQLite, when the time is up).
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sqlite3
import stat
import threading
import time
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from smtpauth_milter.core.ownermaps import MapSpec
from smtpauth_milter.lookups.keys import Probe
from smtpauth_milter.lookups.postfix import MapError
from smtpauth_milter.lookups.trusted import FileRefused, read_trusted
from smtpauth_milter.lookups.watchdog import Watchdog
from smtpauth_milter.store.failures import first_line
from smtpauth_milter.store.urls import display_url

PARAMETERS = frozenset({"sender", "user", "domain"})
ALLOWED_MODE_BITS = 0o640
# Asked when a map is set or loaded: a key every query shape runs for (:sender, :user,
# :domain), so a URL or query that cannot work shows before mail needs the map.
PROBE = Probe("postmaster@example.invalid", False)
WATCHDOG = Watchdog("sql-map-watchdog")
FRESH = "smtpauth_fresh"  # in a pooled connection's info: made, not yet used


@dataclass(frozen=True)
class SqlConfig:
    url: URL
    query: str
    parameters: frozenset[str]
    timeout: float | None  # one query's limit; None: sender-login-maps-timeout's

    @property
    def display(self) -> str:
        return display_url(self.url)


def read_config(path: str) -> SqlConfig:
    """Read and check a sql: map file; MapError with one line (and no password) otherwise."""
    try:
        raw, st = read_trusted(path)  # run as root: root's file (or the chosen owner's)
    except FileRefused as exc:
        raise MapError(str(exc)) from None
    except OSError as exc:
        raise MapError(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_IMODE(st.st_mode) & ~ALLOWED_MODE_BITS:
        mode = f"{stat.S_IMODE(st.st_mode):04o}"
        raise MapError(f"{path} has mode {mode}: it may hold a password, use 0640 or stricter")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise MapError(f"{path} is not valid TOML: {str(exc).splitlines()[0]}") from None
    unknown = set(data) - {"url", "query", "timeout"}
    if unknown:
        raise MapError(f"{path}: unknown keys {', '.join(sorted(unknown))} (url, query, timeout)")
    url_text, query = data.get("url"), data.get("query")
    if not isinstance(url_text, str) or not isinstance(query, str) or not query.strip():
        raise MapError(f'{path} needs url = "..." and query = "..."')
    try:
        url = make_url(url_text)
    except ArgumentError:
        raise MapError(f"{path}: bad url {display_url(url_text)!r}") from None
    timeout = data.get("timeout")
    if timeout is not None and (not isinstance(timeout, int | float) or not 0 < timeout <= 60):
        raise MapError(f"{path}: timeout must be seconds between 0 and 60")
    names = frozenset(text(query).compile().params)
    if not names or names - PARAMETERS:
        raise MapError(f"{path}: the query's parameters must be among :sender, :user, :domain")
    check_url(path, url)
    return SqlConfig(url, query, names, None if timeout is None else float(timeout))


# The drivers this project installs (extras postgresql and mysql), per backend.
DRIVERS = {"postgresql": "psycopg", "mysql": "pymysql", "sqlite": "pysqlite"}


def check_url(path: str, url: URL) -> None:
    """A URL this project can connect with: a known backend, its driver, a database."""
    backend, driver = url.get_backend_name(), url.get_driver_name()
    wanted = DRIVERS.get(backend)
    shown = display_url(url)
    if wanted is None:
        known = ", ".join(f"{b}+{d}" for b, d in DRIVERS.items())
        raise MapError(f"{path}: url {shown!r}: unknown database kind; use {known}")
    if driver != wanted:
        raise MapError(f"{path}: url {shown!r}: write {backend}+{wanted}://...")
    if not url.database:
        raise MapError(f"{path}: url {shown!r} names no database")


def _connect_args(url: URL, timeout: float) -> dict[str, Any]:
    seconds = max(1, math.ceil(timeout))
    backend = url.get_backend_name()
    if backend == "postgresql":
        return {
            "connect_timeout": seconds,
            "options": f"-c statement_timeout={int(timeout * 1000)}",
            "tcp_user_timeout": int(timeout * 1000),
        }
    if backend == "mysql":
        return {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
    if backend == "sqlite":
        return {"timeout": timeout}
    return {}


def _cut_off(dbapi_connection: Any) -> None:
    """A server that accepted the connection but never answers (or froze): shut the socket
    down under the driver so the waiting call fails at once (statement_timeout needs a
    live server); SQLite is interrupted."""
    fileno = getattr(getattr(dbapi_connection, "pgconn", None), "socket", None)
    sock = getattr(dbapi_connection, "_sock", None)  # PyMySQL
    if isinstance(fileno, int) and fileno >= 0:
        try:
            with socket.socket(fileno=os.dup(fileno)) as duplicate:
                duplicate.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    elif isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    elif isinstance(dbapi_connection, sqlite3.Connection):
        with contextlib.suppress(sqlite3.Error):
            dbapi_connection.interrupt()


@contextmanager
def _until(conn: Connection, at: float) -> Iterator[None]:
    """The block runs on ``conn`` until ``at`` (time.monotonic) at most."""
    with WATCHDOG.guard(at, lambda: _cut_off(conn.connection.dbapi_connection)):
        yield


def _failure(config: SqlConfig, exc: BaseException) -> MapError:
    """One line for any failure of the map's driver, without the password."""
    message = first_line(exc)
    password = config.url.password
    if isinstance(password, str) and password:
        message = message.replace(password, "***")
    return MapError(f"{config.display}: {message}")


def _mark_fresh(_dbapi_connection: Any, record: Any) -> None:
    record.info[FRESH] = True


class SqlMap:
    """One sql: map: its file, read on first use, and one engine for its worker threads.

    ``timeout`` (sender-login-maps-timeout) bounds connecting when the file sets none."""

    def __init__(self, spec: MapSpec, timeout: float) -> None:
        self.spec = spec
        self.timeout = timeout
        self._config: SqlConfig | None = None
        self._engine: Engine | None = None
        self._read_at: int | None = None  # the file's mtime when it was read
        self._disposed = False
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.spec.text

    def _ready(self) -> tuple[SqlConfig, Engine]:
        """The file's settings and the engine, made again whenever the file changed.

        Once disposed of, every call gets an engine without a pool: nothing is kept."""
        with self._lock:
            if self._disposed:
                config = read_config(self.spec.name)
                return config, self._make_engine(config, pooled=False)
            try:
                mtime: int | None = Path(self.spec.name).stat().st_mtime_ns
            except OSError:
                mtime = None
            if mtime != self._read_at or self._config is None or self._engine is None:
                if self._engine is not None:
                    self._engine.dispose()
                self._engine = self._config = self._read_at = None
                config = read_config(self.spec.name)
                self._engine = self._make_engine(config, pooled=True)
                self._config, self._read_at = config, mtime
            return self._config, self._engine

    def _make_engine(self, config: SqlConfig, *, pooled: bool) -> Engine:
        """The engine for ``config``; a URL whose options the driver refuses
        (``?timeout=abc``) is a MapError."""
        try:
            return self._engine_for(config, pooled=pooled)
        except Exception as exc:
            raise _failure(config, exc) from None

    def _engine_for(self, config: SqlConfig, *, pooled: bool) -> Engine:
        timeout = config.timeout or self.timeout
        connect_args = _connect_args(config.url, timeout)
        if not pooled:
            engine = create_engine(config.url, connect_args=connect_args, poolclass=NullPool)
        else:
            engine = create_engine(
                config.url, connect_args=connect_args, pool_size=2, max_overflow=6,
                pool_timeout=timeout, pool_recycle=300,
            )  # fmt: skip
        event.listen(engine, "connect", _mark_fresh)
        return engine

    def first(self, probes: Sequence[Probe], seconds: float) -> tuple[str, str] | None:
        """The first probe the query answers, as ``(key, owners)``; None when none.

        Each query may take the file's ``timeout``, and all of them ``seconds``."""
        end = time.monotonic() + seconds
        config, engine = self._ready()
        try:
            with self._connection(engine, end) as conn:
                for probe in probes:
                    params = _parameters(probe.key, config.parameters)
                    if params is None:
                        continue
                    now = time.monotonic()
                    if now >= end:
                        raise MapError(f"{config.display}: no answer within {seconds:.2g} s")
                    limit = min(end, now + (config.timeout or seconds))
                    with _until(conn, limit):
                        rows = conn.execute(text(config.query), params).all()
                    cells = [str(c) for row in rows for c in row if c is not None and str(c)]
                    if cells:
                        return probe.key, ",".join(cells)
        except MapError:
            raise
        except Exception as exc:  # a driver's, the pool's or a bad URL option's: one line
            raise _failure(config, exc) from None
        return None

    @contextmanager
    def _connection(self, engine: Engine, end: float) -> Iterator[Connection]:
        """A connection that answers: a pooled one is pinged with half of what is left and,
        if it does not answer, dropped for a new one."""
        conn = engine.connect()
        try:
            if not conn.connection.info.pop(FRESH, False) and not self._answers(conn, end):
                conn.invalidate()
                conn.close()
                conn = engine.connect()
                conn.connection.info.pop(FRESH, None)
            yield conn
        finally:
            if self._disposed and not conn.closed:  # replaced meanwhile: keep no connection
                conn.invalidate()
            conn.close()

    @staticmethod
    def _answers(conn: Connection, end: float) -> bool:
        now = time.monotonic()
        try:
            with _until(conn, now + max(0.0, end - now) / 2):
                conn.exec_driver_sql("SELECT 1").all()
            conn.rollback()
        except Exception:  # dead, frozen or cut off: a new connection is made
            return False
        return True

    def dispose(self) -> None:
        """Close the pooled connections for good (run on a lookup worker, or at shutdown)."""
        with self._lock:
            self._disposed = True
            if self._engine is not None:
                self._engine.dispose()
            self._engine = self._config = None


def _parameters(key: str, used: frozenset[str]) -> dict[str, str] | None:
    """The bound values for ``key``; None when Postfix would not run the query for it."""
    user, at, domain = key.rpartition("@")
    if not at:
        user, domain = key, ""
    if "user" in used and not user:
        return None
    if "domain" in used and not domain:
        return None
    values = {"sender": key, "user": user, "domain": domain}
    return {name: values[name] for name in used}
