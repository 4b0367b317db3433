"""SPF (RFC 7208) for one client IP and MAIL FROM, for the milter and ``check``.

:class:`SpfChecks` runs every check on the lookup pool and waits at most
``spf-timeout`` plus :data:`DEADLINE_MARGIN`: no answer in time is a temperror.
Answers are cached as long as DNS allows (at most :data:`MAX_TTL`) per client
IP and sender domain, or per whole sender when a record read used the local
part (``%{l}``, ``%{s}``: :func:`~smtpauth_milter.core.spf.uses_local_part`).
At most :data:`DOMAIN_RUNNING` checks of one domain run at once
(:mod:`smtpauth_milter.lookups.spfslots`), so a slow domain leaves the other
workers to everyone else.  Everything (cache, checks in flight, turns, the
evaluator) belongs to one (``dns-resolver``, ``spf-timeout``): a change starts
afresh.

The evaluation itself (pyspf over our own DNS lookups) is in
:mod:`smtpauth_milter.lookups.spfdns`, imported at the first check of a process.
Its evaluator is made on the pool by the check that needs it; a failure to make
one (no usable resolv.conf) is that check's temperror, the next check tries
again, and a changed resolv.conf is read again (see :class:`_Evaluators`).
Nothing here raises: every failure is an :class:`SpfAnswer`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING

from smtpauth_milter.core.networks import IPAddress
from smtpauth_milter.core.policy import spf_identity
from smtpauth_milter.core.spf import (
    SYSTEM_RESOLVERS,
    SpfAnswer,
    SpfResult,
    SystemResolvers,
    split_sender,
)
from smtpauth_milter.lookups.cache import TtlCache
from smtpauth_milter.lookups.cached import LookupObserver
from smtpauth_milter.lookups.runner import DEADLINE_MARGIN, LookupFailed, LookupRunner
from smtpauth_milter.lookups.spfslots import DomainSlots

if TYPE_CHECKING:
    from smtpauth_milter.lookups.spfdns import SpfEvaluator

CACHE_ENTRIES = 4096
WORKERS = 8
QUEUE_SIZE = 64
DOMAIN_RUNNING = 2  # checks of one sender domain on the pool at once
DOMAIN_WAITING = 8  # more checks of that domain that may wait for a turn
RESOLV_CONF_MAX_AGE = 60.0  # the system's resolv.conf is read again at least this often
# dnspython overruns a query's lifetime by its last retry backoff (about 0.2 s):
# the waiting thread allows DEADLINE_MARGIN (0.5 s) on top of spf-timeout.


def make_evaluator(
    resolver: str, timeout: float, system: SystemResolvers = SYSTEM_RESOLVERS
) -> SpfEvaluator:
    """The evaluator for these settings; the first call of a process imports pyspf
    and dnspython (:mod:`smtpauth_milter.lookups.spfdns`, ~60 ms, once).
    Raises when there is no resolver (e.g. a resolv.conf without nameservers)."""
    from smtpauth_milter.lookups.spfdns import SpfEvaluator

    return SpfEvaluator(resolver, timeout, system)


def _stamp(path: str) -> tuple[int, int, int, int] | None:
    """What tells a changed file: device, inode, mtime, size (None: cannot be read)."""
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


class _Evaluators:
    """The evaluator for one (dns-resolver, spf-timeout), made by the check that needs it.

    A failure to make one is kept by nobody: that check is a temperror and the
    next one tries again.  With the system's resolvers (``dns-resolver`` empty)
    resolv.conf is read again when its device, inode, mtime or size changed, and
    at least every :data:`RESOLV_CONF_MAX_AGE` seconds.
    """

    def __init__(
        self, resolver: str, timeout: float, system: SystemResolvers, clock: Callable[[], float]
    ) -> None:
        self._resolver = resolver
        self._timeout = timeout
        self._system = system
        self._clock = clock
        self._lock = threading.Lock()
        self._evaluator: SpfEvaluator | None = None
        self._stamp: tuple[int, int, int, int] | None = None
        self._made = 0.0

    def get(self) -> SpfEvaluator:
        """Runs on the pool: may import pyspf and read resolv.conf; raises when no
        evaluator can be made."""
        system = not self._resolver
        stamp = _stamp(self._system.path) if system else None  # before reading the file
        with self._lock:  # one maker at a time; the others use what it made
            current = self._evaluator
            if current is not None and (
                not system
                or (stamp == self._stamp and self._clock() - self._made < RESOLV_CONF_MAX_AGE)
            ):
                return current
            self._evaluator = None
            made = make_evaluator(self._resolver, self._timeout, self._system)
            self._evaluator, self._stamp, self._made = made, stamp, self._clock()
            return made


# (client IP, sender domain, local part or None): None for an answer that holds for
# the whole domain; an answer marked local_part there sends the search one level down.
SpfKey = tuple[IPAddress, str, str | None]
Flight = tuple[IPAddress, str]  # (client IP, sender): the checks one evaluation answers


class _Generation:
    """Everything of one (dns-resolver, spf-timeout): changing either starts a new one."""

    def __init__(
        self, resolver: str, timeout: float, system: SystemResolvers, clock: Callable[[], float]
    ) -> None:
        self.config = (resolver, timeout)
        self.cache: TtlCache[SpfKey, SpfAnswer] = TtlCache(CACHE_ENTRIES, clock)
        self.flights: dict[Flight, Future[SpfAnswer]] = {}
        self.lock = threading.Lock()
        self.slots = DomainSlots(DOMAIN_RUNNING, DOMAIN_WAITING)
        self.evaluators = _Evaluators(resolver, timeout, system, clock)

    def cached(self, client: IPAddress, domain: str, local: str) -> SpfAnswer | None:
        hit = self.cache.get((client, domain, None))
        if hit is None or not hit.value.local_part:
            return None if hit is None else hit.value
        hit = self.cache.get((client, domain, local))
        return None if hit is None else hit.value

    def keep(self, client: IPAddress, domain: str, local: str, answer: SpfAnswer) -> None:
        self.cache.put((client, domain, None), answer, answer.ttl)
        if answer.local_part:
            self.cache.put((client, domain, local), answer, answer.ttl)


class SpfChecks:
    """SPF for the milter and ``check``: cached, on the lookup pool, never longer than
    ``spf-timeout`` plus :data:`DEADLINE_MARGIN`; no answer in time is a temperror."""

    SOURCE = "spf"

    def __init__(
        self,
        observe: LookupObserver | None = None,
        clock: Callable[[], float] = time.monotonic,
        runner: LookupRunner | None = None,
        system: SystemResolvers = SYSTEM_RESOLVERS,
    ) -> None:
        self._observe = observe
        self._clock = clock
        self._runner = runner or LookupRunner(self.SOURCE, WORKERS, QUEUE_SIZE)
        self._system = system
        self._generation: _Generation | None = None
        self._lock = threading.Lock()

    def _generation_for(self, resolver: str, timeout: float) -> _Generation:
        with self._lock:
            current = self._generation
            if current is None or current.config != (resolver, timeout):
                current = _Generation(resolver, timeout, self._system, self._clock)
                self._generation = current  # only the settings in force
            return current

    def check(self, resolver: str, timeout: float, client: IPAddress, mail_from: str) -> SpfAnswer:
        """The SPF answer for ``client`` and the raw MAIL FROM ``mail_from``; never raises."""
        gen = self._generation_for(resolver, timeout)
        sender = spf_identity(mail_from)
        local, domain = split_sender(sender) or ("", "")
        answer = gen.cached(client, domain, local)
        if answer is not None:
            self._tell("hit", 0.0)
            return answer
        started = self._clock()
        try:
            answer = self._fetch(gen, client, sender, timeout + DEADLINE_MARGIN)
        except LookupFailed as exc:
            self._tell(exc.reason, self._clock() - started)
            return SpfAnswer(
                SpfResult.TEMPERROR, None, 0.0, exc.detail, timed_out=exc.reason == "timeout"
            )
        self._tell("answer", self._clock() - started)
        return answer

    def _fetch(self, gen: _Generation, client: IPAddress, sender: str, wait: float) -> SpfAnswer:
        """The answer of the evaluation for (client, sender) in flight, started here if
        there is none; :class:`LookupFailed` when there is none within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        flight = (client, sender)
        with gen.lock:
            future = gen.flights.get(flight)
            leading = future is None
            if future is None:
                future = gen.flights[flight] = Future()
        if leading:
            self._lead(gen, flight, future, deadline)
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            raise LookupFailed("timeout", f"spf: no answer within {wait:g} s") from None

    def _lead(
        self, gen: _Generation, flight: Flight, future: Future[SpfAnswer], deadline: float
    ) -> None:
        """Take a turn for the sender domain and run the evaluation on the pool; it
        settles ``future`` for every check waiting on it, in time or not."""
        client, sender = flight
        local, domain = split_sender(sender) or ("", "")  # again: a miss, not the hot path
        try:
            gen.slots.acquire(domain, deadline - time.monotonic())
        except LookupFailed as exc:
            _settle(gen, flight, future, exc)
            return

        state = ["queued"]  # then "running", or "dropped" when its caller gave up first

        def evaluate() -> None:
            with gen.lock:
                if state[0] == "dropped":
                    return
                state[0] = "running"
            try:
                answer = gen.evaluators.get().evaluate(client, sender)
            except Exception as exc:  # no evaluator: no resolver, pyspf not importable
                gen.slots.release(domain)
                _settle(gen, flight, future, LookupFailed("error", f"spf: {exc}"))
                return
            gen.slots.release(domain)
            gen.keep(client, domain, local, answer)  # cached before the flight ends
            _settle(gen, flight, future, answer)

        try:  # the key is this job's own: joining is done by the flights above
            self._runner.run(object(), evaluate, max(0.0, deadline - time.monotonic()))
        except LookupFailed as exc:
            with gen.lock:
                dropped = state[0] == "queued"
                state[0] = "dropped" if dropped else state[0]
            if dropped:  # refused, or given up while queued (a runner may drop it then)
                gen.slots.release(domain)
                _settle(gen, flight, future, exc)
            # else it is running: it ends within spf-timeout and settles the future then

    def _tell(self, outcome: str, seconds: float) -> None:
        if self._observe is not None:
            self._observe(self.SOURCE, outcome, seconds)

    def stop(self) -> None:
        self._runner.stop()


def _settle(
    gen: _Generation, flight: Flight, future: Future[SpfAnswer], outcome: SpfAnswer | LookupFailed
) -> None:
    with gen.lock:
        if gen.flights.get(flight) is future:
            del gen.flights[flight]
    if isinstance(outcome, LookupFailed):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
