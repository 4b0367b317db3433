"""A real, throwaway MariaDB (or MySQL-compatible) server for tests.

``MariaDbServer`` runs ``mariadb-install-db`` in a private directory, starts
``mariadbd`` on a free loopback TCP port with its unix socket inside that
directory, waits (with a deadline) until root can log in through the socket,
and on ``close()`` stops the server it started and removes every file.  The
system's ``/etc/mysql`` is never read (``--no-defaults``) and no system
service is involved.  Root has no password and logs in through the socket
only; tests create a user with a password for TCP clients
(:meth:`create_user`), as a mail system's database would have.

When the tests run as root the server runs as the ``mysql`` OS user (it
refuses root), so the directory must be traversable by that user: pytest's
0700 temp directories are not, and a directory under ``/tmp`` is used then.

Typical pytest wiring::

    @pytest.fixture(scope="module")
    def mariadb(tmp_path_factory):
        with MariaDbServer(tmp_path_factory.mktemp("mariadb")) as server:
            yield server
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pymysql
from pymysql.connections import Connection

from smtpauth_milter.admin.milterproto.transport import free_tcp_port

HOST = "127.0.0.1"
SERVER_OS_USER = "mysql"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
MAX_SOCKET_LEN = 100  # sun_path is 108 bytes
# Exact, case-sensitive comparison of UTF-8 text, as PostgreSQL's default.
CHARSET = "utf8mb4"
COLLATION = "utf8mb4_bin"


class MariaDbError(RuntimeError):
    """The server could not be set up or started; the message carries its log."""


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise MariaDbError(f"{name} not found: install mariadb-server (scripts/test does)")
    return found


class MariaDbServer:
    """One private server; not thread-safe.  ``started_in``: seconds install + start took."""

    def __init__(self, base_dir: Path) -> None:
        self._as_root = os.geteuid() == 0
        self.root_dir = Path(tempfile.mkdtemp(prefix="mariadb-", dir=base_dir))
        socket_path = self.root_dir / "mysqld.sock"
        if len(str(socket_path)) > MAX_SOCKET_LEN or not self._server_user_can_enter(base_dir):
            shutil.rmtree(self.root_dir)
            self.root_dir = Path(tempfile.mkdtemp(prefix="mariadb-"))
        self.data_dir = self.root_dir / "data"
        self.socket = self.root_dir / "mysqld.sock"
        self.log_file = self.root_dir / "server.log"
        self.port: int | None = None
        self.started_in: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._give_to_server_user(self.root_dir)

    def __enter__(self) -> MariaDbServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- lifecycle ------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        begun = time.monotonic()
        self._run([_binary("mariadb-install-db"), "--no-defaults", *self._user_option(),
                   f"--datadir={self.data_dir}", "--auth-root-authentication-method=normal",
                   "--skip-test-db", "--skip-name-resolve",
                   # its bootstrap's temporary tables too: every starting mariadbd
                   # deletes the "#sql*" files in its tmpdir, so two bootstraps
                   # sharing /tmp broke each other in CI ("Unknown table
                   # 'mysql.tmp_proxies_priv'")
                   f"--tmpdir={self.root_dir}"], timeout)  # fmt: skip
        for attempt in range(3):  # a free port may be taken before the server binds it
            self.port = free_tcp_port(HOST)
            try:
                self._start_on(self.port, begun + timeout)
            except MariaDbError:
                if attempt == 2 or "already in use" not in self.log_text():
                    raise
                continue
            self.started_in = time.monotonic() - begun
            return

    def close(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after STOP_TIMEOUT) and delete its files."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_TIMEOUT)
        shutil.rmtree(self.root_dir, ignore_errors=True)

    # -- use ------------------------------------------------------------------

    def connect(self, database: str | None = None) -> Connection[pymysql.cursors.Cursor]:
        """Root through the unix socket, autocommit, utf8mb4; the caller closes it."""
        return pymysql.connect(unix_socket=str(self.socket), user="root", database=database,
                               charset=CHARSET, autocommit=True, connect_timeout=5)  # fmt: skip

    def create_database(self, name: str) -> None:
        self._admin(f"CREATE DATABASE `{name}` CHARACTER SET {CHARSET} COLLATE {COLLATION}")

    def create_user(self, name: str, password: str, *, reads: str) -> None:
        """A TCP login (from 127.0.0.1) that may only SELECT in database ``reads``."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(f"CREATE USER '{name}'@'{HOST}' IDENTIFIED BY %s", (password,))
            cur.execute(f"GRANT SELECT ON `{reads}`.* TO '{name}'@'{HOST}'")

    def url(self, database: str, user: str, password: str) -> str:
        """A SQLAlchemy URL for PyMySQL over TCP (its default character set, utf8mb4)."""
        auth = f"{quote(user, safe='')}:{quote(password, safe='')}"
        return f"mysql+pymysql://{auth}@{HOST}:{self.port}/{database}"

    def log_text(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    # -- internals -------------------------------------------------------------

    def _start_on(self, port: int, deadline: float) -> None:
        argv = [_binary("mariadbd"), "--no-defaults", *self._user_option(),
                f"--datadir={self.data_dir}", f"--socket={self.socket}", f"--port={port}",
                f"--bind-address={HOST}", f"--log-error={self.log_file}",
                f"--pid-file={self.root_dir / 'mysqld.pid'}", "--skip-name-resolve",
                f"--character-set-server={CHARSET}", f"--collation-server={COLLATION}",
                "--innodb-buffer-pool-size=16M", "--skip-log-bin",
                # its temporary tables in its own directory, not in the /tmp that
                # every process of the run shares (a run once saw them vanish)
                f"--tmpdir={self.root_dir}"]  # fmt: skip
        self.log_file.unlink(missing_ok=True)
        self._process = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         cwd=self.root_dir)  # fmt: skip
        while True:
            try:
                self._accepting()
                with self.connect() as conn:
                    conn.ping()
                return
            except (OSError, pymysql.err.OperationalError) as exc:
                if self._process.poll() is not None:
                    self._process = None
                    raise MariaDbError(f"mariadbd exited:\n{self.log_text()}") from exc
                if time.monotonic() > deadline:
                    self._kill()
                    raise MariaDbError(f"mariadbd not ready: {exc}\n{self.log_text()}") from exc
            time.sleep(0.05)

    def _accepting(self) -> None:
        """OSError until the socket accepts (PyMySQL leaks the socket of a failed connect)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(5)
            probe.connect(str(self.socket))

    def _kill(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(STOP_TIMEOUT)
            self._process = None

    def _admin(self, statement: str) -> None:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(statement)

    def _run(self, argv: list[str], timeout: float) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, check=False,
                                timeout=timeout, cwd=self.root_dir)  # fmt: skip
        if result.returncode != 0:
            raise MariaDbError(f"{Path(argv[0]).name} failed: {result.stdout}{result.stderr}")

    def _user_option(self) -> list[str]:
        return [f"--user={SERVER_OS_USER}"] if self._as_root else []

    def _server_user_can_enter(self, path: Path) -> bool:
        if not self._as_root:
            return True
        probe = subprocess.run(["runuser", "-u", SERVER_OS_USER, "--", "test", "-x", str(path)],
                               capture_output=True, check=False, cwd="/")  # fmt: skip
        return probe.returncode == 0

    def _give_to_server_user(self, path: Path) -> None:
        path.chmod(0o700)
        if self._as_root:
            entry = pwd.getpwnam(SERVER_OS_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)
