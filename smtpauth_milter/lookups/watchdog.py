"""One thread that cuts off what overran its deadline: a database connection mid-call.

:meth:`Watchdog.guard` arms a cut-off for a block of code; leaving the block
disarms it, and once disarmed it can no longer run (disarming waits for a
cut-off already under way), so a connection handed back to a pool is never
cut off under its next user.  The thread starts on first use and again in a
forked child, so a process that forks first is safe.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator

Action = Callable[[], None]


class _Alarm:
    __slots__ = ("action", "lock")

    def __init__(self, action: Action) -> None:
        self.action: Action | None = action
        self.lock = threading.Lock()

    def fire(self) -> None:
        with self.lock:
            action, self.action = self.action, None
            if action is not None:
                with contextlib.suppress(Exception):  # a cut-off never kills the watchdog
                    action()

    def disarm(self) -> None:
        with self.lock:
            self.action = None


class Watchdog:
    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._cond = threading.Condition()
        self._alarms: list[tuple[float, int, _Alarm]] = []
        self._order = itertools.count()
        self._pid: int | None = None  # the process whose thread runs the alarms

    @contextlib.contextmanager
    def guard(self, at: float, action: Action) -> Iterator[None]:
        """Run ``action`` (once) if the block has not ended by ``at`` (this clock)."""
        alarm = _Alarm(action)
        with self._cond:
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._alarms = []
                threading.Thread(target=self._watch, name=self.name, daemon=True).start()
            heapq.heappush(self._alarms, (at, next(self._order), alarm))
            self._cond.notify()
        try:
            yield
        finally:
            alarm.disarm()

    def _watch(self) -> None:
        while True:
            with self._cond:
                while self._alarms and self._alarms[0][2].action is None:
                    heapq.heappop(self._alarms)  # disarmed
                if not self._alarms:
                    self._cond.wait()
                    continue
                left = self._alarms[0][0] - self._clock()
                if left > 0:
                    self._cond.wait(left)
                    continue
                alarm = heapq.heappop(self._alarms)[2]
            alarm.fire()
