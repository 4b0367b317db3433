"""A bounded, thread-safe cache whose entries expire: least recently used goes first."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class Hit(Generic[V]):
    """A cached answer (``value`` may itself be "nothing found": a negative answer)."""

    value: V


class TtlCache(Generic[K, V]):
    """At most ``max_entries`` answers, each valid for its own time to live.

    ``clock`` is injected so tests step time instead of sleeping.
    """

    def __init__(self, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("a cache needs room for at least one entry")
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> Hit[V] | None:
        """The cached answer, or None when there is none or it has expired."""
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, value = entry
            if expires <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return Hit(value)

    def put(self, key: K, value: V, ttl: float) -> None:
        """Keep ``value`` for ``ttl`` seconds; a ttl of 0 or less keeps nothing."""
        if ttl <= 0:
            return
        expires = self._clock() + ttl
        with self._lock:
            self._entries[key] = (expires, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
