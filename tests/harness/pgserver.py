"""A real, throwaway PostgreSQL cluster for tests.

``PgServer`` runs ``initdb`` in a private directory, starts the server with
``pg_ctl`` on a free loopback TCP port (its unix socket stays inside that
directory), and removes everything on ``close()``.  Password authentication is
``scram-sha-256`` with the fixed canary password ``CANARY_PASSWORD``: the
canary plugin (tests/support/canary.py) fails the run when it shows up in any
test's output or in any file under the run's basetemp.  Passwords are stored
as SCRAM secrets of ``SCRAM_ITERATIONS`` rounds (:func:`scram_secret`), not
PostgreSQL's 4,096: the same exchange and the same checks, at a
fraction of the client's CPU per connection (a run opens ~3,000).

When the tests run as root, every server command runs as the ``postgres`` OS
user (``initdb`` and ``postgres`` refuse to run as root) and the cluster
directory is owned by that user.

Typical pytest wiring::

    @pytest.fixture(scope="session")
    def pg_server(tmp_path_factory):
        server = PgServer(tmp_path_factory.mktemp("pg"))
        server.start()
        yield server
        server.close()

    @pytest.fixture
    def pg_url(pg_server):
        name = pg_server.new_database_name()
        pg_server.create_database(name)
        yield pg_server.url(name)
        pg_server.drop_database(name)
"""

from __future__ import annotations

import base64
import contextlib
import glob
import hashlib
import hmac
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

import psycopg
from psycopg import sql

from smtpauth_milter.admin.milterproto.transport import free_tcp_port

SERVER_OS_USER = "postgres"
DEFAULT_SUPERUSER = "smtpauth_test"
BINDIR_ENV = "PG_BINDIR"
START_TIMEOUT = 30.0
# PBKDF2 rounds of the test roles' SCRAM secrets.  PostgreSQL hashes a password
# with 4,096 and the client repeats them at every login: ~2.5 ms of CPU here, a
# third of a connection's cost (measured: 6.3 ms per psycopg connect + SELECT 1
# + close with 4,096 rounds, 3.7 ms with 16).  PostgreSQL 16 has a setting for
# it (scram_iterations); any version takes a secret computed here.
SCRAM_ITERATIONS = 16
# sun_path is 108 bytes; keep a margin for "/.s.PGSQL.NNNNN" and the lock file.
MAX_SOCKET_DIR_LEN = 80

SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "max_connections": "60",
    "max_wal_senders": "0",
    "wal_level": "minimal",
    "autovacuum": "off",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_connections": "off",
    "log_disconnections": "off",
}


class PgServerError(RuntimeError):
    """A PostgreSQL command failed; the message carries its output."""


def find_bindir() -> Path:
    """Directory holding initdb/pg_ctl/postgres.

    Order: ``$PG_BINDIR``, ``pg_config --bindir`` (if it has ``initdb``), the
    highest version under ``/usr/lib/postgresql/*/bin``.
    """
    override = os.environ.get(BINDIR_ENV)
    if override:
        return _checked_bindir(Path(override))
    from_pg_config = _bindir_from_pg_config()
    if from_pg_config is not None:
        return from_pg_config
    candidates = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]
    candidates = [p for p in candidates if (p / "initdb").is_file()]
    if not candidates:
        raise PgServerError("PostgreSQL server binaries not found (initdb)")
    return max(candidates, key=_version_key)


def _checked_bindir(path: Path) -> Path:
    if not (path / "initdb").is_file():
        raise PgServerError(f"no initdb in {path}")
    return path


def _bindir_from_pg_config() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config is None:
        return None
    result = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
    path = Path(result.stdout.strip())
    if result.returncode != 0 or not (path / "initdb").is_file():
        return None
    return path


def _version_key(bindir: Path) -> tuple[int, ...]:
    version = bindir.parent.name
    return tuple(int(part) for part in re.findall(r"\d+", version)) or (0,)


# The superuser's password of every test server: the canary that
# tests/support/canary.py looks for in every test's output and every file the
# run leaves under pytest's basetemp.  Seen anywhere, the whole run fails.
CANARY_PASSWORD = "canary-pw-n3ver-printed-4f1c9a7e"


def scram_secret(password: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """The ``SCRAM-SHA-256$...`` secret PostgreSQL stores for ``password``
    (RFC 5803), which ``CREATE ROLE ... PASSWORD`` accepts as it is.

    Printable ASCII only: PostgreSQL normalises other passwords (SASLprep)
    before hashing them, so those are left to it (``hashed_password``)."""
    salt = os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    stored_key = hashlib.sha256(client_key).digest()

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def hashed_password(password: str) -> str:
    """What to give ``PASSWORD``: a cheap SCRAM secret where it is safe, else the password."""
    printable_ascii = password.isascii() and password.isprintable()
    return scram_secret(password) if printable_ascii else password


class SecretUrl(str):
    """A URL whose repr, which pytest shows of a failing test's arguments and
    assertions, has the password masked; as a string it is the URL itself."""

    def __repr__(self) -> str:
        return repr(re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", str(self)))


class PgServer:
    """One private PostgreSQL cluster.  Not thread-safe."""

    host = "127.0.0.1"

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        user: str = DEFAULT_SUPERUSER,
        password: str | None = None,
        bindir: str | os.PathLike[str] | None = None,
        port: int | None = None,
    ) -> None:
        self.user = user
        self.password = password if password is not None else CANARY_PASSWORD
        self.bindir = Path(bindir) if bindir is not None else find_bindir()
        self.port: int | None = port
        self._as_root = os.geteuid() == 0
        self.root_dir = self._make_root_dir(base_dir)
        self.data_dir = self.root_dir / "data"
        self.log_file = self.root_dir / "server.log"
        self.socket_dir = self._make_socket_dir()
        self._initialised = False
        self._running = False
        self._db_counter = 0
        self._finalizer = weakref.finalize(
            self,
            _emergency_cleanup,
            self._pg_ctl_argv("stop", "-m", "immediate"),
            self.data_dir,
            self._extra_dirs(),
        )

    # -- public API -----------------------------------------------------

    @property
    def running(self) -> bool:
        return self._running

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the server (initdb on first use); return once it accepts logins."""
        if self._running:
            return
        if not self._initialised:
            self._initdb()
        attempts = 3 if self.port is None else 1
        for attempt in range(attempts):
            port = self.port if self.port is not None else free_tcp_port(self.host)
            try:
                self._start_on(port, timeout)
            except PgServerError:
                if attempt == attempts - 1 or self.port is not None:
                    raise
                continue
            self.port = port
            return

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` ends open sessions; ``immediate`` is a crash)."""
        if not self._running:
            return
        self._run(self._pg_ctl_argv("stop", "-m", mode, "-w", "-t", str(int(START_TIMEOUT))))
        self._running = False

    def close(self) -> None:
        """Stop the server and delete the cluster and all its files."""
        with contextlib.suppress(PgServerError):
            self.stop("immediate")
        self._finalizer.detach()
        for path in (self.root_dir, *self._extra_dirs()):
            shutil.rmtree(path, ignore_errors=True)

    def url(
        self,
        dbname: str,
        *,
        user: str | None = None,
        password: str | None = None,
        driver: str = "postgresql+psycopg",
    ) -> str:
        """SQLAlchemy URL; user and password (default: the superuser's) URL-quoted."""
        user_part = quote(user if user is not None else self.user, safe="")
        password_part = quote(password if password is not None else self.password, safe="")
        host = f"{self.host}:{self._port()}"
        return SecretUrl(f"{driver}://{user_part}:{password_part}@{host}/{quote(dbname, safe='')}")

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string (for plain psycopg)."""
        return psycopg.conninfo.make_conninfo("", **self.connect_kwargs(dbname))

    def connect_kwargs(self, dbname: str = "postgres") -> dict[str, str | int]:
        return {
            "host": self.host,
            "port": self._port(),
            "user": self.user,
            "password": self.password,
            "dbname": dbname,
            "connect_timeout": 5,
        }

    def connect(self, dbname: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        """A new autocommit psycopg connection; the caller closes it."""
        return psycopg.connect(autocommit=True, **self.connect_kwargs(dbname))  # type: ignore[arg-type]

    def new_database_name(self, prefix: str = "test") -> str:
        self._db_counter += 1
        return f"{prefix}_{os.getpid()}_{self._db_counter}"

    def create_database(self, name: str, template: str = "template0") -> None:
        """A UTF-8 database copied from ``template`` (default: an empty one)."""
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {} ENCODING 'UTF8'").format(
            sql.Identifier(name), sql.Identifier(template)
        )
        with self.connect() as conn:
            if conn.info.server_version >= 150000:
                # With fsync off, a file copy beats PG 15's default WAL_LOG copy 2-6x.
                statement = sql.SQL("{} STRATEGY FILE_COPY").format(statement)
            conn.execute(statement)

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting anyone still using it."""
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        self._execute_admin(statement)

    def create_user(self, name: str, password: str, *, owns: str | None = None) -> None:
        """A login role (not superuser); ``owns`` makes it the owner of that database."""
        self._execute_admin(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(hashed_password(password))
            )
        )
        if owns is not None:
            self._execute_admin(
                sql.SQL("ALTER DATABASE {} OWNER TO {}").format(
                    sql.Identifier(owns), sql.Identifier(name)
                )
            )

    def drop_user(self, name: str) -> None:
        self._execute_admin(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def __enter__(self) -> PgServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- directories and ownership ---------------------------------------

    def _make_root_dir(self, base_dir: str | os.PathLike[str] | None) -> Path:
        parent = Path(base_dir) if base_dir is not None else None
        if parent is not None:
            parent.mkdir(parents=True, exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix="pgserver-", dir=parent))
        if self._as_root and not self._server_user_can_enter(root):
            # e.g. pytest's tmp dirs are 0700 root: postgres cannot traverse them.
            shutil.rmtree(root)
            root = Path(tempfile.mkdtemp(prefix="pgserver-"))
        self._give_to_server_user(root)
        return root

    def _make_socket_dir(self) -> Path:
        socket_dir = self.root_dir / "sock"
        if len(str(socket_dir)) > MAX_SOCKET_DIR_LEN:
            socket_dir = Path(tempfile.mkdtemp(prefix="pgsock-"))
        else:
            socket_dir.mkdir()
        self._give_to_server_user(socket_dir)
        return socket_dir

    def _extra_dirs(self) -> tuple[Path, ...]:
        if self.socket_dir.parent == self.root_dir:
            return ()
        return (self.socket_dir,)

    def _server_user_can_enter(self, path: Path) -> bool:
        probe = subprocess.run(
            [*self._as_server_user(), "test", "-x", str(path)],
            capture_output=True,
            check=False,
            cwd="/",
        )
        return probe.returncode == 0

    def _give_to_server_user(self, path: Path) -> None:
        path.chmod(0o700)
        if self._as_root:
            entry = pwd.getpwnam(SERVER_OS_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    # -- server commands ---------------------------------------------------

    def _as_server_user(self) -> list[str]:
        return ["runuser", "-u", SERVER_OS_USER, "--"] if self._as_root else []

    def _pg_ctl_argv(self, *args: str) -> list[str]:
        return [
            *self._as_server_user(),
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            *args,
        ]

    def _run(self, argv: Sequence[str]) -> str:
        result = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root_dir,
            env=self._server_env(),
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise PgServerError(
                f"{Path(argv[len(self._as_server_user())]).name} failed "
                f"(exit {result.returncode}): {output}\n--- server log ---\n{self.log_text()}"
            )
        return result.stdout

    def _server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        env["TZ"] = "UTC"
        return env

    def _initdb(self) -> None:
        password_file = self.root_dir / "pwfile"
        password_file.write_text(hashed_password(self.password) + "\n")
        self._give_to_server_user(password_file)
        password_file.chmod(0o600)
        try:
            self._run(
                [
                    *self._as_server_user(),
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    self.user,
                    "-A",
                    "scram-sha-256",
                    f"--pwfile={password_file}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ]
            )
        finally:
            password_file.unlink()
        self._write_settings()
        self._initialised = True

    def _write_settings(self) -> None:
        settings = {**SERVER_SETTINGS, "unix_socket_directories": f"'{self.socket_dir}'"}
        lines = [f"{key} = {value}" for key, value in settings.items()]
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# added by tests/harness/pgserver.py\n" + "\n".join(lines) + "\n")

    def _start_on(self, port: int, timeout: float) -> None:
        self._run(
            self._pg_ctl_argv(
                "start",
                "-w",
                "-t",
                str(int(timeout)),
                "-l",
                str(self.log_file),
                "-o",
                f"-p {port}",
            )
        )
        self._running = True
        self.port = port
        try:
            self._wait_for_login(timeout)
        except PgServerError:
            self.stop("immediate")
            raise

    def _wait_for_login(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with self.connect() as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PgServerError(f"server did not accept logins: {exc}") from exc
            time.sleep(0.05)

    def _execute_admin(self, statement: sql.Composed) -> None:
        with self.connect() as conn:
            conn.execute(statement)

    def _port(self) -> int:
        if self.port is None:
            raise PgServerError("server was never started: no port yet")
        return self.port


def _emergency_cleanup(stop_argv: list[str], data_dir: Path, extra_dirs: tuple[Path, ...]) -> None:
    """Last resort when a PgServer is garbage-collected or the interpreter exits."""
    if (data_dir / "postmaster.pid").exists():
        subprocess.run(stop_argv, capture_output=True, check=False, cwd="/")
    shutil.rmtree(data_dir.parent, ignore_errors=True)
    for path in extra_dirs:
        shutil.rmtree(path, ignore_errors=True)
