"""Map trouble in the log: at most one pair of lines per map per minute, whatever other
lookups do.

While a map fails, ``event=map-unreadable`` says why, at most once per
``every`` seconds per map (``failures=`` counts the failures since that map's
last such line, when more than one); ``event=map-recovered`` follows when the
map answers again.  A map that fails and answers by turns writes one pair a
minute, not one per failure.  Maps are counted apart: one map's answer never
hides another's failure, and only a map that answered is counted as recovered.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from smtpauth_milter.core import logfmt

log = logging.getLogger("smtpauth_milter")

WARN_EVERY = 60.0


@dataclass
class _State:
    warned: float  # when map-unreadable was last written for this map
    since: float | None = None  # failing since (None: answering)
    told: bool = False  # map-unreadable was written for this failure
    failures: int = 0  # since the last map-unreadable line


class Warner:
    def __init__(self, clock: Callable[[], float], every: float = WARN_EVERY) -> None:
        self._clock = clock
        self._every = every
        self._maps: dict[str, _State] = {}
        self._lock = threading.Lock()

    def trouble(self, map_name: str, error: str) -> None:
        now = self._clock()
        with self._lock:
            state = self._maps.get(map_name)
            if state is None:
                state = self._maps[map_name] = _State(warned=now - self._every)
            if state.since is None:
                state.since, state.told = now, False
            state.failures += 1
            due = now - state.warned >= self._every
            failures = state.failures
            if due:
                state.warned, state.told, state.failures = now, True, 0
        if due:
            fields = {"event": "map-unreadable", "map": map_name, "error": error}
            if failures > 1:
                fields["failures"] = str(failures)
            log.warning("%s", logfmt.Fields(fields))

    def fine(self, map_names: Sequence[str]) -> None:
        if not self._maps:
            return
        now = self._clock()
        told: list[dict[str, str]] = []
        with self._lock:
            for map_name in map_names:
                state = self._maps.get(map_name)
                if state is None or state.since is None:
                    continue
                if state.told:
                    after = f"{now - state.since:.1f}s"
                    told.append({"event": "map-recovered", "map": map_name, "after": after})
                state.since, state.told = None, False
                if not state.failures and now - state.warned >= self._every:
                    del self._maps[map_name]  # nothing left to tell: forgotten
        for fields in told:
            log.warning("%s", logfmt.Fields(fields))
