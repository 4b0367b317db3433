"""A lookup with a cache in front and the worker pool behind: what callers use."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from smtpauth_milter.lookups.cache import TtlCache
from smtpauth_milter.lookups.runner import LookupFailed, LookupRunner

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LookupObserver(Protocol):
    """Told about every lookup, for metrics: ``outcome`` is hit, answer, timeout,
    overloaded or error; ``seconds`` is the wait (0 for a cache hit)."""

    def __call__(self, source: str, outcome: str, seconds: float) -> None: ...


class CachedLookup(Generic[K, V]):
    """Answers for keys: from the cache while fresh, else fetched on the pool.

    ``fetch(key)`` returns ``(answer, ttl)``; a negative answer ("nothing
    found") is an answer like any other and is cached the same way.  Failures
    are never cached: the next caller tries again, so a source that comes back
    is used at once.

    Make one per configuration of the source (its maps, its resolver): callers
    join a lookup already under way only through the same instance, so a lookup
    started under a configuration that has since changed never answers (nor
    fills the cache of) the new one, which starts from an empty cache.
    """

    def __init__(
        self,
        source: str,
        fetch: Callable[[K], tuple[V, float]],
        *,
        runner: LookupRunner,
        cache: TtlCache[K, V],
        deadline: float,
        observe: LookupObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._fetch = fetch
        self._runner = runner
        self._cache = cache
        self._deadline = deadline
        self._observe = observe
        self._clock = clock
        self._scope = object()  # this configuration's lookups, in the shared runner

    def get(self, key: K) -> V:
        """The answer for ``key``; :class:`LookupFailed` when there is none in time."""
        hit = self._cache.get(key)
        if hit is not None:
            self._tell("hit", 0.0)
            return hit.value
        started = self._clock()
        try:
            value, ttl = self._runner.run(
                (self.source, self._scope, key), lambda: self._fetch(key), self._deadline
            )
        except LookupFailed as exc:
            self._tell(exc.reason, self._clock() - started)
            raise
        self._cache.put(key, value, ttl)
        self._tell("answer", self._clock() - started)
        return value

    def _tell(self, outcome: str, seconds: float) -> None:
        if self._observe is not None:
            self._observe(self.source, outcome, seconds)
