"""The one way to run a milter process: ours or a test double, for tests, benchmarks and the soak.

    milter = ours(db_url, tmp_path / "milter.log", "--refresh", "0.2").start()
    session(milter.socket, ...)          # libmilter notation: inet:PORT@127.0.0.1
    assert milter.trouble() == []        # no error, traceback or internal-error logged
    milter.stop()                        # SIGTERM, SIGKILL after the timeout; the exit status

:class:`MilterProcess` starts any command that takes the socket as one of its
arguments (:data:`SOCKET` in ``argv`` is replaced), stdout and stderr appended
to a log file; with no socket given it picks a free loopback port and retries
when another process took the port first. ``start`` returns once the socket
accepts connections (or, with ``ready="loaded"``, once ours logged its first
snapshot), and fails at once, log attached, when the process exits instead.
:func:`ours` builds the ``smtpauth-milter run`` command of the installed console
script with only the environment given (``clean_env``): the store URL goes in
the environment, never in ``argv`` (no password in ``ps``).
:class:`MilterProcesses` owns every process a test starts and stops them together.
"""

from __future__ import annotations

import grp
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from smtpauth_milter.admin.milterproto.transport import free_tcp_port, wait_for_milter
from smtpauth_milter.daemon.config import clean_env

from .logfile import LogFile

SOCKET = "{socket}"  # the place of the socket spec in a MilterProcess's argv
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0  # ours stops within a second; plain pymilter doubles take up to ~5 s
# A line in our milter's log that means something went wrong inside it.
TROUBLE = re.compile(r" (ERROR|CRITICAL) |Traceback|event=internal-error|event=setreply-failed")
# What a lost race for a free port looks like in libmilter's log.
PORT_TAKEN = re.compile(r"cannot listen|Address already in use")

Ready = Literal["spawned", "listening", "loaded"]


class MilterStartError(RuntimeError):
    """The milter exited, or never listened, while being started; the log is in the message."""


def console_script() -> str:
    """The installed ``smtpauth-milter`` next to this interpreter (or on PATH)."""
    beside = Path(sys.executable).with_name("smtpauth-milter")
    found = str(beside) if beside.exists() else shutil.which("smtpauth-milter")
    if found is None:
        raise MilterStartError("smtpauth-milter is not installed: pip install -e '.[test]'")
    return found


def unix_path(socket_spec: str) -> Path | None:
    kind, _, rest = socket_spec.partition(":")
    return Path(rest) if kind in ("unix", "local") else None


class MilterProcess:
    """One milter process on a socket in libmilter notation, its log in a file."""

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        socket: str | None = None,
        *,
        env: Mapping[str, str] | None = None,
        postfix_group: bool = False,
        graceful_stop: bool = True,
        cwd: Path = Path("/"),
    ) -> None:
        if SOCKET not in argv:
            raise ValueError(f"argv must contain {SOCKET!r} where the socket goes")
        self.argv_template = list(argv)
        self.log = LogFile(log_path)
        self.fixed_socket = socket
        self.socket = socket or ""
        self.env = dict(env) if env is not None else None
        self.cwd = cwd  # "/" keeps a process that drops privileges out of root's directories
        # A unix socket handed to group postfix, mode 0660 (what an admin does for Postfix).
        self.postfix_group = postfix_group
        # False: stop with SIGKILL (nothing to wait for: the test does not look at the shutdown).
        self.graceful_stop = graceful_stop
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0  # log offset of the current run
        self.socket_mode: int | None = None  # of a unix socket, before postfix_group

    # --- start -------------------------------------------------------------------

    @property
    def argv(self) -> list[str]:
        return [self.socket if arg == SOCKET else arg for arg in self.argv_template]

    def start(self, timeout: float = START_TIMEOUT, ready: Ready = "listening") -> MilterProcess:
        """Start; wait as ``ready`` says. A lost race for a picked port is retried twice."""
        for attempt in range(3):
            self.socket = self.fixed_socket or f"inet:{free_tcp_port()}@127.0.0.1"
            self._spawn()
            try:
                self._wait_ready(timeout, ready)
            except MilterStartError:
                self.stop(timeout=1.0)
                retry = self.fixed_socket is None and attempt < 2
                if retry and PORT_TAKEN.search(self.log.text(self.started_at)):
                    continue
                raise
            except BaseException:
                self.stop(timeout=1.0)
                raise
            return self
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        path = unix_path(self.socket)
        if path is not None:
            path.unlink(missing_ok=True)
        self.started_at = self.log.mark()
        with self.log.path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, cwd=self.cwd,
            )  # fmt: skip

    def _wait_ready(self, timeout: float, ready: Ready) -> None:
        if ready == "spawned":
            return
        deadline = time.monotonic() + timeout
        try:
            wait_for_milter(self.socket, timeout, self.process)
        except RuntimeError as exc:  # exited before listening
            raise MilterStartError(f"{exc}:\n{self.log.tail(self.started_at)}") from None
        except TimeoutError as exc:
            raise MilterStartError(f"{exc}:\n{self.log.tail(self.started_at)}") from None
        path = unix_path(self.socket)
        if path is not None:
            self.socket_mode = stat.S_IMODE(path.stat().st_mode)
            if self.postfix_group:
                shutil.chown(path, group=grp.getgrnam("postfix").gr_name)
                path.chmod(0o660)
        if ready == "loaded":
            self.wait_for_log("event=snapshot-loaded", max(0.1, deadline - time.monotonic()))

    # --- state -------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    @property
    def port(self) -> int:
        """The TCP port of an inet socket."""
        return int(self.socket.partition(":")[2].partition("@")[0])

    # --- log ---------------------------------------------------------------------

    def log_text(self, since: int = 0) -> str:
        return self.log.text(since)

    def log_lines(self, since: int = 0) -> list[str]:
        """Whole lines (strict UTF-8: a milter must never log anything else)."""
        return self.log.lines(since)

    def trouble(self) -> list[str]:
        """Log lines that show an error inside our milter (none expected in a clean run)."""
        return [line for line in self.log.text().splitlines() if TROUBLE.search(line)]

    def wait_for_log(
        self, pattern: str, timeout: float = 10.0, count: int = 1, since: int | None = None
    ) -> None:
        """Wait until ``pattern`` (a regex) matched ``count`` lines since this run started.

        Fails at once, log attached, when the process exits meanwhile.
        """
        offset = self.started_at if since is None else since
        deadline = time.monotonic() + timeout
        while len(self.log.find(pattern, offset)) < count:
            if self.process is not None and self.process.poll() is not None:
                raise MilterStartError(
                    f"milter exited ({self.process.returncode}) waiting for {pattern!r}:\n"
                    f"{self.log.tail(offset)}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no {pattern!r} in the milter log after {timeout}s:\n{self.log.tail(offset)}"
                )
            time.sleep(0.02)

    # --- stop --------------------------------------------------------------------

    def terminate(self) -> None:
        """Send the stop signal without waiting (stop several processes in parallel)."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM if self.graceful_stop else signal.SIGKILL)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (SIGKILL if not graceful), wait; SIGKILL after ``timeout``. The exit status."""
        process = self.process
        if process is None:
            return None
        self.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return process.returncode

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(5)

    def wait_exit(self, timeout: float) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def __enter__(self) -> MilterProcess:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def ours(
    db_url: str | None,
    log_path: Path,
    *args: str,
    socket: str | None = None,
    env: Mapping[str, str] | None = None,
    postfix_group: bool = False,
    graceful_stop: bool = True,
    command: Sequence[str] | None = None,
) -> MilterProcess:
    """``smtpauth-milter run --socket SOCKET ARGS...`` (not started yet).

    ``db_url`` goes in ``SMTPAUTH_MILTER_DB``; None leaves the store to ``args``
    (``--config``) or the default. ``env`` adds variables to the clean environment.
    ``command`` replaces the installed console script (e.g. an older release's).
    """
    extra = dict(env or {})
    if db_url is not None:
        extra["SMTPAUTH_MILTER_DB"] = db_url
    return MilterProcess(
        [*(command or [console_script()]), "run", "--socket", SOCKET, *args],
        log_path,
        socket,
        env=clean_env(**extra),
        postfix_group=postfix_group,
        graceful_stop=graceful_stop,
    )


class MilterProcesses:
    """Every milter a test (or benchmark) starts; all stopped, in parallel, on exit.

    ``start`` stops its milters with SIGKILL unless told ``graceful_stop=True``
    (a test that checks the exit status of ``stop()``): nothing to wait for.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[MilterProcess] = []

    def log_path(self) -> Path:
        return self.directory / f"milter-{len(self.started) + 1}.log"

    def start(
        self,
        db_url: str,
        *args: str,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        graceful_stop: bool = False,
        ready: Ready = "listening",
    ) -> MilterProcess:
        """Start ours (or ``command run``) on a free port with ``args``; wait as ``ready`` says.

        ``graceful_stop``: for a test that checks the exit status of ``stop()``.
        """
        milter = ours(
            db_url, self.log_path(), *args, env=env, command=command, graceful_stop=graceful_stop
        )
        return self.add(milter).start(ready=ready)

    def add(self, milter: MilterProcess) -> MilterProcess:
        """Own ``milter`` (started or not): it is stopped with the others."""
        self.started.append(milter)
        return milter

    def stop_all(self) -> None:
        for milter in self.started:
            milter.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT
        for milter in self.started:
            milter.stop(timeout=max(0.1, deadline - time.monotonic()))

    def __enter__(self) -> MilterProcesses:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()
