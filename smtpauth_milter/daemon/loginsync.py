"""The ``login-sync`` thread: once per interval, this milter's login counts and freezes go
to the store and every milter's come back (store/loginstate.py), in one transaction.

Beside the ``snapshot-refresh`` thread, it is the only other code in the
milter process that touches a database; libmilter's threads never wait for
it.  When the store cannot be written the batch is kept for the next try
(its buckets while they are in a window), counting goes on in memory, frozen
logins stay frozen, and one line says so (then once a minute).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session

from smtpauth_milter.core import logfmt
from smtpauth_milter.daemon.decisions import DecisionCounts
from smtpauth_milter.daemon.logins import LoginLimiter
from smtpauth_milter.store import decisioncounts, loginstate
from smtpauth_milter.store.engine import Store

log = logging.getLogger("smtpauth_milter")

INTERVAL = 1.0  # seconds between exchanges (docs/policy.md#one-count-for-the-whole-site)
PRUNE_EVERY = 60.0
WARN_EVERY = 60.0


class LoginSync:
    def __init__(
        self,
        limiter: LoginLimiter,
        state: Store,
        clock: Callable[[], float] = time.time,
        decisions: DecisionCounts | None = None,
    ) -> None:
        self._limiter = limiter
        self._decisions = decisions  # the Dashboard's counts, flushed in the same transaction
        self._state = state  # where the counts and freezes are
        self._clock = clock
        self._checked = False
        self._pruned = 0.0
        self._failing_since: float | None = None
        self._warned = 0.0
        self._decisions_warned = -WARN_EVERY
        self._interval = INTERVAL
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def cycle(self) -> bool:
        """One exchange; True when the store took the batch."""
        now = self._clock()
        batch = self._limiter.take()
        counts = self._decisions.take() if self._decisions is not None else None
        try:
            if not self._checked:
                self._state.check_schema()
                self._checked = True
            with self._state.read_deadline(), loginstate.writing(self._state) as session:
                readback = loginstate.exchange(session, batch, now)
                taken = counts
                if taken and not self._dashboard(
                    session, now, lambda: decisioncounts.write(session, taken)
                ):
                    self._give_back(taken)  # kept for the next cycle
                    counts = None
                if now - self._pruned >= PRUNE_EVERY:
                    loginstate.prune(session, now)
                    self._dashboard(session, now, lambda: decisioncounts.prune(session, now))
                    self._pruned = now
        except Exception as exc:  # an outage: keep counting in memory, never crash
            self._limiter.give_back(batch, now)
            self._give_back(counts)
            self._note_failure(now, exc)
            return False
        for login, by in self._limiter.absorb(readback, batch, now):
            log.warning("%s", logfmt.Fields({"event": "login-unfrozen", "login": login, "by": by}))
        if now - self._pruned < self._interval:  # just pruned the store: the memory too
            self._limiter.prune(now)
        self._note_recovery(now)
        return True

    def _give_back(self, counts: decisioncounts.Counts | None) -> None:
        if self._decisions is not None and counts:
            self._decisions.give_back(counts)

    def _dashboard(self, session: Session, now: float, work: Callable[[], object]) -> bool:
        """The Dashboard's writes, in a savepoint: a store that refuses them (a state role
        not yet granted the 0007 tables) never stops the login counts and freezes."""
        try:
            with session.begin_nested():
                work()
        except Exception as exc:
            if now - self._decisions_warned >= WARN_EVERY:
                self._decisions_warned = now
                fields = {
                    "event": "decision-counts-unwritable",
                    "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                }
                log.warning("%s", logfmt.Fields(fields))
            return False
        return True

    def _note_failure(self, now: float, exc: Exception) -> None:
        first = self._failing_since is None
        if first:
            self._failing_since = now
        if first or now - self._warned >= WARN_EVERY:
            self._warned = now
            fields = {
                "event": "login-state-unwritable",
                "state": "counting in memory; frozen logins stay frozen",
                "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            }
            log.warning("%s", logfmt.Fields(fields))

    def _note_recovery(self, now: float) -> None:
        if self._failing_since is not None:
            after = f"{now - self._failing_since:.1f}s"
            log.warning("%s", logfmt.Fields({"event": "login-state-written", "after": after}))
            self._failing_since = None

    # --- thread ---------------------------------------------------------------

    def start(self, interval: float = INTERVAL) -> None:
        """One exchange now (the store's freezes are in force before the first session, as
        the first snapshot is: a restarted milter forgets no freeze for a second), then
        one per ``interval`` from the thread."""
        self._interval = interval
        self.cycle()
        self._thread = threading.Thread(target=self._run, name="login-sync", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.cycle()

    def stop(self) -> None:
        """Stop, after one last exchange: what was counted is not lost with a restart."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if not self._thread.is_alive():  # else it is stuck in the store: do not wait too
                self.cycle()
