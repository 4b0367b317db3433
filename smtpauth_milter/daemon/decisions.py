"""Each milter's decisions, counted in memory for the console's Dashboard.

:meth:`DecisionCounts.count` runs on libmilter's threads beside the decision's
log line: a dictionary increment under a lock, no I/O.  The ``login-sync``
thread takes the counts once per interval and adds them to the state store
(store/decisioncounts.py) in the same transaction as the login counts.

The keys stay few: (hour, rule, action, domain whose settings decided) is
bounded by the rules, actions and configured domains; refused logins and
client addresses are kept for at most :data:`MAX_REFUSED` distinct keys per
interval, the rest counted as :data:`OTHERS`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from smtpauth_milter.core.policy import Verdict
from smtpauth_milter.store.decisioncounts import (
    CLIENT,
    HOUR,
    KEEP_HOURS,
    LOGIN,
    Counts,
    RefusedKey,
)

MAX_REFUSED = 10_000  # distinct refused (login or client) keys per interval
OTHERS = "(others)"


class DecisionCounts:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._counts = Counts()

    def count(self, verdict: Verdict, login: str | None, client: str | None) -> None:
        """One decision (a recipient's, or a message's header check)."""
        hour = int(self._clock()) // HOUR
        domain = verdict.domain or ""
        # _value_, not .value: the enum property costs ~0.35 us a call on Python 3.11
        key = (hour, verdict.rule._value_, verdict.action._value_, domain)
        with self._lock:
            decisions = self._counts.decisions
            decisions[key] = decisions.get(key, 0) + 1
            if verdict.refuses:
                for kind, value in ((LOGIN, login), (CLIENT, client)):
                    if value:
                        _add_refused(self._counts.refused, (hour, kind, value[:320], domain), 1)

    def take(self) -> Counts:
        """The counts since the last take (the ``login-sync`` thread's batch)."""
        with self._lock:
            taken, self._counts = self._counts, Counts()
        return taken

    def give_back(self, counts: Counts) -> None:
        """A batch the store did not take: counted again next time, but not hours the
        store would prune anyway (an outage keeps memory bounded)."""
        oldest = int(self._clock()) // HOUR - KEEP_HOURS
        with self._lock:
            mine = self._counts.decisions
            for key, n in counts.decisions.items():
                if key[0] >= oldest:
                    mine[key] = mine.get(key, 0) + n
            for key, n in counts.refused.items():
                if key[0] >= oldest:
                    _add_refused(self._counts.refused, key, n)


def _add_refused(refused: dict[RefusedKey, int], key: RefusedKey, n: int) -> None:
    if key not in refused and len(refused) >= MAX_REFUSED:
        key = (key[0], key[1], OTHERS, key[3])
    refused[key] = refused.get(key, 0) + n
