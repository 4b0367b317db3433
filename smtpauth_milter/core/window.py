"""Sliding windows in fine buckets: what a login did in the last WINDOW seconds. Pure
(the time is always passed in: tests and the milter give their own clock).

A window of W seconds (whole minutes) is cut into 60 buckets of ``W / 60``
seconds (:func:`width`).  Bucket ``b`` holds the events at wall-clock times
``[b * width, (b + 1) * width)``; a count over the window adds the buckets
from ``bucket(now) - 60`` on: every event of the last W seconds, and at most
one bucket (W/60) more.  A limit therefore never lets more through
than it says; it may hold back for at most W/60 longer.

Wall-clock time, because several milters share the buckets in the store.
When the clock steps back, buckets "in the future" keep counting (nothing
falls out of the window early) until the clock has passed them by a window.
"""

from __future__ import annotations

import functools
import ipaddress

from smtpauth_milter.core.networks import IPAddress

BUCKETS = 60


def width(window: int) -> int:
    """Seconds per bucket for a window of ``window`` seconds."""
    return max(1, window // BUCKETS)


def buckets(window: int) -> int:
    """How many buckets before the current one a window reaches back."""
    return -(-window // width(window))  # 60 for every window of whole minutes


def bucket(now: float, step: int) -> int:
    return int(now // step)


def first_bucket(now: float, window: int) -> int:
    """The oldest bucket still in the window at ``now``."""
    return bucket(now, width(window)) - buckets(window)


@functools.lru_cache(maxsize=4096)
def client_key(address: IPAddress) -> str:
    """What counts as one client address: IPv4 as is, IPv6 by its /64 (cached: the same
    clients come again and again)."""
    if address.version == 6:
        return str(ipaddress.IPv6Network((int(address) >> 64 << 64, 64)))
    return str(address)


class WindowCount:
    """Events per bucket for one window; not thread-safe (the caller holds a lock).

    The total over the window is kept, and summed anew only when the window's first
    bucket is not the one it was kept for (once per bucket width, or after the clock
    stepped): it is asked once per recipient."""

    __slots__ = ("_buckets", "_first", "_total", "span", "step", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.step = width(window)  # computed once: these run once per recipient
        self.span = buckets(window)
        self._buckets: dict[int, int] = {}
        self._first = -1  # the first bucket _total is kept for (-1: none yet)
        self._total = 0

    def add(self, now: float, n: int = 1) -> int:
        """Count ``n`` events at ``now``; returns their bucket."""
        key = int(now // self.step)
        self._buckets[key] = self._buckets.get(key, 0) + n
        if key >= self._first:
            self._total += n
        return key

    def total(self, now: float) -> int:
        first = int(now // self.step) - self.span
        if first != self._first:
            self._total = sum([n for key, n in self._buckets.items() if key >= first])
            self._first = first
        return self._total

    def prune(self, now: float) -> bool:
        """Forget buckets out of the window; True when nothing is left."""
        first = int(now // self.step) - self.span
        old = [key for key in self._buckets if key < first]
        for key in old:
            del self._buckets[key]
        if old:
            self._first = -1  # summed anew when next asked
        return not self._buckets


class WindowSet:
    """Distinct keys (client addresses) seen in a window, each with its newest bucket."""

    __slots__ = ("_seen", "span", "step", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.step = width(window)
        self.span = buckets(window)
        self._seen: dict[str, int] = {}

    def add(self, now: float, key: str) -> int:
        at = int(now // self.step)
        if self._seen.get(key, at - 1) < at:
            self._seen[key] = at
        return at

    def keys(self, now: float) -> set[str]:
        first = int(now // self.step) - self.span
        return {key for key, at in self._seen.items() if at >= first}

    def prune(self, now: float) -> bool:
        first = int(now // self.step) - self.span
        for key in [key for key, at in self._seen.items() if at < first]:
            del self._seen[key]
        return not self._seen
