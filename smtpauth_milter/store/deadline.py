"""Bounded reads for the milter's PostgreSQL connections: server timeouts, a client-side deadline.

A PostgreSQL that hangs must not stall the milter's refresh thread for
minutes.  Three layers, each for a different hang:

- ``statement_timeout`` and ``lock_timeout`` (set per session, so any role may
  set them): a slow query, or a lock held on a settings table;
- TCP keepalives and ``tcp_user_timeout`` (libpq options): a dead host or
  network;
- :class:`ReadDeadline`: something in between (a hung PgBouncer, HAProxy or
  NAT box) that keeps acknowledging packets but never answers defeats both
  of the above.  A watchdog thread shuts the connection's socket down when
  one whole poll overruns; the blocked read fails at once, SQLAlchemy drops
  the connection, and the next poll connects anew.

Each connection's socket is duplicated when it is made and the duplicate is
what the watchdog shuts down, so it can never hit a file descriptor number the
process has reused for something else.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Engine, event

from smtpauth_milter.core.errors import StoreError

CONNECT_TIMEOUT = 5  # seconds, libpq
MIN_CONNECT_TIMEOUT = 2  # libpq treats anything lower as 2
STATEMENT_TIMEOUT_MS = 2000
LOCK_TIMEOUT_MS = 1000
READ_DEADLINE = 5.0  # seconds for one whole poll: above statement_timeout, below anything slow

# libpq keys, passed through by psycopg; ignored on unix-socket connections. And one of
# psycopg's own: no server-side prepared statements.  psycopg prepares a query after its
# 5th run, and PostgreSQL may then plan it once for any parameters: the login-sync
# read-back's `login IN (...)` of 500 logins became a sequential scan comparing every
# row with each of them (over 1 s at 100,000 logins, past statement_timeout, so every
# exchange failed: bench/login_scale.py --pg).  PgBouncer's transaction pooling refuses
# them too.
PG_CONNECT_ARGS: dict[str, Any] = {
    "prepare_threshold": None,
    "connect_timeout": CONNECT_TIMEOUT,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,  # ms of unacknowledged data before the kernel gives up
}


def _session_timeouts(dbapi_connection: Any, _record: Any) -> None:
    """SET, not the ``options`` startup parameter: PgBouncer refuses that one."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
        cursor.execute(f"SET lock_timeout = {LOCK_TIMEOUT_MS}")
    finally:
        cursor.close()
    dbapi_connection.commit()


class ReadDeadline:
    """``with deadline():`` around one poll; overrunning it closes the engine's sockets."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._cond = threading.Condition()
        self._sockets: dict[int, socket.socket] = {}
        self._expires: float | None = None
        self._fired = False
        self._thread: threading.Thread | None = None

    def watch(self, engine: Engine) -> None:
        """Track every connection ``engine`` makes; set the session timeouts on each."""
        event.listen(engine, "do_connect", self._connecting)
        event.listen(engine, "connect", _session_timeouts)
        event.listen(engine, "connect", self._connected)
        event.listen(engine, "close", self._closed)
        event.listen(engine, "close_detached", self._closed)

    def _connecting(self, _dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        """A connection made during a poll gets no more time than the poll has left."""
        with self._cond:
            if self._fired:
                raise StoreError(f"the store did not answer within {self.seconds:g}s")
            if self._expires is None:
                return
            left = self._expires - self._clock()
        # libpq counts whole seconds and takes at least 2
        params["connect_timeout"] = max(MIN_CONNECT_TIMEOUT, min(CONNECT_TIMEOUT, math.ceil(left)))

    def _connected(self, dbapi_connection: Any, _record: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", dbapi_connection)
        pgconn = getattr(driver, "pgconn", None)
        if pgconn is None:  # not psycopg 3: server-side timeouts only
            return
        duplicate = socket.socket(fileno=os.dup(pgconn.socket))
        key = id(dbapi_connection)
        with self._cond:
            self._sockets[key] = duplicate
        weakref.finalize(dbapi_connection, self._forget, key)

    def _closed(self, dbapi_connection: Any, *_args: Any) -> None:
        self._forget(id(dbapi_connection))

    def _forget(self, key: int) -> None:
        with self._cond:
            duplicate = self._sockets.pop(key, None)
        if duplicate is not None:
            duplicate.close()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._cond:
            self._expires = self._clock() + self.seconds
            self._fired = False
            if self._thread is None:  # started on first use: in the process that reads
                self._thread = threading.Thread(
                    target=self._watch, name="store-deadline", daemon=True
                )
                self._thread.start()
            self._cond.notify()
        try:
            yield
        except Exception as exc:
            if self._fired:
                raise StoreError(
                    f"the store did not answer within {self.seconds:g}s: connection closed"
                ) from exc
            raise
        finally:
            with self._cond:
                self._expires = None
                self._cond.notify()

    def _watch(self) -> None:
        with self._cond:
            while True:
                if self._expires is None:
                    self._cond.wait()
                    continue
                left = self._expires - self._clock()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._expires = None
                self._fired = True
                for duplicate in self._sockets.values():
                    with contextlib.suppress(OSError):
                        duplicate.shutdown(socket.SHUT_RDWR)
