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
"""

from __future__ import annotations

import math
import os
import socket
import stat
import threading
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from smtpauth_milter.core.ownermaps import MapSpec
from smtpauth_milter.lookups.keys import Probe
from smtpauth_milter.lookups.postfix import MapError
from smtpauth_milter.store.failures import first_line
from smtpauth_milter.store.urls import display_url

PARAMETERS = frozenset({"sender", "user", "domain"})
ALLOWED_MODE_BITS = 0o640


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
        st = Path(path).stat()
        raw = Path(path).read_bytes()
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
    """A server that accepted the connection but never answers: close the socket under
    the driver so the waiting call fails (statement_timeout needs a live server)."""
    fileno = getattr(getattr(dbapi_connection, "pgconn", None), "socket", None)
    if isinstance(fileno, int) and fileno >= 0:
        try:
            with socket.socket(fileno=os.dup(fileno)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


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
                return config, self._engine_for(config, pooled=False)
            try:
                mtime: int | None = Path(self.spec.name).stat().st_mtime_ns
            except OSError:
                mtime = None
            if mtime != self._read_at or self._config is None or self._engine is None:
                if self._engine is not None:
                    self._engine.dispose()
                self._engine = self._config = self._read_at = None
                config = read_config(self.spec.name)
                self._engine = self._engine_for(config, pooled=True)
                self._config, self._read_at = config, mtime
            return self._config, self._engine

    def _engine_for(self, config: SqlConfig, *, pooled: bool) -> Engine:
        connect_args = _connect_args(config.url, config.timeout or self.timeout)
        if not pooled:
            return create_engine(config.url, connect_args=connect_args, poolclass=NullPool)
        return create_engine(
            config.url, connect_args=connect_args, pool_size=2, max_overflow=2,
            pool_pre_ping=True, pool_recycle=300,
        )  # fmt: skip

    def first(self, probes: Sequence[Probe], seconds: float) -> tuple[str, str] | None:
        """The first probe the query answers, as ``(key, owners)``; None when none.

        Each query may take the file's ``timeout``, and all of them ``seconds``."""
        end = time.monotonic() + seconds
        config, engine = self._ready()
        try:
            with engine.connect() as conn:
                for probe in probes:
                    params = _parameters(probe.key, config.parameters)
                    if params is None:
                        continue
                    left = end - time.monotonic()
                    if left <= 0:
                        raise MapError(f"{config.display}: no answer within {seconds:.2g} s")
                    limit = min(left, config.timeout or left)
                    watchdog = threading.Timer(limit, _cut_off, [conn.connection])
                    watchdog.start()
                    try:
                        rows = conn.execute(text(config.query), params).all()
                    finally:
                        watchdog.cancel()
                    cells = [str(c) for row in rows for c in row if c is not None and str(c)]
                    if cells:
                        return probe.key, ",".join(cells)
        except (SQLAlchemyError, OSError, ImportError) as exc:
            message = first_line(exc)
            password = config.url.password
            if isinstance(password, str) and password:
                message = message.replace(password, "***")
            raise MapError(f"{config.display}: {message}") from None
        return None

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
