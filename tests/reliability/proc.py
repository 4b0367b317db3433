"""Start ``smtpauth-milter run`` as a real process; always stop it.

    with MilterProcess(db_url, tmp_path) as milter:
        session(milter.socket, sender=..., rcpts=[...])
        milter.log_lines()

The installed console script next to ``sys.executable`` is used, the log goes
to a file, readiness is polled with a deadline, and the process is stopped
(SIGTERM, then SIGKILL) even when the test fails.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from smtpauth_milter.admin.milterproto.transport import free_tcp_port, wait_for_milter
from smtpauth_milter.daemon.config import clean_env

SCRIPT = Path(sys.executable).with_name("smtpauth-milter")


def cli(db_url: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run the installed CLI once (a separate process, as an admin would)."""
    return subprocess.run(
        [str(SCRIPT), "--db", db_url, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(),
        check=False,
    )


class MilterProcess:
    def __init__(
        self,
        db_url: str,
        workdir: Path,
        *,
        socket_spec: str | None = None,
        args: Sequence[str] = (),
        ready_timeout: float = 15.0,
        wait_ready: bool = True,
        graceful_stop: bool = True,
    ) -> None:
        self.db_url = db_url
        self.socket = socket_spec or f"inet:{free_tcp_port()}@127.0.0.1"
        self.log_path = workdir / f"milter-{time.monotonic_ns()}.log"
        self.args = list(args)
        self.ready_timeout = ready_timeout
        self.wait_ready = wait_ready
        # libmilter takes up to ~5 s to return after SIGTERM; tests that do not
        # look at the shutdown may stop with SIGKILL instead.
        self.graceful_stop = graceful_stop
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> MilterProcess:
        argv = [str(SCRIPT), "--db", self.db_url, "run", "--socket", self.socket, *self.args]
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=clean_env(),
            )
        if self.wait_ready:
            try:
                wait_for_milter(self.socket, self.ready_timeout, self.proc)
                self.wait_for_log("event=snapshot-loaded", self.ready_timeout)
            except BaseException:
                self.stop()
                raise
        return self

    def __enter__(self) -> MilterProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL. Returns the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM if self.graceful_stop else signal.SIGKILL)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        return proc.returncode

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log_bytes(self) -> bytes:
        return self.log_path.read_bytes() if self.log_path.exists() else b""

    def log_lines(self) -> list[str]:
        return self.log_bytes().decode("utf-8", errors="strict").split("\n")[:-1]

    def wait_for_log(self, needle: str, timeout: float = 10.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while self.log_bytes().decode("utf-8", "replace").count(needle) < count:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"milter exited ({self.proc.returncode}): {self.log_bytes()!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {needle!r} in the milter log after {timeout}s")
            time.sleep(0.02)
