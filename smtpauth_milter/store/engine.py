"""The store: engine, schema migrations run in code, snapshot reads, write transactions."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, create_engine, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, configure_mappers

from smtpauth_milter.core.errors import SchemaError, SmtpauthError, StoreError, StoreMissing
from smtpauth_milter.core.networks import NetworkSet, parse_cidr
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.store import schema
from smtpauth_milter.store.deadline import PG_CONNECT_ARGS, READ_DEADLINE, ReadDeadline
from smtpauth_milter.store.editing import domain_aliases
from smtpauth_milter.store.failures import first_line, store_failures
from smtpauth_milter.store.models import (
    Domain,
    DomainSetting,
    GlobalSetting,
    LoginExempt,
    SendAsGrant,
    StoreState,
    TrustedNetwork,
)
from smtpauth_milter.store.sqlite import WRITE, create_file, sqlite_engine
from smtpauth_milter.store.urls import (
    display_url,
    is_missing,
    mask_secrets,
    sqlite_path,
    url_secrets,
)

if TYPE_CHECKING:
    from alembic.config import Config

INIT_HINT = "create it with `smtpauth-milter db init`"


def _script_location() -> str:
    """The migrations directory: inside the installed package, or the source checkout's."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "migrations", package.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return str(candidate)
    raise StoreError("the schema migrations are missing from this installation")


@functools.cache
def _shipped_migrations() -> schema.Migrations:
    """This version's own revisions: read once per process (~3 ms per read), however
    many stores a command or test opens."""
    return schema.Migrations.load(_script_location())


class Store:
    """One database. All methods raise :class:`StoreError` with one clear line.

    Nothing here creates a store as a side effect: only :meth:`create` does.
    """

    def __init__(self, url: str, migrations: str | None = None, *, serving: bool = False) -> None:
        """``migrations``: another migrations directory than this version's (tests).
        ``serving``: the milter's store, read by the refresh thread (see store/deadline.py)."""
        self._migrations_location = migrations
        try:
            self.url = make_url(url)
        except ArgumentError as exc:
            raise StoreError(f"bad database URL {display_url(url)!r}") from exc
        self.display = display_url(self.url)
        self.secrets = url_secrets(self.url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        with self.errors("open"):
            self.engine = self._create_engine()
        self._deadline: ReadDeadline | None = None
        if serving and self.url.get_backend_name() == "postgresql":
            self._deadline = ReadDeadline(READ_DEADLINE)
            self._deadline.watch(self.engine)

    def _create_engine(self) -> Engine:
        if self.is_sqlite:
            return sqlite_engine(self.url)
        connect_args = PG_CONNECT_ARGS if self.url.get_backend_name() == "postgresql" else {}
        return create_engine(self.url, pool_pre_ping=True, connect_args=connect_args)

    @contextlib.contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn driver and OS errors into one StoreError line without the password."""
        try:
            yield
        except SmtpauthError:
            raise
        except store_failures() as exc:
            path = sqlite_path(self.url)
            if path is not None and is_missing(path):
                raise StoreMissing(f"no store at {path} ({INIT_HINT})") from exc
            message = f"cannot {doing} the store {self.display}: {first_line(exc)}"
            raise StoreError(mask_secrets(message, self.secrets)) from exc

    def dispose(self) -> None:
        self.engine.dispose()

    def read_deadline(self) -> contextlib.AbstractContextManager[None]:
        """Bounds one poll of the milter's refresh thread (PostgreSQL); a no-op otherwise."""
        return self._deadline() if self._deadline is not None else contextlib.nullcontext()

    # --- schema -----------------------------------------------------------

    @functools.cached_property
    def migrations(self) -> schema.Migrations:
        """This version's revisions, read once: a package upgrade under a running
        milter does not change what it knows."""
        with self.errors("read the migrations for"):
            if self._migrations_location is None:
                return _shipped_migrations()
            return schema.Migrations.load(self._migrations_location)

    def warm(self) -> None:
        """What a process reading this store does once, done now and without a connection
        (the supervisor, before it forks each milter child): the ORM's mappers configured
        and this version's schema revisions read.  A failure is left to the reader."""
        configure_mappers()
        with contextlib.suppress(StoreError):
            _ = self.migrations

    def _alembic(self, connection: Connection) -> Config:
        from alembic.config import Config  # only to migrate: see store_failures (store/failures.py)

        config = Config(stdout=io.StringIO())
        config.set_main_option("script_location", self.migrations.location)
        config.attributes["connection"] = connection
        return config

    def head(self) -> str:
        return self.migrations.head

    def current(self) -> str | None:
        with self.errors("read"), self.engine.connect() as conn:
            return schema.current_revision(conn)

    def rule(self) -> schema.Rule | None:
        """The store's own record of which versions can read it (None before 0003)."""
        with self.errors("read"), self.engine.connect() as conn:
            return schema.read_rule(conn)

    @contextlib.contextmanager
    def _migrating(self) -> Iterator[Connection]:
        """One transaction for a migration.

        On SQLite, foreign keys are off while it runs, as SQLite's own
        table-rebuild procedure demands: a batch migration drops and recreates
        a table, and dropping ``domain`` with foreign keys on would cascade into
        ``domain_setting``.  Every reference is checked before the commit.
        It is a write transaction from its BEGIN (IMMEDIATE on SQLite): a migration
        reads before it writes, and a read lock upgraded while a milter writes its
        login counts would fail at once ("database is locked") instead of waiting.
        """
        with self.engine.execution_options(**{WRITE: True}).connect() as conn:
            driver = conn.connection.driver_connection
            if self.is_sqlite and driver is not None:  # before BEGIN: SQLite ignores it inside
                driver.execute("PRAGMA foreign_keys=OFF")
            with conn.begin():
                yield conn
                if self.is_sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise StoreError(f"the migration broke references: {broken[:3]}")

    def upgrade(self, revision: str = "head") -> None:
        from alembic import command

        with self.errors("upgrade"), self._migrating() as conn:
            current = schema.current_revision(conn)
            if self.is_newer(current):
                raise SchemaError(
                    f"the store {self.display} is at schema {current}, newer than this version "
                    f"knows: {schema.NEWER_HINT}"
                )
            command.upgrade(self._alembic(conn), revision)
            self._migrated(conn)

    def downgrade(self, revision: str) -> None:
        from alembic import command

        with self.errors("downgrade"), self._migrating() as conn:
            command.downgrade(self._alembic(conn), revision)
            self._migrated(conn)

    def _migrated(self, conn: Connection) -> None:
        """In the migration's transaction: record the new revision's rule and bump the
        serial, so running milters reload and check the schema they now read."""
        schema.record_rule(conn, self.migrations)
        if conn.dialect.has_table(conn, StoreState.__tablename__):
            conn.execute(
                update(StoreState).where(StoreState.id == 1).values(serial=StoreState.serial + 1)
            )

    def drift(self) -> str | None:
        """None when the models and the migrated schema agree, else alembic's report."""
        from alembic import command
        from alembic.util.exc import AutogenerateDiffsDetected

        with self.errors("check"), self.engine.connect() as conn:
            try:
                command.check(self._alembic(conn))
            except AutogenerateDiffsDetected as exc:
                return str(exc)
        return None

    def create(self) -> bool:
        """Create the store if it is missing and give it the schema if it has none.

        A new SQLite file is 0640 in 0750 directories; a PostgreSQL database must
        exist already.  A store with a schema is left as it is.  True when the
        schema was created now.
        """
        path = sqlite_path(self.url)
        if path is not None:
            with self.errors("create"):
                create_file(path)
        if self.current() is None and self._is_empty():
            self.upgrade()
            return True
        return False

    def prepare(self, *, exact: bool = False) -> None:
        """Refuse a store without a schema, or one this version may not read (or,
        ``exact``, one not at its head): see :mod:`smtpauth_milter.store.schema`."""
        self.check_schema(exact=exact)

    def check_schema(self, *, exact: bool = False) -> None:
        """Raise SchemaError unless this version may read the store (``exact``: change it)."""
        with self.errors("read"), self.engine.connect() as conn:
            schema.check(conn, self.migrations, self.display, exact=exact)

    def is_newer(self, revision: str | None) -> bool:
        """A revision this version does not know: one a newer version migrated to."""
        return revision is not None and revision not in self.migrations.rules

    def _is_empty(self) -> bool:
        with self.errors("read"), self.engine.connect() as conn:
            return not conn.dialect.get_table_names(conn)

    # --- reads and writes -------------------------------------------------

    def serial(self) -> int:
        with self.errors("read"), Session(self.engine) as session:
            return session.scalar(select(StoreState.serial).where(StoreState.id == 1)) or 0

    def _reader(self) -> Engine:
        """Reads in one transaction that sees one commit (REPEATABLE READ on PostgreSQL)."""
        if self.is_sqlite:
            return self.engine
        return self.engine.execution_options(isolation_level="REPEATABLE READ")

    def load_snapshot(self) -> Snapshot:
        """Everything the policy needs, read in one transaction, so from one commit."""
        with self.errors("read"), Session(self._reader()) as session:
            # In the same transaction: a schema upgraded under a running milter is
            # noticed with the snapshot it would have changed.
            schema.check(session.connection(), self.migrations, self.display, exact=False)
            serial = session.scalar(select(StoreState.serial).where(StoreState.id == 1)) or 0
            global_values = dict(
                session.execute(select(GlobalSetting.key, GlobalSetting.value)).all()
            )
            domains: dict[str, dict[str, str]] = {
                name: {} for name in session.scalars(select(Domain.name))
            }
            rows = session.execute(
                select(Domain.name, DomainSetting.key, DomainSetting.value).join(
                    DomainSetting.domain
                )
            )
            for name, key, value in rows:
                domains.setdefault(name, {})[key] = value
            networks = NetworkSet.of(
                parse_cidr(cidr) for cidr in session.scalars(select(TrustedNetwork.cidr))
            )
            grants = list(session.execute(select(SendAsGrant.login, SendAsGrant.target)))
            aliases = domain_aliases(session)
            exempt = frozenset(session.scalars(select(LoginExempt.login)))
        snapshot = Snapshot.build(global_values, domains, networks, grants, serial, aliases)
        return dataclasses.replace(snapshot, exempt_logins=exempt)

    @contextlib.contextmanager
    def write(self, doing: str = "write to") -> Iterator[Session]:
        """One transaction; bumps the serial so running milters reload within seconds."""
        engine = self.engine.execution_options(**{WRITE: True})
        with self.errors(doing), Session(engine) as session, session.begin():
            yield session
            bumped = session.execute(
                update(StoreState).where(StoreState.id == 1).values(serial=StoreState.serial + 1)
            )
            if getattr(bumped, "rowcount", 1) == 0:
                session.add(StoreState(id=1, serial=1))

    @contextlib.contextmanager
    def read(self) -> Iterator[Session]:
        with self.errors("read"), Session(self.engine) as session:
            yield session
