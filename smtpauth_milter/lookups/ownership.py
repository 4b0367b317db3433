"""``sender-login-maps``: the ordered maps asked who owns a sender, cached, bounded, fail closed.

Postfix's order is kept: for each key (:mod:`.keys`), every map is asked in
order, and the first answer wins.  Each map is asked once per lookup (one
``postmap`` batch, or the SQL query per key until one answers): a map that
answered key *i* leaves only keys before *i* to the maps after it.  One lookup
(every map, every key) may take ``sender-login-maps-timeout`` seconds in all.

:class:`Ownership` is what the milter and ``check`` use: a warm answer is a
memory read; a cold one runs on the lookup workers and is waited for at most
``sender-login-maps-timeout`` plus :data:`DEADLINE_MARGIN` seconds.  Trouble is
never an exception here: it is a FAILED :class:`MapAnswer`, and the decision
tempfails.  A map in trouble is logged at most once a minute (:mod:`.warner`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.addresses import Address
from smtpauth_milter.core.ownermaps import (
    NOT_FOUND,
    SQL_TYPE,
    MapAnswer,
    MapSpec,
    failed,
    found,
    garbage,
    parse_map_list,
)
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.lookups.cache import TtlCache
from smtpauth_milter.lookups.cached import CachedLookup, LookupObserver
from smtpauth_milter.lookups.keys import Probe, lookup_keys
from smtpauth_milter.lookups.postfix import MapError, PostfixTable
from smtpauth_milter.lookups.runner import DEADLINE_MARGIN, LookupFailed, LookupRunner
from smtpauth_milter.lookups.sqlmap import PROBE, SqlMap
from smtpauth_milter.lookups.warner import Warner

log = logging.getLogger("smtpauth_milter")

SOURCE = "sender-login-maps"
CACHE_ENTRIES = 10_000


class MapSource(Protocol):
    @property
    def name(self) -> str: ...

    def first(self, probes: Sequence[Probe], seconds: float) -> tuple[str, str] | None: ...


def make_source(spec: MapSpec, settings: Settings) -> MapSource:
    """The reader for one map: postmap with ``postfix-config-dir``, or our SQL client."""
    if spec.type == SQL_TYPE:
        return SqlMap(spec, settings.sender_login_maps_timeout)
    return PostfixTable(spec, settings.postfix_config_dir)


def _one_line(exc: Exception) -> str:
    if isinstance(exc, MapError):
        return str(exc)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def probe(source: MapSource, timeout: float) -> None:
    """Ask ``source`` one key (:data:`~.sqlmap.PROBE`): MapFailure when it cannot answer."""
    find_owners([source], [PROBE], timeout)


class MapFailure(MapError):
    def __init__(self, map_name: str, detail: str) -> None:
        super().__init__(f"{map_name}: {detail}")
        self.map_name = map_name


def find_owners(
    sources: Sequence[MapSource],
    probes: Sequence[Probe],
    timeout: float,
    observe: LookupObserver | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> MapAnswer:
    """The first answer in Postfix's order (key-major, then map); MapFailure on trouble,
    also when the maps together take longer than ``timeout`` seconds."""
    best: MapAnswer = NOT_FOUND
    limit = len(probes)
    end = time.monotonic() + timeout  # real seconds, whatever ``clock`` (metrics) is
    for source in sources:
        if limit == 0:
            break
        started = clock()
        try:
            left = end - time.monotonic()
            if left <= 0:
                raise MapError(f"no answer within {timeout:g} s (sender-login-maps-timeout)")
            hit = source.first(probes[:limit], left)
        except Exception as exc:  # a MapError, or a reader's own bug: a failure all the same
            if observe is not None:
                observe(source.name, "error", clock() - started)
            raise MapFailure(source.name, _one_line(exc)) from None
        if observe is not None:
            observe(source.name, "found" if hit else "not-found", clock() - started)
        if hit is not None:
            key, value = hit
            broken = garbage(value)
            if broken is not None:
                if observe is not None:
                    observe(source.name, "error", clock() - started)
                raise MapFailure(source.name, f"{broken} for {key!r}")
            limit = next(i for i, p in enumerate(probes) if p.key == key)
            best = found(source.name, key, value)
    return best


@dataclass(frozen=True)
class Rules:
    """What the key sequence depends on (recipient-delimiter, sender-login-maps-local-domains)."""

    delimiters: str
    local_domains: frozenset[str]

    @classmethod
    def of(cls, settings: Settings) -> Rules:
        return cls(settings.recipient_delimiter, settings.sender_login_maps_local_domains)

    def probes(self, sender: Address) -> tuple[Probe, ...]:
        return lookup_keys(sender, self.delimiters, self.local_domains)


class Ownership:
    """The maps of one ``sender-login-maps`` value, with their cache and workers."""

    def __init__(
        self,
        sources: Sequence[MapSource],
        rules: Rules,
        ttl: float,
        timeout: float,
        *,
        runner: LookupRunner,
        clock: Callable[[], float] = time.monotonic,
        observe: LookupObserver | None = None,
        warner: Warner | None = None,
    ) -> None:
        self.sources = tuple(sources)
        self.rules = rules
        self.timeout = timeout
        self._ttl = ttl
        self._clock = clock
        self._observe = observe
        self._warner = warner or Warner(clock)
        self._lookup: CachedLookup[tuple[Probe, ...], MapAnswer] = CachedLookup(
            SOURCE,
            self._fetch,
            runner=runner,
            cache=TtlCache(CACHE_ENTRIES, clock),
            deadline=timeout + DEADLINE_MARGIN,
            observe=observe,
            clock=clock,
        )

    def answer(self, sender: Address) -> MapAnswer:
        """Who owns ``sender``: FOUND, NOT_FOUND, or FAILED (never an exception)."""
        try:
            return self._lookup.get(self.rules.probes(sender))
        except LookupFailed as exc:
            if exc.reason != "error":  # a map's own error was logged by the worker
                self._warner.trouble(SOURCE, exc.detail)
            return failed(exc.detail)

    def answer_now(self, sender: Address) -> MapAnswer:
        """The same answer computed on this thread, no cache (``check`` and ``doctor``)."""
        try:
            return find_owners(self.sources, self.rules.probes(sender), self.timeout)
        except MapError as exc:
            return failed(str(exc))

    def probe(self) -> None:
        """Ask each sql: map one key, logging (rate-limited) why one cannot answer, and that
        one which had failed answers again: run on a lookup worker when the milter starts
        using these maps (at start, or when a snapshot brings them).  Changes no answer."""
        for source in self.sources:
            if not isinstance(source, SqlMap):
                continue
            alone = SqlMap(source.spec, source.timeout)  # a connection of its own, closed after
            try:
                probe(alone, self.timeout)
            except MapFailure as exc:
                self._warner.trouble(exc.map_name, str(exc))
            else:
                self._warner.fine([source.name])
            finally:
                alone.dispose()

    def close(self) -> None:
        """Let go of the maps' database connections (sql: maps); never raises."""
        for source in self.sources:
            dispose = getattr(source, "dispose", None)
            if dispose is None:
                continue
            try:
                dispose()
            except Exception as exc:  # a dead server: nothing left to close
                log.warning("%s", logfmt.Fields({"event": "map-close-failed", "map": source.name,
                                                  "error": str(exc)}))  # fmt: skip

    def _fetch(self, probes: tuple[Probe, ...]) -> tuple[MapAnswer, float]:
        answered: list[str] = [SOURCE]

        def observe(source: str, outcome: str, seconds: float) -> None:
            if outcome != "error":
                answered.append(source)
            if self._observe is not None:
                self._observe(source, outcome, seconds)

        try:
            answer = find_owners(self.sources, probes, self.timeout, observe, self._clock)
        except MapFailure as exc:
            self._warner.trouble(exc.map_name, str(exc))
            raise
        self._warner.fine(answered)  # only the maps that were asked and answered
        return answer, self._ttl


def _config(settings: Settings) -> tuple[object, ...]:
    """Every setting an :class:`Ownership` is built from: a change builds a new one."""
    return (
        settings.sender_login_maps, settings.sender_login_maps_ttl, Rules.of(settings),
        settings.sender_login_maps_timeout, settings.postfix_config_dir,
    )  # fmt: skip


class OwnershipMaps:
    """The :class:`Ownership` for the settings in force, rebuilt when they change.

    The one it replaces is closed on a lookup worker (never on the calling
    libmilter thread), so a settings change leaks no database connection.
    """

    def __init__(
        self,
        *,
        runner: LookupRunner | None = None,
        clock: Callable[[], float] = time.monotonic,
        observe: LookupObserver | None = None,
        probe: bool = True,
    ) -> None:
        """``probe``: ask each new sql: map one key, on a worker, when it is first used or
        prepared (the milter; ``check`` asks the maps itself)."""
        self._runner = runner or LookupRunner(SOURCE)
        self._probe = probe
        self._clock = clock
        self._observe = observe
        self._warner = Warner(clock)
        self._current: tuple[tuple[object, ...], Ownership] | None = None
        self._lock = threading.Lock()

    def for_settings(self, settings: Settings) -> Ownership | None:
        """None when no map is configured."""
        config = _config(settings) if settings.sender_login_maps else None
        with self._lock:
            current = self._current
            if current is not None and current[0] == config:
                return current[1]
            ownership = None
            if config is not None:
                sources = [
                    make_source(s, settings) for s in parse_map_list(settings.sender_login_maps)
                ]
                ownership = Ownership(
                    sources, Rules.of(settings), settings.sender_login_maps_ttl,
                    settings.sender_login_maps_timeout, runner=self._runner, clock=self._clock,
                    observe=self._observe, warner=self._warner,
                )  # fmt: skip
            self._current = None if config is None or ownership is None else (config, ownership)
        if current is not None:
            self._runner.post(current[1].close)
        if ownership is not None and self._probe:
            self._runner.post(ownership.probe)
        return ownership

    def prepare(self, settings: Settings) -> None:
        """Start using the maps of ``settings`` before a message needs them (the milter's
        refresh thread, for every new snapshot): new maps are probed on a worker, replaced
        ones closed there.  Never waits for a map."""
        self.for_settings(settings)

    def stop(self) -> None:
        self._runner.stop()
        with self._lock:
            if self._current is not None:
                self._current[1].close()
            self._current = None
