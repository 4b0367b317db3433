"""Run ``smtpauth-milter run`` as a real process for tests: free port, log file, clean stop.

The console script installed next to ``sys.executable`` is started with an
``inet:`` socket on a free loopback port and its stderr in a log file;
:meth:`MilterProcess.start` returns once the socket accepts connections
(polled with a deadline by ``wait_for_milter``).  :class:`MilterProcesses`
owns every process a test started and stops them all in a fixture finaliser::

    @pytest.fixture
    def milters(tmp_path):
        with MilterProcesses(tmp_path) as procs:
            yield procs
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from smtpauth_milter.admin.milterproto.transport import free_tcp_port, wait_for_milter
from smtpauth_milter.daemon.config import clean_env
from tests.support.milterclient import MilterClient, Reply

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
# A line in the milter's log that means something went wrong inside it.
TROUBLE = re.compile(r" (ERROR|CRITICAL) |Traceback|event=internal-error|event=setreply-failed")


def console_script() -> str:
    """The ``smtpauth-milter`` script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("smtpauth-milter")
    if not script.exists():
        raise RuntimeError(f"{script} is missing: install the package into this venv")
    return str(script)


class MilterProcess:
    """One ``smtpauth-milter run`` process on ``inet:PORT@127.0.0.1``."""

    def __init__(
        self,
        db_url: str,
        log_path: Path,
        args: Sequence[str] = (),
        command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.db_url = db_url
        self.log_path = log_path
        self.args = list(args)
        self.command = list(command) if command is not None else None  # default: ours
        self.env = env or {}
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> str:
        return f"inet:{self.port}@127.0.0.1"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = START_TIMEOUT) -> MilterProcess:
        """Start and wait until the socket listens; retry on a lost race for the port."""
        for attempt in range(3):
            self.port = free_tcp_port()
            self._spawn()
            try:
                wait_for_milter(self.socket, timeout=timeout, process=self.process)
            except RuntimeError:
                self.stop()
                if "cannot listen" in self.log_text() and attempt < 2:
                    continue
                raise RuntimeError(f"the milter did not start:\n{self.log_text()}") from None
            except TimeoutError:
                self.stop()
                raise
            return self
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        command = self.command if self.command is not None else [console_script()]
        argv = [*command, "run", "--socket", self.socket, *self.args]
        # The URL goes in the environment, not argv: no password in `ps`.
        env = clean_env(**{"SMTPAUTH_MILTER_DB": self.db_url, **self.env})
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd="/"
            )

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        """Send SIGTERM without waiting (stop several processes in parallel)."""
        if self.alive:
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait; SIGKILL after ``timeout``. Returns the exit status."""
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

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_lines(self, pattern: str) -> list[str]:
        return [line for line in self.log_text().splitlines() if pattern in line]

    def trouble(self) -> list[str]:
        """Log lines that show an error inside the milter (none expected)."""
        return [line for line in self.log_text().splitlines() if TROUBLE.search(line)]


class MilterProcesses:
    """Every milter a test starts; all stopped (in parallel) on exit."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[MilterProcess] = []

    def start(
        self,
        db_url: str,
        *args: str,
        command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> MilterProcess:
        """Start ``smtpauth-milter run`` (or ``command run``, e.g. an older release)."""
        log_path = self.directory / f"milter-{len(self.started) + 1}.log"
        milter = MilterProcess(db_url, log_path, args, command, env)
        self.started.append(milter)
        return milter.start()

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


# --- driving a milter --------------------------------------------------------------

CONTINUE = "continue"


def verdict_text(reply: Reply) -> str:
    """``continue``, or the SMTP reply a refusing milter gave (``530 5.7.0 ...``)."""
    if reply.continues:
        return CONTINUE
    return reply.message if reply.kind == "replycode" and reply.message else reply.kind


def open_client(socket_spec: str, timeout: float = 5.0) -> MilterClient:
    """A MilterClient (Nagle off on inet sockets, as an MTA's milter client has it)."""
    return MilterClient(socket_spec, timeout)


def verdicts(
    socket_spec: str,
    *,
    sender: str,
    rcpts: Sequence[str],
    login: str | None = None,
    client_addr: str = "203.0.113.9",
) -> list[str]:
    """One whole session; the verdict text of each recipient."""
    with open_client(socket_spec) as client:
        result = client.run_session(
            sender=sender, rcpts=rcpts, login=login, client_addr=client_addr
        )
    return [verdict_text(reply) for reply in result.rcpts]


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; returns the seconds it took, fails after ``timeout``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not true within {timeout}s")
        time.sleep(0.02)
