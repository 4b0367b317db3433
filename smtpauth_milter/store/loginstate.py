"""The milter's own writes: per-login counts, client addresses and freezes, in batches.

One background thread of each milter (daemon/loginsync.py) calls
:func:`exchange` once per interval: it adds this milter's increments to the
shared buckets and reads back what every milter sharing the store counted,
in one transaction.  These are the only tables the milter writes
(docs/operations.md#the-milters-state-least-privilege).  The CLI's side
(freeze, unfreeze, exempt) is in store/loginedit.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from smtpauth_milter.core.window import BUCKETS
from smtpauth_milter.store.bulk import insert_for, insert_many
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.models import (
    ConsoleAdmin,
    ConsoleAdminDomain,
    DecisionCount,
    LoginClient,
    LoginCount,
    LoginFrozen,
    RefusedCount,
)
from smtpauth_milter.store.sqlite import WRITE

# The only tables a milter writes (docs/operations.md#the-milters-state-least-privilege).
STATE_TABLES = (
    LoginCount.__tablename__,
    LoginClient.__tablename__,
    LoginFrozen.__tablename__,
    DecisionCount.__tablename__,  # the Dashboard's counts: store/decisioncounts.py
    RefusedCount.__tablename__,
)
# What a milter never needs to read: the console's accounts and their password hashes.
SECRET_TABLES = (ConsoleAdmin.__tablename__, ConsoleAdminDomain.__tablename__)
EXPIRY = "expiry"  # unfrozen_by of a freeze whose login-freeze-duration ran out
KEEP_UNFROZEN = timedelta(days=1)  # an unfrozen row is kept this long, then pruned
CHUNK = 500  # logins per IN (...) of a read-back: well under every database's bind limit


@dataclass(frozen=True)
class Freeze:
    login: str
    cause: str  # the limit's setting name, or "admin"
    count: int
    at: float  # wall-clock seconds
    until: float | None  # None: until unfrozen
    by: str
    reason: str = ""


@dataclass
class Batch:
    """What one milter adds in one interval."""

    counts: dict[tuple[str, str, int, int], int] = field(default_factory=dict)
    clients: set[tuple[str, int, int, str]] = field(default_factory=set)
    freezes: dict[str, Freeze] = field(default_factory=dict)
    # The logins whose site-wide counts this milter reads back with the batch: those it
    # judged since the last exchange, and those it refused for a limit (daemon/logins.py).
    reads: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.counts or self.clients or self.freezes)

    def logins(self) -> set[str]:
        """The logins to read back: those counted in the batch, and ``reads``."""
        return self.reads | {key[0] for key in self.counts} | {key[0] for key in self.clients}


@dataclass(frozen=True)
class FrozenState:
    until: float | None
    unfrozen_by: str | None  # None while frozen (and not expired)
    cause: str = ""
    count: int = 0

    def active(self, now: float) -> bool:
        return self.unfrozen_by is None and (self.until is None or self.until > now)


@dataclass(frozen=True)
class Readback:
    """What every milter counted, as the store has it after this milter's batch."""

    totals: Mapping[tuple[str, str, int], int]  # (login, kind, width) -> events in window
    clients: Mapping[tuple[str, int], AbstractSet[str]]  # (login, width) -> client keys
    frozen: Mapping[str, FrozenState]
    logins: frozenset[str] | None = None  # whose counts were read (None: every login's)


def grants(role: str, database: str) -> list[str]:
    """The PostgreSQL statements that let ``role`` read every table but the console's
    accounts and write only the milter's state (what operations.md tells an admin to run)."""
    quoted = '"' + role.replace('"', '""') + '"'
    return [
        f'GRANT CONNECT ON DATABASE "{database.replace(chr(34), chr(34) * 2)}" TO {quoted}',
        f"GRANT USAGE ON SCHEMA public TO {quoted}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {quoted}",
        f"REVOKE ALL ON {', '.join(SECRET_TABLES)} FROM {quoted}",
        f"GRANT INSERT, UPDATE, DELETE ON {', '.join(STATE_TABLES)} TO {quoted}",
    ]


@contextlib.contextmanager
def writing(store: Store) -> Iterator[Session]:
    """One write transaction on the login tables.  Unlike ``Store.write`` it does not bump
    the serial: milters read these tables with every exchange, not by reloading the snapshot."""
    engine = store.engine.execution_options(**{WRITE: True})
    with store.errors("write the login state to"), Session(engine) as session, session.begin():
        yield session


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _seconds(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _in_window(width: Any, bucket: Any, now: int) -> Any:
    """bucket >= bucket(now) - 60, as integer arithmetic both databases share (core/window.py)."""
    return (bucket + BUCKETS + 1) * width > now


COUNT_COLUMNS = ("login", "kind", "width", "bucket", "n")  # a Batch's counts, each + its n
CLIENT_COLUMNS = ("login", "width", "bucket", "client")  # a Batch's clients


def _write(session: Session, batch: Batch) -> None:
    insert = insert_for(session)
    if batch.counts:
        table = LoginCount.__table__
        stmt = insert(table)
        upsert = stmt.on_conflict_do_update(
            index_elements=["login", "kind", "width", "bucket"],
            set_={"n": table.c.n + stmt.excluded.n},
        )
        counts = [(*key, n) for key, n in batch.counts.items()]  # COUNT_COLUMNS
        insert_many(session, upsert, COUNT_COLUMNS, counts)
    if batch.clients:
        stmt = insert(LoginClient.__table__).on_conflict_do_nothing()
        insert_many(session, stmt, CLIENT_COLUMNS, list(batch.clients))
    for freeze in batch.freezes.values():
        write_freeze(session, freeze)


def write_freeze(session: Session, freeze: Freeze) -> None:
    """Freeze a login; a login frozen already keeps its first freeze."""
    values = {
        "login": freeze.login,
        "frozen_at": _moment(freeze.at),
        "until": None if freeze.until is None else _moment(freeze.until),
        "cause": freeze.cause[:64],
        "count": freeze.count,
        "reason": freeze.reason,
        "frozen_by": freeze.by[:128],
        "unfrozen_at": None,
        "unfrozen_by": None,
    }
    stmt = insert_for(session)(LoginFrozen).values(**values)
    inactive = or_(
        LoginFrozen.unfrozen_at.is_not(None),
        and_(LoginFrozen.until.is_not(None), LoginFrozen.until <= _moment(freeze.at)),
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["login"],
            set_={key: value for key, value in values.items() if key != "login"},
            where=inactive,
        )
    )


def forget_counts(session: Session, logins: Iterable[str]) -> None:
    """A login unfrozen starts counting afresh (else it would be frozen again at once)."""
    names = list(logins)
    if names:
        session.execute(delete(LoginCount).where(LoginCount.login.in_(names)))
        session.execute(delete(LoginClient).where(LoginClient.login.in_(names)))


def expire(session: Session, now: float) -> list[str]:
    """Unfreeze the logins whose login-freeze-duration ran out; returns them."""
    moment = _moment(now)
    due = list(
        session.scalars(
            select(LoginFrozen.login).where(
                LoginFrozen.unfrozen_at.is_(None),
                LoginFrozen.until.is_not(None),
                LoginFrozen.until <= moment,
            )
        )
    )
    if due:
        session.execute(
            update(LoginFrozen)
            .where(LoginFrozen.login.in_(due), LoginFrozen.unfrozen_at.is_(None))
            .values(unfrozen_at=moment, unfrozen_by=EXPIRY)
        )
        forget_counts(session, due)
    return due


def totals_query(now: int, login: str | None = None) -> Select[str, str, int, int]:
    query = (
        select(LoginCount.login, LoginCount.kind, LoginCount.width, func.sum(LoginCount.n))
        .where(_in_window(LoginCount.width, LoginCount.bucket, now))
        .group_by(LoginCount.login, LoginCount.kind, LoginCount.width)
    )
    return query if login is None else query.where(LoginCount.login == login)


def clients_query(now: int, login: str | None = None) -> Select[str, int, str]:
    query = (
        select(LoginClient.login, LoginClient.width, LoginClient.client)
        .where(_in_window(LoginClient.width, LoginClient.bucket, now))
        .distinct()
    )
    return query if login is None else query.where(LoginClient.login == login)


def read_frozen(session: Session) -> dict[str, FrozenState]:
    rows = session.execute(
        select(
            LoginFrozen.login,
            LoginFrozen.until,
            LoginFrozen.unfrozen_by,
            LoginFrozen.cause,
            LoginFrozen.count,
        )
    )
    return {
        login: FrozenState(_seconds(until), unfrozen_by, cause, count)
        for login, until, unfrozen_by, cause, count in rows
    }


def read(session: Session, now: float, logins: Collection[str] | None = None) -> Readback:
    """Every milter's counts in their windows (only those of ``logins`` when given), and
    every freeze, as the store has them."""
    second = int(now)
    if logins is None:
        parts: list[tuple[Select[str, str, int, int], Select[str, int, str]]] = [
            (totals_query(second), clients_query(second))
        ]
    else:
        names = sorted(logins)
        chunks = [names[i : i + CHUNK] for i in range(0, len(names), CHUNK)]
        parts = [
            (
                totals_query(second).where(LoginCount.login.in_(chunk)),
                clients_query(second).where(LoginClient.login.in_(chunk)),
            )
            for chunk in chunks
        ]
    totals: dict[tuple[str, str, int], int] = {}
    clients: dict[tuple[str, int], set[str]] = {}
    connection = session.connection()  # Core rows: the ORM's row processing costs more here
    for totals_part, clients_part in parts:
        for login, kind, width, n in connection.execute(totals_part).all():
            totals[login, kind, width] = int(n)
        for login, width, client in connection.execute(clients_part).all():
            if (seen := clients.get((login, width))) is None:
                seen = clients[login, width] = set()
            seen.add(client)
    return Readback(
        totals,
        clients,
        read_frozen(session),
        None if logins is None else frozenset(logins),
    )


def exchange(session: Session, batch: Batch, now: float) -> Readback:
    """Write one milter's batch and read back, in one transaction, the site-wide counts of
    the logins in the batch (``Batch.logins``: not the whole site's, 10,000 logins' worth each
    second) and every freeze (few rows)."""
    _write(session, batch)
    expire(session, now)
    return read(session, now, batch.logins())


def prune(session: Session, now: float) -> int:
    """Delete buckets out of every window, and unfrozen rows older than a day."""
    second = int(now)
    removed = 0
    for model in (LoginCount, LoginClient):
        result = session.execute(
            delete(model).where(~_in_window(model.width, model.bucket, second))
        )
        removed += getattr(result, "rowcount", 0) or 0
    session.execute(
        delete(LoginFrozen).where(LoginFrozen.unfrozen_at < _moment(now) - KEEP_UNFROZEN)
    )
    return removed
