"""Our real milter (``smtpauth-milter run``) as a process, its store, and its log.

Plain helpers, no pytest: the fixtures in the test modules wire them together.

- :class:`StoreCli` edits the store with the real CLI (``run_cli``, in process)
  and can reset it to a baseline with ``import`` (one transaction).
- :class:`OurMilter` runs ours through the one harness (:mod:`tests.harness.milter`) on a
  socket in Postfix notation (a unix socket must come out 0660, then goes to
  group postfix), waits for a given store serial to be loaded (its
  ``event=snapshot-loaded`` log line), and stops it.
- :func:`decision_lines` reads the one-line-per-recipient decisions from its log.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.daemon.config import CONFIG_DEFAULT_ENV
from smtpauth_milter.store.engine import Store
from tests.harness.logfile import LogFile
from tests.harness.milter import MilterProcess, ours
from tests.harness.mta import libmilter_socket

STOP_TIMEOUT = 1.0  # then SIGKILL: libmilter needs up to ~5 s to notice SIGTERM


class CliError(AssertionError):
    """A CLI command the test relied on failed."""


@dataclass
class StoreCli:
    """A SQLite store edited only through ``smtpauth-milter --db URL ...``."""

    path: Path
    baseline: Path | None = None

    def __post_init__(self) -> None:
        self.run("db", "init")  # as an admin does: nothing creates a store by reading it

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def run(self, *args: str) -> str:
        """Run one CLI command; its stdout. CliError with stderr when it does not exit 0."""
        out, err = io.StringIO(), io.StringIO()
        env_backup = {
            k: os.environ.pop(k)
            for k in list(os.environ)
            if k.startswith("SMTPAUTH_") and k != CONFIG_DEFAULT_ENV
        }
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = run_cli(["--db", self.url, *args])
        finally:
            os.environ.update(env_backup)
        if code != 0:
            raise CliError(f"smtpauth-milter {' '.join(args)} exited {code}: {err.getvalue()}")
        return out.getvalue()

    def apply(self, commands: Sequence[Sequence[str]]) -> None:
        for command in commands:
            self.run(*command)

    def save_baseline(self) -> None:
        """Remember the store as it is now; :meth:`reset` returns to it."""
        self.baseline = self.path.with_suffix(".baseline.json")
        self.baseline.write_text(self.run("export"))

    def reset(self) -> None:
        assert self.baseline is not None, "save_baseline() first"
        self.run("import", str(self.baseline))

    def serial(self) -> int:
        store = Store(self.url)
        try:
            return store.serial()
        finally:
            store.dispose()


def decision_lines(log: LogFile, since: int = 0) -> list[str]:
    return log.find(r" action=\S+ rule=\S+ ", since)


def decision_for(log: LogFile, rcpt: str, since: int = 0) -> str:
    """The one decision line for RCPT TO:<rcpt> after ``since``; AssertionError otherwise."""
    needle = f"rcpt=<{rcpt}>"
    # The milter's writer thread writes a line shortly after the reply: wait for it.
    log.wait_for(rf" action=\S+ rule=\S+ .*(^| ){re.escape(needle)}( |$)", since)
    found = [line for line in decision_lines(log, since) if needle in line.split()]
    if len(found) != 1:
        raise AssertionError(
            f"expected one decision for {needle}, got {found}\nlog:\n{log.text(since)}"
        )
    return found[0]


def field_of(line: str, name: str) -> str:
    match = re.search(rf"(?:^| ){name}=(\S+)", line)
    if match is None:
        raise AssertionError(f"no {name}= in {line!r}")
    return match[1]


@dataclass
class OurMilter:
    """``smtpauth-milter run --socket SOCKET`` for the sandbox (``tests.harness.milter.ours``)."""

    store: StoreCli
    socket: str  # Postfix notation: inet:127.0.0.1:PORT or unix:/path
    log: LogFile
    extra_args: tuple[str, ...] = ()
    refresh: float | None = 0.2  # None: leave --refresh out (the shipped default)
    process: MilterProcess | None = None

    @property
    def started_at(self) -> int:
        """The log offset where the current run began."""
        assert self.process is not None
        return self.process.started_at

    @property
    def socket_mode(self) -> int | None:
        """A unix socket's mode as the milter created it (before it went to group postfix)."""
        return None if self.process is None else self.process.socket_mode

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 15.0) -> OurMilter:
        refresh = () if self.refresh is None else ("--refresh", str(self.refresh))
        process = ours(
            self.store.url, self.log.path, *refresh, *self.extra_args,
            socket=libmilter_socket(self.socket), postfix_group=True,
        )  # fmt: skip
        self.process = process.start(timeout)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.process is not None:
            self.process.stop(timeout)
            self.process = None

    def wait_loaded(self, serial: int | None = None, timeout: float = 5.0) -> int:
        """Wait until this run of the milter logged ``event=snapshot-loaded serial=N``."""
        wanted = self.store.serial() if serial is None else serial
        self.log.wait_for(rf"event=snapshot-loaded serial={wanted}\b", self.started_at, timeout)
        return wanted

    def sync(self, commands: Sequence[Sequence[str]] = (), reset: bool = True) -> None:
        """Reset the store to its baseline, apply CLI ``commands``, wait until loaded."""
        if reset:
            self.store.reset()
        self.store.apply(commands)
        self.wait_loaded()


@contextlib.contextmanager
def running(milter: OurMilter) -> Iterator[OurMilter]:
    """Start ``milter``; stop it on the way out, also when the body fails."""
    milter.start()
    try:
        yield milter
    finally:
        milter.stop()
