"""A reload (SIGHUP, SIGUSR1): re-read the config file, apply what can change live, poll the store.

Applied live: ``log-level``, ``log-format``, ``syslog``, ``max-stale``, ``refresh``.
Needs a restart (logged, the running value stays): ``db``, ``socket``, ``user``,
``group``, ``metrics``, ``auto-restart``.  A config file that cannot be read
or is not valid is logged and changes nothing.  The store is polled at once
either way: settings in the store are never part of a reload, they are read
whenever they change.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.daemon.config import RunConfig
from smtpauth_milter.daemon.logsetup import setup_logging
from smtpauth_milter.daemon.refresh import SnapshotCache

log = logging.getLogger("smtpauth_milter")

LIVE = {
    "log_level": "log-level",
    "log_format": "log-format",
    "syslog": "syslog",
    "max_stale": "max-stale",
    "refresh": "refresh",
}
LOGGING = {"log_level": "log-level", "log_format": "log-format", "syslog": "syslog"}
NEEDS_RESTART = {
    "db": "db",
    "socket": "socket",
    "user": "user",
    "group": "group",
    "metrics": "metrics",
    "auto_restart": "auto-restart",
}


def _changed(old: RunConfig, new: RunConfig, keys: dict[str, str]) -> list[str]:
    return [name for attr, name in keys.items() if getattr(old, attr) != getattr(new, attr)]


class Reloader:
    """Called from the reload thread with the names of the signals that asked for it."""

    def __init__(
        self, config: RunConfig, reread: Callable[[], RunConfig], cache: SnapshotCache
    ) -> None:
        self.config = config
        self._reread = reread
        self._cache = cache
        self._lock = threading.Lock()

    def __call__(self, why: str) -> None:
        with self._lock:
            try:
                self._reload(why)
            finally:
                self._cache.poke()

    def _reload(self, why: str) -> None:
        try:
            new = self._reread()
            if _changed(self.config, new, LOGGING):
                setup_logging(new.log_level, new.syslog, new.log_format)
        except SmtpauthError as exc:
            fields = {"event": "reload-failed", "signal": why, "error": str(exc)}
            log.error("%s", logfmt.Fields(fields | {"state": "running config kept"}))
            return
        applied = _changed(self.config, new, LIVE)
        ignored = _changed(self.config, new, NEEDS_RESTART)
        self._cache.configure(new.max_stale, new.refresh)
        # Keep what only a restart can change, so the next reload compares against what runs.
        kept = {attr: getattr(self.config, attr) for attr in NEEDS_RESTART}
        self.config = dataclasses.replace(new, **kept)
        log.info(
            "%s",
            logfmt.Fields({"event": "reload", "signal": why, "applied": ",".join(applied) or "-"}),
        )
        if ignored:
            log.warning(
                "%s",
                logfmt.Fields(
                    {
                        "event": "reload-needs-restart",
                        "changed": ",".join(ignored),
                        "state": "running value kept until a restart",
                    }
                ),
            )
