"""Shared fixtures: a real store (SQLite file; PostgreSQL where marked) and the CLI."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.daemon.config import CONFIG_DEFAULT_ENV
from smtpauth_milter.store.engine import Store
from tests.harness.pgrecycle import RecycledDatabases
from tests.harness.pgserver import PgServer
from tests.slowfirst import slow_first

pytest_plugins = ("pytester", "tests.support.canary")

# Cache bytecode even where the image sets PYTHONDONTWRITEBYTECODE: each worker
# would compile and assert-rewrite every test module again (~3 s of CPU) and each
# milter or CLI process the run starts would compile the package again
# (docs/internals.md#tests-benchmarks-and-the-soak).  Test modules are imported
# after this line; the processes started later inherit the environment.
sys.dont_write_bytecode = False
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

# Tests never read the real /etc/smtpauth-milter/smtpauth-milter.toml: every
# command (in process or started by a test) looks for its default config here.
# The helpers that clean SMTPAUTH_MILTER_* from a child's environment keep it.
os.environ[CONFIG_DEFAULT_ENV] = "/nonexistent/smtpauth-milter-tests/default.toml"


@pytest.fixture(autouse=True)
def daemon_logger_restored() -> Iterator[None]:
    """Each test finds the ``smtpauth_milter`` logger as the run began: a ``run`` called
    in process (bad input) configures it (own handler, level, no propagation), and
    a later test in the same worker must not depend on whether that happened."""
    logger = logging.getLogger("smtpauth_milter")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: two workers per core.  Most of a test's time is spent waiting
    for Postfix, PostgreSQL or a milter process; beyond two per core the workers
    only compete for the CPU (2 cores, ``--dist worksteal``, measured when the
    suite took 167 s: 3 workers 200 s, 4 workers 167 s, 5 workers 188 s, 6 workers
    194 s)."""
    return 2 * (os.cpu_count() or 1)


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: the shares are of what runs
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each slow module at the head of its own worker's share (tests/slowfirst.py)."""
    workers = int(getattr(config, "workerinput", {}).get("workercount", 1))
    items[:] = slow_first(items, lambda item: item.nodeid, workers)


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


CliRunner = Callable[..., CliResult]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'store.sqlite'}"


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """One real PostgreSQL server for the whole run, started on first use."""
    server = PgServer(tmp_path_factory.mktemp("pg"))
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def own_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """A PostgreSQL server of the module's own, for tests that stop it (an outage)."""
    server = PgServer(tmp_path_factory.mktemp("pg-own"))
    server.start()
    yield server
    server.close()


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = pg_server.new_database_name()
    pg_server.create_database(name)
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture(scope="session")
def sqlite_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store as `smtpauth-milter db init` makes it, to copy for each test."""
    path = tmp_path_factory.mktemp("template") / "store.sqlite"
    create_store(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_store_template(pg_server: PgServer) -> str:
    """One PostgreSQL store as `smtpauth-milter db init` makes it, to copy for each test."""
    name = pg_server.new_database_name("template")
    pg_server.create_database(name)
    create_store(pg_server.url(name))
    return name


@pytest.fixture(scope="session")
def pg_store_databases(pg_server: PgServer, pg_store_template: str) -> RecycledDatabases:
    """Copies of the template for this worker (they go with the server at the end)."""
    return RecycledDatabases(pg_server, pg_store_template)


@pytest.fixture
def pg_store_url(pg_server: PgServer, pg_store_databases: RecycledDatabases) -> Iterator[str]:
    """A PostgreSQL store for one test, holding exactly what `db init` made: a copy of
    the template, reset after the test (or dropped when it changed more than rows)."""
    name = pg_store_databases.take()
    yield pg_server.url(name)
    pg_store_databases.give_back(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """The store every store-touching test runs against: SQLite and PostgreSQL.

    Created explicitly, as an admin does with `smtpauth-milter db init`:
    nothing creates a store just by opening it.  Running the migrations for
    every test would cost 25-100 ms each, so each test gets a copy of a store
    created once per session; tests/store/test_migrations.py runs every
    migration down and back up on both.
    """
    if request.param == "postgresql":
        url: str = request.getfixturevalue("pg_store_url")
        return url
    copy_sqlite_store(request.getfixturevalue("sqlite_store_template"), sqlite_url)
    return sqlite_url


def copy_sqlite_store(template: Path, url: str) -> None:
    """The template's bytes at ``url``'s path, with the modes `db init` gives (0750 dirs, 0640)."""
    path = Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(mode=0o750, parents=True)
    shutil.copyfile(template, path)
    path.chmod(0o640)


def create_store(url: str) -> None:
    """What `smtpauth-milter db init` does: the store, with this version's schema."""
    store = Store(url)
    try:
        store.create()
    finally:
        store.dispose()


@pytest.fixture
def cli(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> CliRunner:
    """Run ``smtpauth-milter --db URL ARGS...`` in process; returns code, stdout, stderr."""
    monkeypatch.delenv("SMTPAUTH_MILTER_DB", raising=False)
    monkeypatch.delenv("SMTPAUTH_MILTER_CONFIG", raising=False)

    def invoke(*args: str, db: str | None = db_url) -> CliResult:
        prefix = ["--db", db] if db is not None else []
        return run_captured(capsys, [*prefix, *args])

    return invoke


def run_captured(capsys: pytest.CaptureFixture[str], args: Sequence[str]) -> CliResult:
    """``smtpauth-milter ARGS...`` in this process: its exit status and what it printed."""
    capsys.readouterr()
    code = run_cli(list(args))
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)
