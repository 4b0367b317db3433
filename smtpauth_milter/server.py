"""Run the milter: logging, the snapshot cache and its thread, the libmilter socket."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import signal
import sys

import Milter

from . import logfmt
from .config import RunConfig, unix_socket_path
from .errors import ConfigError
from .milter import SmtpAuthMilter
from .refresh import SnapshotCache
from .store import Store

log = logging.getLogger("smtpauth_milter")
MILTER_NAME = "smtpauth-milter"
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
SOCKET_UMASK = 0o117  # a unix socket comes out 0660: the MTA's group, nobody else


class OneLineFormatter(logging.Formatter):
    """Tracebacks and any stray newline stay inside one record's line."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")


def setup_logging(level: str, syslog: bool) -> None:
    handler: logging.Handler
    if syslog:
        try:
            handler = logging.handlers.SysLogHandler(
                address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_MAIL
            )
        except OSError as exc:
            raise ConfigError(f"cannot log to syslog at /dev/log: {exc.strerror}") from exc
        handler.setFormatter(OneLineFormatter(f"{MILTER_NAME}[%(process)d]: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(OneLineFormatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("smtpauth_milter")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def run(config: RunConfig) -> None:
    """Serve until SIGTERM/SIGINT; tempfail while the store is unreadable."""
    setup_logging(config.log_level, config.syslog)
    store = Store(config.db)
    # libmilter's own thread sigwait()s for these; block them before we start any
    # thread, or the kernel may hand SIGTERM to one that dies without cleanup.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    cache = SnapshotCache(store, config.max_stale)
    cache.start(config.refresh)
    Milter.factory = lambda: SmtpAuthMilter(cache)
    socket_path = unix_socket_path(config.socket)
    log.info("%s", logfmt.line({"event": "start", "socket": config.socket, "store": store.display}))
    old_umask = os.umask(SOCKET_UMASK) if socket_path else None
    try:
        Milter.runmilter(MILTER_NAME, config.socket, timeout=60)
    except Milter.milter.error as exc:
        raise ConfigError(
            f"cannot listen on {config.socket}: {exc} (address in use, or the socket's "
            "directory is missing or not writable)"
        ) from exc
    finally:
        if old_umask is not None:
            os.umask(old_umask)
        cache.stop()
        store.dispose()
        if socket_path is not None:
            with contextlib.suppress(FileNotFoundError):
                socket_path.unlink()
        log.info("%s", logfmt.line({"event": "stop"}))
