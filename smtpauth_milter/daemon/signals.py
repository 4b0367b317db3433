"""Signals: SIGHUP and SIGUSR1 reload, SIGTERM and SIGINT stop.

libmilter's own signal thread ``sigwait()``s HUP, TERM and INT and treats HUP
exactly like TERM: it stops the milter.  We cannot change its set, so we make
sure it never receives a HUP:

1. :func:`block` blocks every signal we care about in the main thread before
   any thread exists, so every thread (libmilter's too) inherits the block;
2. :func:`serve` runs libmilter's main loop in a thread of its own;
3. then the main thread alone unblocks HUP, USR1, TERM and INT.  Linux offers
   a process-wide signal to the main thread first when it does not block it,
   so they all land here.

The C handler only writes the signal number to a pipe (``set_wakeup_fd``), a
worker thread acts on it: a burst of HUPs becomes one reload and no Python
code runs per signal.  ``SA_NODEFER`` keeps the signals unblocked while the
handler runs, else one arriving in those microseconds would go to libmilter
(harmless for TERM and INT, a stop instead of a reload for HUP).

TERM and INT call ``on_stop``: ``smfi_stop`` and a connection to our own socket,
because libmilter, told by its own thread, would notice only when its accept
loop next wakes up, up to 5 seconds later.
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
from collections.abc import Callable

import Milter

from smtpauth_milter.core.errors import SmtpauthError

STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
RELOAD_SIGNALS = frozenset({signal.SIGHUP, signal.SIGUSR1})
ALL_SIGNALS = STOP_SIGNALS | RELOAD_SIGNALS | {signal.SIGCHLD}
SA_NODEFER = 0x40000000


class _Sigset(ctypes.Structure):
    _fields_ = [("val", ctypes.c_ulong * 16)]  # glibc's 1024-bit sigset_t


class _Sigaction(ctypes.Structure):
    # glibc's struct sigaction on x86_64 and aarch64
    _fields_ = [
        ("handler", ctypes.c_void_p),
        ("mask", _Sigset),
        ("flags", ctypes.c_int),
        ("restorer", ctypes.c_void_p),
    ]


def _add_nodefer(signum: int) -> None:
    """Add SA_NODEFER to the handler Python installed for ``signum``."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sigaction.argtypes = [
        ctypes.c_int,
        ctypes.POINTER(_Sigaction),
        ctypes.POINTER(_Sigaction),
    ]
    action = _Sigaction()
    if libc.sigaction(signum, None, ctypes.byref(action)) != 0:
        raise OSError(ctypes.get_errno(), "sigaction")
    action.flags |= SA_NODEFER
    if libc.sigaction(signum, ctypes.byref(action), None) != 0:
        raise OSError(ctypes.get_errno(), "sigaction")


def block() -> set[int | signal.Signals]:
    """Block HUP, USR1, TERM, INT and CHLD in this (the main) thread: before any thread
    starts. Returns the mask it replaced, for :func:`restore`."""
    return signal.pthread_sigmask(signal.SIG_BLOCK, ALL_SIGNALS)


def restore(mask: set[int | signal.Signals]) -> None:
    """Put back the mask :func:`block` replaced: a process we start later (or a test
    that called ``run`` in process) must not inherit TERM blocked."""
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _ignore(_signum: int, _frame: object) -> None:
    """The work happens in the reload thread; this only has to be a real handler."""


def serve(on_reload: Callable[[str], None], on_stop: Callable[[str], None]) -> None:
    """Run libmilter until it stops; ``on_reload(names)`` for HUP/USR1, ``on_stop(name)``
    for TERM/INT (it must make libmilter's main loop return).

    Must be called from the main thread, with :func:`block` in effect.
    """
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def signal_worker() -> None:
        stopping = False
        while True:
            data = os.read(read_end, 512)  # a burst of signals: one read, one reload
            stops = [signal.Signals(byte).name for byte in data if byte in STOP_SIGNALS]
            if stops and not stopping:
                stopping = True
                on_stop(stops[0])
            names = sorted({signal.Signals(byte).name for byte in data if byte in RELOAD_SIGNALS})
            if names and not stopping:
                on_reload("+".join(names))

    failure: list[str] = []
    launch = threading.Event()

    def libmilter_main() -> None:
        # Start libmilter (its signal thread sigwaits HUP) only once the main
        # thread takes HUP: a HUP already pending must become a reload, not a stop.
        launch.wait()
        try:
            Milter.milter.main()
        except Milter.milter.error as exc:
            failure.append(str(exc))

    threading.Thread(target=signal_worker, name="signals", daemon=True).start()
    milter = threading.Thread(target=libmilter_main, name="libmilter")
    milter.start()
    # Every thread exists now, and each one blocks these signals: take them here only.
    taken = RELOAD_SIGNALS | STOP_SIGNALS
    handlers = {signum: signal.getsignal(signum) for signum in taken}
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    for signum in taken:
        signal.signal(signum, _ignore)
        _add_nodefer(signum)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, taken)  # pending ones arrive here, now
    launch.set()
    try:
        while milter.is_alive():
            milter.join(1.0)
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, taken)
        signal.set_wakeup_fd(-1)
        for signum, handler in handlers.items():  # e.g. Ctrl-C's KeyboardInterrupt again
            if handler is not None:  # None: set outside Python, cannot be put back from here
                signal.signal(signum, handler)
    if failure:
        raise SmtpauthError(f"the milter stopped: {failure[0]}")
