"""The in-memory snapshot the milter answers from, and the one thread that refreshes it.

Decisions never touch the database: libmilter's callback threads only read
``SnapshotCache.current()``, an attribute read.  One background thread polls
the store's serial every ``interval`` seconds and reloads the whole snapshot
when it changed.  When the store cannot be read, the last good snapshot is
used for ``max_stale`` seconds; after that ``current()`` says "tempfail".

A schema this version may not read (upgraded by a newer smtpauth-milter to a
revision not readable by this one) is not an outage to ride out: the settings
may now mean what this version cannot see, so ``current()`` says "tempfail" at
once, until the store is readable again.  Every schema change bumps the serial,
so it is checked with the next poll.

``on_snapshot`` is told every snapshot the refresh thread installs (at start and
whenever the serial moved), after the poll and outside the store's deadline: the
milter hands the new settings to its lookups there (so new ``sender-login-maps``
are opened and probed on a lookup worker before any message needs them).  It
must not block; an error in it is logged and never makes the store unreadable.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import SchemaError
from smtpauth_milter.core.snapshot import Snapshot

log = logging.getLogger("smtpauth_milter")

WARN_EVERY = 60.0
NO_DOMAINS_EVERY = 600.0


class SnapshotSource(Protocol):
    def prepare(self) -> None: ...
    def serial(self) -> int: ...
    def load_snapshot(self) -> Snapshot: ...


class SnapshotCache:
    def __init__(
        self,
        source: SnapshotSource,
        max_stale: float,
        clock: Callable[[], float] = time.monotonic,
        on_refresh: Callable[[bool], None] | None = None,
        deadline: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
        on_snapshot: Callable[[Snapshot], None] | None = None,
    ) -> None:
        self._source = source
        self._on_snapshot = on_snapshot
        self._deadline = deadline  # bounds one whole poll (the store's client-side deadline)
        self._on_refresh = on_refresh  # told the outcome of every poll (metrics)
        self._max_stale = max_stale
        self._clock = clock
        self._good: Snapshot | None = None
        self._good_at = 0.0
        self._refused: SchemaError | None = None  # the schema is not for this version
        self._prepared = False
        self._failing_since: float | None = None
        self._last_warning = 0.0
        self._warned_stale = False
        self._no_domains_warned: float | None = None
        self._unavailable = Snapshot.unavailable(None)
        self._interval = 0.5
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    # --- read side: libmilter threads ---------------------------------------

    def current(self) -> Snapshot:
        """The snapshot to decide with; an untrusted one once the store is stale."""
        good = self._good
        if good is None or self._refused is not None:
            return self._unavailable
        if self._clock() - self._good_at > self._max_stale:
            return self._unavailable
        return good

    def age(self) -> float | None:
        return None if self._good is None else self._clock() - self._good_at

    # --- write side: the refresh thread -------------------------------------

    def refresh(self) -> bool:
        """One poll: reload when the serial moved. Returns True when the store was read."""
        installed: Snapshot | None = None
        try:
            with self._deadline():
                if not self._prepared:
                    self._source.prepare()
                    self._prepared = True
                good = self._good
                if (
                    good is None
                    or self._refused is not None
                    or self._source.serial() != good.serial
                ):
                    installed = self._source.load_snapshot()
                    self._install(installed)
            self._good_at = self._clock()
            self._refused = None
        except SchemaError as exc:
            self._refused = exc
            self._note_failure(exc)
            self._report(False)
            return False
        except Exception as exc:  # any failure to read means "stale", never a crash
            self._note_failure(exc)
            self._report(False)
            return False
        self._note_recovery()
        self._note_no_domains()
        self._report(True)
        if installed is not None:
            self._tell(installed)
        return True

    def _tell(self, snapshot: Snapshot) -> None:
        """Hand a new snapshot to ``on_snapshot``; its bug is logged, the poll still counts."""
        if self._on_snapshot is None:
            return
        try:
            self._on_snapshot(snapshot)
        except Exception:
            log.exception("%s", logfmt.Fields({"event": "internal-error", "where": "on-snapshot"}))

    def _note_no_domains(self) -> None:
        """A store without local domains checks nothing: say so at once, then every 10 minutes."""
        good = self._good
        if good is None or good.domains:
            self._no_domains_warned = None
            return
        now = self._clock()
        if self._no_domains_warned is None or now - self._no_domains_warned >= NO_DOMAINS_EVERY:
            self._no_domains_warned = now
            log.warning(
                "%s",
                logfmt.Fields(
                    {
                        "event": "no-local-domains",
                        "state": "nothing is checked: every message passes",
                        "fix": "smtpauth-milter domain add YOUR.DOMAIN",
                    }
                ),
            )

    def _report(self, ok: bool) -> None:
        if self._on_refresh is not None:
            self._on_refresh(ok)

    def _install(self, snapshot: Snapshot) -> None:
        previous = self._good
        self._good = snapshot
        self._unavailable = Snapshot.unavailable(snapshot)
        if previous is None or previous.serial != snapshot.serial:
            counts = {
                "serial": snapshot.serial,
                "domains": len(snapshot.domains),
                "grants": len(snapshot.grants),
                "networks": len(snapshot.networks.networks),
            }
            log.info(
                "%s",
                logfmt.Fields(
                    {"event": "snapshot-loaded"} | {k: str(v) for k, v in counts.items()}
                ),
            )

    def _note_failure(self, exc: Exception) -> None:
        now = self._clock()
        first = self._failing_since is None
        if first:
            self._failing_since = now
        age = self.age()
        stale = isinstance(exc, SchemaError) or age is None or age > self._max_stale
        # Once per WARN_EVERY, plus once when the last good snapshot expires:
        # the moment the milter starts tempfailing must be in the log.
        if first or stale != self._warned_stale or now - self._last_warning >= WARN_EVERY:
            self._last_warning = now
            self._warned_stale = stale
            state = (
                "schema not readable by this version: tempfailing"
                if isinstance(exc, SchemaError)
                else "no settings loaded yet: tempfailing"
                if age is None
                else f"using the snapshot from {age:.0f}s ago"
                if age <= self._max_stale
                else "snapshot older than --max-stale: tempfailing"
            )
            log.warning(
                "%s",
                logfmt.Fields({"event": "store-unreadable", "state": state, "error": str(exc)}),
            )

    def _note_recovery(self) -> None:
        if self._failing_since is not None:
            after = f"{self._clock() - self._failing_since:.1f}s"
            log.warning("%s", logfmt.Fields({"event": "store-recovered", "after": after}))
            self._failing_since = None

    # --- thread ---------------------------------------------------------------

    def start(self, interval: float) -> None:
        self._interval = interval
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="snapshot-refresh", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.refresh()

    def poke(self) -> None:
        """Poll the store now instead of at the end of the interval (a reload)."""
        self._wake.set()

    def configure(self, max_stale: float, interval: float) -> None:
        """New --max-stale and --refresh, in effect from the next poll (a reload)."""
        self._max_stale = max_stale
        self._interval = interval

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
