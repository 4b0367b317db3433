"""Turns on the SPF lookup pool per sender domain, so one slow domain cannot take them all.

A domain whose record is slow to evaluate (``ptr``, ``exists`` with macros, an
``include:`` of a slow provider) costs up to ``spf-timeout`` of a worker per
check, and a sender who varies the local part of a macro-using record defeats
the cache.  :class:`DomainSlots` lets at most ``running`` checks of one domain
use the pool at once; up to ``waiting`` more wait for a turn (within their
own deadline); beyond that a check is refused at once (``overloaded``, a
temperror: 4xx).  Other domains keep the rest of the workers.
"""

from __future__ import annotations

import threading

from smtpauth_milter.lookups.runner import LookupFailed


class DomainSlots:
    """At most ``running`` turns per domain at once, ``waiting`` more queued for one."""

    def __init__(self, running: int, waiting: int) -> None:
        if running < 1 or waiting < 0:
            raise ValueError("a domain needs at least one turn and no negative queue")
        self._running = running
        self._waiting = waiting
        self._cond = threading.Condition()
        self._counts: dict[str, list[int]] = {}  # domain -> [running, waiting]; idle: absent

    def acquire(self, domain: str, timeout: float) -> None:
        """Take a turn for ``domain``, waiting at most ``timeout`` seconds for one;
        :class:`LookupFailed` ("overloaded", or "timeout" when none came in time)."""
        with self._cond:
            count = self._counts.setdefault(domain, [0, 0])
            if count[0] < self._running:
                count[0] += 1
                return
            if count[1] >= self._waiting or timeout <= 0:
                raise LookupFailed(
                    "overloaded",
                    f"spf: {count[0]} checks of {domain} running and {count[1]} waiting",
                )
            count[1] += 1
            try:
                turn = self._cond.wait_for(lambda: count[0] < self._running, timeout)
            finally:
                count[1] -= 1
            if not turn:
                raise LookupFailed("timeout", f"spf: no turn for {domain} within {timeout:.3g} s")
            count[0] += 1

    def release(self, domain: str) -> None:
        """End a turn taken with :meth:`acquire`."""
        with self._cond:
            count = self._counts[domain]
            count[0] -= 1
            if count == [0, 0]:
                del self._counts[domain]
            self._cond.notify_all()

    def busy(self, domain: str) -> tuple[int, int]:
        """(running, waiting) for ``domain`` right now."""
        with self._cond:
            running, waiting = self._counts.get(domain, (0, 0))
            return running, waiting
