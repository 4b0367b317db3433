"""AutoRestart: a parent process that keeps a milter child serving the same socket.

libmilter can be crashed by one malformed packet from any peer that can reach
the milter socket.  The parent opens the listening socket once and forks (no
exec) a child that inherits it: libmilter reuses an already-open listening
socket, so a new child serves the same socket, including the connections that
queued while no child was running.  The parent has no threads and no database
connection: it only forks, waits and forwards signals.

- child killed by a signal: a new child at once; past ``max_restarts``
  within ``window`` seconds, a new child after a delay that doubles from
  ``first_delay`` up to ``max_delay`` (1 s) per restart: the socket is never
  left dead (giving up would let any peer that crashes libmilter 11 times stop
  mail until an admin acts), and a child that dies at start cannot make the
  parent fork in a tight loop;
- child exits with a code: the parent exits with it (0 after a stop; non-zero
  is an error restarting would only repeat);
- SIGHUP: forwarded to the child as SIGUSR1 (libmilter never takes USR1 for stop);
- SIGTERM/SIGINT: close the listening socket, forward SIGTERM, wait, exit 0
  (at once when no child runs: a stop during a back-off).
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import logging
import os
import signal
import socket
import stat
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from smtpauth_milter.core import logfmt

log = logging.getLogger("smtpauth_milter")

PR_SET_PDEATHSIG = 1
MAX_RESTARTS = 10  # restarts within WINDOW seconds before the next ones are delayed
WINDOW = 60.0
FIRST_DELAY = 0.05  # seconds before the first delayed restart; doubles up to MAX_DELAY
MAX_DELAY = 1.0
PARENT_SIGNALS = {signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}

ChildMain = Callable[[bool], int]  # (re-read the config first?) -> exit code


def listening_sockets() -> set[int]:
    """The file descriptors of this process that are listening sockets."""
    found = set()
    for entry in Path("/proc/self/fd").iterdir():
        fd = int(entry.name)
        with contextlib.suppress(OSError):
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            probe = socket.socket(fileno=os.dup(fd))
            try:
                if probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    found.add(fd)
            finally:
                probe.close()
    return found


Address = tuple[socket.AddressFamily, Any]


def listener_address(listen_fd: int) -> Address:
    """Where to connect to reach our own listening socket (loopback for a wildcard)."""
    with socket.socket(fileno=os.dup(listen_fd)) as listener:
        family, address = listener.family, listener.getsockname()
    if family == socket.AF_INET and ipaddress.ip_address(address[0]).is_unspecified:
        address = ("127.0.0.1", address[1])
    elif family == socket.AF_INET6 and ipaddress.ip_address(address[0]).is_unspecified:
        address = ("::1", *address[1:])
    return family, address


def wake_listener(where: Address) -> None:
    """Connect once to our own listening socket and hang up (errors ignored)."""
    family, address = where
    with contextlib.suppress(OSError), socket.socket(family, socket.SOCK_STREAM) as wake:
        wake.settimeout(0.5)
        wake.connect(address)


def _child_exit(code: int) -> None:
    """Leave the child without running the parent's cleanup code."""
    with contextlib.suppress(Exception):
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _die_with_parent(parent: int) -> None:
    """A child must not serve on alone when the parent is killed (kill -9): the
    next start could not listen, and nothing would restart it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # it died before the prctl
        os._exit(1)


def restart_delay(recent: int, max_restarts: int, first: float, longest: float) -> float:
    """Seconds to wait before a restart that is the ``recent``-th within the window:
    none within the budget, then ``first``, doubling, at most ``longest``."""
    over = recent - max_restarts
    if over <= 0:
        return 0.0
    return min(longest, first * 2.0 ** min(over - 1, 64))


def _child_died(status: int) -> str | None:
    """The signal name when the child was killed, None when it exited."""
    return signal.Signals(os.WTERMSIG(status)).name if os.WIFSIGNALED(status) else None


class Supervisor:
    def __init__(
        self,
        child_main: ChildMain,
        listen_fd: int,
        on_restart: Callable[[float], None] | None = None,
        max_restarts: int = MAX_RESTARTS,
        window: float = WINDOW,
        clock: Callable[[], float] = time.monotonic,
        first_delay: float | None = None,
        max_delay: float | None = None,
    ) -> None:
        self._child_main = child_main
        self._listen_fd = listen_fd
        self._on_restart = on_restart  # told each restart's delay (metrics), before the fork
        self._max_restarts = max_restarts
        self._window = window
        self._clock = clock
        # read here, not bound at import: a test may scale the back-off down
        self._first_delay = FIRST_DELAY if first_delay is None else first_delay
        self._max_delay = MAX_DELAY if max_delay is None else max_delay
        self._restarts: deque[float] = deque()
        self._reloaded = False
        self._child = 0  # 0: no child (between a death and a delayed restart)
        self._restart_at: float | None = None  # time.monotonic() of a delayed restart
        self._delay = 0.0

    def _spawn(self) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:
            code = 70  # EX_SOFTWARE, if child_main itself blows up
            try:
                _die_with_parent(parent)
                code = self._child_main(self._reloaded)
            finally:
                _child_exit(code)
        self._child = pid
        log.info("%s", logfmt.Fields({"event": "child-started", "pid": str(pid)}))

    def run(self) -> int:
        """Serve through children until stopped; returns the exit code."""
        signal.pthread_sigmask(signal.SIG_BLOCK, PARENT_SIGNALS)
        # CHLD's default disposition discards it; a handler makes sigwait see it.
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self._spawn()
        stopping = False
        while True:
            signum = self._next_signal()
            if signum is None:  # a delayed restart is due
                self._restart()
            elif signum in (signal.SIGHUP, signal.SIGUSR1) and not stopping:
                self._reloaded = True
                self._signal_child(signal.SIGUSR1)
            elif signum in (signal.SIGTERM, signal.SIGINT) and not stopping:
                stopping = True
                os.close(self._listen_fd)  # refuse new connections instead of queueing them
                if self._child == 0:  # stopped while waiting to restart: nothing to wait for
                    return 0
                self._signal_child(signal.SIGTERM)
            elif signum == signal.SIGCHLD:
                code = self._reap(stopping)
                if code is not None:
                    return code

    def _next_signal(self) -> int | None:
        """The next signal; None when a delayed restart is due first."""
        if self._restart_at is None:
            return signal.sigwait(PARENT_SIGNALS)
        wait = self._restart_at - time.monotonic()
        if wait <= 0:
            return None
        info = signal.sigtimedwait(PARENT_SIGNALS, wait)
        return None if info is None else info.si_signo

    def _signal_child(self, signum: signal.Signals) -> None:
        if self._child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._child, signum)

    def _restart(self) -> None:
        self._restart_at = None
        if self._on_restart is not None:
            self._on_restart(self._delay)
        self._spawn()

    def _reap(self, stopping: bool) -> int | None:
        """Handle ended children: an exit code to leave with, or None to go on."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            if pid != self._child:
                continue
            self._child = 0
            killed_by = _child_died(status)
            if stopping or killed_by is None:
                return 0 if stopping else os.waitstatus_to_exitcode(status)
            self._died(pid, killed_by)

    def _died(self, pid: int, killed_by: str) -> None:
        """A child was killed: restart it now, or after a delay past the budget."""
        now = self._clock()
        self._restarts.append(now)
        while self._restarts and now - self._restarts[0] > self._window:
            self._restarts.popleft()
        self._delay = restart_delay(
            len(self._restarts), self._max_restarts, self._first_delay, self._max_delay
        )
        fields = {"event": "child-died", "pid": str(pid), "signal": killed_by, "action": "restart"}
        if self._delay:
            fields["delay"] = f"{self._delay:.3f}"
            fields["reason"] = (
                f"more than {self._max_restarts} restarts in {self._window:.0f}s: backing off"
            )
        log.error("%s", logfmt.Fields(fields))
        if self._delay:
            self._restart_at = time.monotonic() + self._delay
        else:
            self._restart()
