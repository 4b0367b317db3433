"""SPF (RFC 7208) for one client IP and MAIL FROM, for the milter and ``check``.

:class:`SpfChecks` caches each answer as long as DNS allows (at most
:data:`MAX_TTL`) and runs every check on the lookup pool, waiting at most
``spf-timeout`` plus :data:`DEADLINE_MARGIN`: no answer in time is a temperror.
The evaluation itself (pyspf over our own DNS lookups) is in
:mod:`smtpauth_milter.lookups.spfdns`, imported at the first check of a process.
Nothing here raises: every failure is an :class:`SpfAnswer`.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from smtpauth_milter.core.networks import IPAddress
from smtpauth_milter.core.policy import spf_identity
from smtpauth_milter.core.spf import SpfResult
from smtpauth_milter.lookups.cache import TtlCache
from smtpauth_milter.lookups.cached import CachedLookup, LookupObserver
from smtpauth_milter.lookups.runner import DEADLINE_MARGIN, LookupFailed, LookupRunner

if TYPE_CHECKING:
    from smtpauth_milter.lookups.spfdns import SpfEvaluator

MAX_TTL = 3600.0  # cache an answer at most this long, whatever DNS says
CACHE_ENTRIES = 4096
WORKERS = 8
QUEUE_SIZE = 64
# dnspython overruns a query's lifetime by its last retry backoff (about 0.2 s):
# the waiting thread allows DEADLINE_MARGIN (0.5 s) on top of spf-timeout.


@dataclass(frozen=True, slots=True)
class SpfAnswer:
    result: SpfResult
    record: str | None  # the sender domain's own SPF record, when one was found
    ttl: float  # how long the answer may be cached; 0 for temperror
    detail: str  # pyspf's explanation or error, for ``check`` and the log
    timed_out: bool = False  # some DNS query ran out of time


def make_evaluator(resolver: str, timeout: float) -> SpfEvaluator:
    """The evaluator for these settings; the first call of a process imports pyspf
    and dnspython (:mod:`smtpauth_milter.lookups.spfdns`, ~60 ms, once)."""
    from smtpauth_milter.lookups.spfdns import SpfEvaluator

    return SpfEvaluator(resolver, timeout)


# (client IP, raw MAIL FROM): the local part counts too (%{l} macros).  Raw, so that
# a cache hit costs no parsing; spellings of one address merely share no entry.
SpfKey = tuple[IPAddress, str]


class SpfChecks:
    """SPF for the milter and ``check``: cached, on the lookup pool, never longer than
    ``spf-timeout`` plus :data:`DEADLINE_MARGIN`; no answer in time is a temperror.

    One cache per (dns-resolver, spf-timeout): changing either starts afresh.
    """

    SOURCE = "spf"

    def __init__(
        self,
        observe: LookupObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        runner: LookupRunner | None = None,
    ) -> None:
        self._observe = observe
        self._clock = clock
        self._runner = runner or LookupRunner(self.SOURCE, WORKERS, QUEUE_SIZE)
        self._lookups: dict[tuple[str, float], CachedLookup[SpfKey, SpfAnswer]] = {}
        self._lock = threading.Lock()

    def _lookup_for(self, resolver: str, timeout: float) -> CachedLookup[SpfKey, SpfAnswer]:
        with self._lock:
            lookup = self._lookups.get((resolver, timeout))
            if lookup is None:
                # Made by the first fetch, on the pool: importing pyspf and reading
                # resolv.conf count against that check's deadline, and a failure is
                # that check's temperror, never a libmilter thread's wait or crash.
                evaluator = functools.cache(functools.partial(make_evaluator, resolver, timeout))

                def fetch(key: SpfKey) -> tuple[SpfAnswer, float]:
                    answer = evaluator().evaluate(key[0], spf_identity(key[1]))
                    return answer, answer.ttl

                lookup = CachedLookup(
                    self.SOURCE,
                    fetch,
                    runner=self._runner,
                    cache=TtlCache(CACHE_ENTRIES, self._clock),
                    deadline=timeout + DEADLINE_MARGIN,
                    observe=self._observe,
                    clock=self._clock,
                )
                self._lookups = {(resolver, timeout): lookup}  # only the settings in force
            return lookup

    def check(self, resolver: str, timeout: float, client: IPAddress, mail_from: str) -> SpfAnswer:
        """The SPF answer for ``client`` and the raw MAIL FROM ``mail_from``; never raises."""
        lookup = self._lookup_for(resolver, timeout)
        try:
            return lookup.get((client, mail_from))
        except LookupFailed as exc:
            return SpfAnswer(
                SpfResult.TEMPERROR, None, 0.0, exc.detail, timed_out=exc.reason == "timeout"
            )

    def stop(self) -> None:
        self._runner.stop()
