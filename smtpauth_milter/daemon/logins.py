"""Per-login limits on the hot path: counts in memory, no database (docs/internals.md
#no-sqlalchemy-on-callback-threads).

libmilter's threads call :meth:`LoginLimiter.apply` once per recipient; it
holds one lock for a few dictionary operations.  What it counted waits in a
:class:`~smtpauth_milter.store.loginstate.Batch` for the ``login-sync``
thread (daemon/loginsync.py), which writes it to the store and hands back
what every milter sharing the store counted (:meth:`absorb`).

How the counts combine, and what an outage does: docs/policy.md#one-count-for-the-whole-site.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.limits import (
    Counts,
    Event,
    LimitKind,
    LimitVerdict,
    LoginLimits,
    Outcome,
    frozen_verdict,
    judge,
)
from smtpauth_milter.core.loginpolicy import (
    MISMATCH_RULES,
    combined,
    counted_login,
    event_of,
    limits_for,
)
from smtpauth_milter.core.policy import Request, Verdict
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.core.window import client_key
from smtpauth_milter.daemon.loginentry import LoginEntry
from smtpauth_milter.daemon.notify import FreezeReport, Notifier
from smtpauth_milter.daemon.siteview import STORED_KIND, SiteView
from smtpauth_milter.store.loginstate import Batch, Freeze, FrozenState, Readback

if TYPE_CHECKING:
    from smtpauth_milter.daemon.metrics import Metrics

log = logging.getLogger("smtpauth_milter")

MAX_KEPT = 200_000  # unwritten increments kept through an outage (docs/policy.md)
PRUNE_CHUNK = 1_000  # logins pruned per hold of the lock
_KIND_OF = {stored: kind for kind, stored in STORED_KIND.items()}
_QUIET = frozenset({Outcome.PASS, Outcome.NOT_COUNTED})  # nothing to log or count
# Members used once per recipient as constants: one looked up on its enum class costs
# ~0.2 us on Python 3.11 (core/limits.py does the same).
_MESSAGES, _RECIPIENTS, _MISMATCHES = LimitKind.MESSAGES, LimitKind.RECIPIENTS, LimitKind.MISMATCHES
_FREEZE = Outcome.FREEZE
RECENT = 10  # the last (MAIL FROM, RCPT TO) of a login a freeze report shows
# ... found among this milter's last RECENT_KEPT counted recipients: one ring for every
# login (a ring per login cost ~1 KiB of each login's ~4 in memory: bench/login_scale.py)
RECENT_KEPT = 10_000


class LoginLimiter:
    def __init__(
        self,
        host: str,
        clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
    ) -> None:
        self._host = host  # who froze a login: "milter@HOST"
        self._notifier = notifier  # mails a report per freeze, from its own thread
        self._clock = clock
        self._lock = threading.Lock()
        self._logins: dict[str, LoginEntry] = {}
        self._batch = Batch()
        self._pending: dict[tuple[str, LimitKind], int] = {}  # counted since the last exchange
        self._taken: dict[tuple[str, LimitKind], int] = {}  # on its way to the store: see take
        self._site = SiteView()  # the site-wide counts of the logins read back, per login
        self._held: set[str] = set()  # refused here for a limit: read back every exchange
        self._frozen: dict[str, FrozenState] = {}  # active freezes, as the store has them
        self._frozen_here: dict[str, Freeze] = {}  # frozen by this milter, not yet read back
        self._recent: deque[tuple[str, str, str]] = deque(maxlen=RECENT_KEPT)  # login, envelope

    # --- the hot path: libmilter threads ------------------------------------------

    def apply(
        self,
        snapshot: Snapshot,
        request: Request,
        verdict: Verdict,
        first_of_message: bool,
        metrics: Metrics | None = None,
        queue: str | None = None,
        rcpt: str = "",
    ) -> Verdict:
        """The verdict for one recipient with the login's limits applied, counted."""
        login = counted_login(request, verdict)
        if login is None:
            return verdict
        limits = limits_for(snapshot, login)
        client = client_key(request.client) if request.client is not None else None
        event = event_of(verdict, first_of_message)
        exempt = login in snapshot.exempt_logins
        judged = self._judge(login, limits, event, client, exempt, (request.sender, rcpt))
        if judged.outcome not in _QUIET:
            self._tell(login, judged, request, snapshot, metrics, queue)
        return combined(verdict, judged)

    def apply_header(
        self, snapshot: Snapshot, request: Request, verdict: Verdict, metrics: Metrics | None
    ) -> Verdict:
        """End of headers: a From: the login does not own counts as one mismatch."""
        if verdict.rule not in MISMATCH_RULES:
            return verdict
        login = counted_login(request, verdict)
        if login is None:
            return verdict
        limits = limits_for(snapshot, login)
        exempt = login in snapshot.exempt_logins
        judged = self._judge(login, limits, Event(False, mismatch=True), None, exempt, None)
        if judged.outcome not in _QUIET:
            self._tell(login, judged, request, snapshot, metrics, None)
        return combined(verdict, judged)

    def _judge(
        self,
        login: str,
        limits: LoginLimits,
        event: Event,
        client: str | None,
        exempt: bool,
        envelope: tuple[str, str] | None,
    ) -> LimitVerdict:
        now = self._clock()
        with self._lock:
            if self._is_frozen(login, now):
                return frozen_verdict(limits)  # an exempt login too: a freeze is explicit
            if exempt:
                return LimitVerdict(Outcome.NOT_COUNTED)
            entry = self._entry(login, limits)
            self._batch.reads.add(login)
            if envelope is not None:
                self._recent.append((login, *envelope))
            judged = judge(limits, self._counts(login, entry, client, now), event)
            if judged.outcome is _FREEZE:
                self._freeze(login, judged, limits, now)
            elif judged.outcome.refuses:
                self._held.add(login)  # see docs/policy.md#one-count-for-the-whole-site
            self._record(login, entry, event, client, now, judged.outcome.refuses)
        return judged

    def _is_frozen(self, login: str, now: float) -> bool:
        stored = self._frozen.get(login)
        if stored is not None and stored.active(now):
            return True
        here = self._frozen_here.get(login)
        return here is not None and (here.until is None or here.until > now)

    def _entry(self, login: str, limits: LoginLimits) -> LoginEntry:
        entry = self._logins.get(login)
        if entry is None:
            entry = self._logins[login] = LoginEntry()
        entry.follow(limits)
        return entry

    def _counts(self, login: str, entry: LoginEntry, client: str | None, now: float) -> Counts:
        """This milter's counts, or the site-wide ones read back with what this milter
        counted since they were read, whichever is higher (once per recipient: lean)."""
        site = self._site.fresh(login, now)
        totals: dict[LimitKind, int] = {}
        for kind, counter in entry.counts.items():
            own = counter.total(now)
            if site is not None:
                found = site.totals.get((STORED_KIND[kind], counter.step))
                if found is not None:
                    key = (login, kind)
                    own = max(own, found + self._taken.get(key, 0) + self._pending.get(key, 0))
            totals[kind] = own
        clients: set[str] | frozenset[str] = frozenset()
        if entry.clients is not None:
            clients = entry.clients.keys(now)
            if site is not None and (seen := site.clients.get(entry.clients.step)):
                clients = clients | seen
        return Counts(
            messages=totals.get(_MESSAGES, 0),
            recipients=totals.get(_RECIPIENTS, 0),
            client_ips=len(clients),
            mismatches=totals.get(_MISMATCHES, 0),
            new_client=client is not None and client not in clients,
        )

    def _add(self, login: str, kind: LimitKind, entry: LoginEntry, now: float) -> None:
        counter = entry.counts.get(kind)
        if counter is None:
            return  # that limit is off: nothing to count
        at = counter.add(now)
        key = (login, STORED_KIND[kind], counter.step, at)
        self._batch.counts[key] = self._batch.counts.get(key, 0) + 1
        self._pending[login, kind] = self._pending.get((login, kind), 0) + 1

    def _record(self, login: str, entry: LoginEntry, event: Event, client: str | None,
                now: float, refused: bool) -> None:  # fmt: skip
        if event.mismatch:
            self._add(login, _MISMATCHES, entry, now)
        if refused:
            return  # refused by a limit: it did not happen
        if event.accepted:
            self._add(login, _RECIPIENTS, entry, now)
            if event.first_of_message:
                self._add(login, _MESSAGES, entry, now)
        if client is not None and entry.clients is not None:
            at = entry.clients.add(now, client)
            self._batch.clients.add((login, entry.clients.step, at, client))

    def _freeze(self, login: str, judged: LimitVerdict, limits: LoginLimits, now: float) -> None:
        until = now + limits.freeze_for if limits.freeze_for else None
        cause = judged.limit.value if judged.limit is not None else "login-frozen"
        freeze = Freeze(login, cause, judged.count, now, until, self._host)
        self._frozen_here[login] = freeze
        self._batch.freezes[login] = freeze

    def _tell(
        self,
        login: str,
        judged: LimitVerdict,
        request: Request,
        snapshot: Snapshot,
        metrics: Metrics | None,
        queue: str | None,
    ) -> None:
        """Metrics; and for a freeze its log line and report."""
        if metrics is not None:
            limit = judged.limit.value if judged.limit is not None else "login-frozen"
            metrics.login_limited(limit, judged.outcome.value)
        if judged.outcome is Outcome.FREEZE:
            assert judged.limit is not None
            client = str(request.client) if request.client is not None else None
            fields = {"event": "login-frozen", "login": login, "limit": judged.limit.value,
                      "count": str(judged.count), "client": client, "queue": queue}  # fmt: skip
            log.warning("%s", logfmt.Fields(fields))
            self._report(login, judged, snapshot)

    def _report(self, login: str, judged: LimitVerdict, snapshot: Snapshot) -> None:
        """A freeze: one report to notify-address, sent by the notifier's thread."""
        glob = snapshot.global_settings
        if self._notifier is None or not glob.notify_address:
            return
        now = self._clock()
        with self._lock:
            entry = self._logins.get(login)
            clients = entry.clients.keys(now) if entry and entry.clients else set()
            recent = tuple((f, t) for who, f, t in self._recent if who == login)[-RECENT:]
        assert judged.limit is not None
        self._notifier.report(
            FreezeReport(
                login, judged.limit.value, judged.count, now, self._host,
                glob.notify_address, glob.notify_relay, tuple(sorted(clients)), recent,
            )
        )  # fmt: skip

    # --- the login-sync thread -------------------------------------------------------

    def take(self) -> Batch:
        """What was counted since the last exchange, for the store. Until the store's
        answer is absorbed (or the batch given back) it still counts as ``_taken``."""
        with self._lock:
            batch, self._batch = self._batch, Batch()
            batch.reads |= self._held
            self._taken, self._pending = self._pending, {}
            return batch

    def give_back(self, batch: Batch, now: float) -> None:
        """The exchange failed: keep the batch for the next one (buckets still in a window)."""
        with self._lock:
            self._taken = {}  # pending again, with the batch
            if len(self._batch.counts) + len(batch.counts) > MAX_KEPT:
                batch.counts.clear()
                batch.clients.clear()
            for (login, kind, step, at), n in batch.counts.items():
                if (at + 61) * step > now:
                    key = (login, kind, step, at)
                    self._batch.counts[key] = self._batch.counts.get(key, 0) + n
                    pending = (login, _KIND_OF[kind])
                    self._pending[pending] = self._pending.get(pending, 0) + n
            self._batch.clients |= {c for c in batch.clients if (c[2] + 61) * c[1] > now}
            self._batch.freezes = batch.freezes | self._batch.freezes
            self._batch.reads |= batch.reads

    def absorb(self, readback: Readback, batch: Batch, now: float) -> list[tuple[str, str]]:
        """The store's state after this milter's batch; returns the logins unfrozen since
        the last exchange, each with who unfroze it. Their counts here start afresh.
        The read-back logins' site-wide counts are merged into the view (siteview.py)."""
        active = {login: s for login, s in readback.frozen.items() if s.active(now)}
        with self._lock:
            unfrozen = [login for login in self._frozen if login not in active]
            for login in unfrozen:
                self._logins.pop(login, None)
                self._frozen_here.pop(login, None)
                self._held.discard(login)
                self._site.forget(login)  # the store forgot its counts too
            for login in batch.freezes:  # written: the store's word is the one now
                if self._frozen_here.get(login) is batch.freezes[login]:
                    del self._frozen_here[login]
            self._frozen, self._taken = active, {}  # the site-wide count holds them now
            self._site.merge(readback, now)
            read = (login for login in readback.logins or () if login not in self._held)
            self._held.update(self._site.at_limit(read, self._limits_of))  # read back from now on
        by = {login: state.unfrozen_by or "-" for login, state in readback.frozen.items()}
        return [(login, by.get(login, "-")) for login in unfrozen]

    def _limits_of(self, login: str) -> LoginLimits | None:
        return entry.limits if (entry := self._logins.get(login)) is not None else None

    def prune(self, now: float) -> None:
        """Forget what left every window, and logins with nothing left: memory stays bounded.
        The lock is held for PRUNE_CHUNK logins at a time (100,000 took ~0.5 s)."""
        with self._lock:
            logins = list(self._logins)
        for start in range(0, len(logins), PRUNE_CHUNK):
            with self._lock:
                for login in logins[start : start + PRUNE_CHUNK]:
                    entry = self._logins.get(login)
                    if entry is not None and entry.prune(now):
                        del self._logins[login]
                        self._held.discard(login)
        with self._lock:
            self._site.keep_only(self._logins, now)  # forgotten with the login, or stale

    def frozen_count(self) -> int:
        with self._lock:
            return len(self._frozen.keys() | self._frozen_here.keys())

    def active_logins(self) -> int:  # for tests and the 100,000-login bench
        return len(self._logins)

    def site_logins(self) -> int:  # for tests
        return len(self._site)
