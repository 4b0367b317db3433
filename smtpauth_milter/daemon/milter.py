"""The pymilter adapter: macros -> Request, Verdict -> reply. No policy lives here.

pymilter 1.0.5 on Python 3 cannot negotiate macros (``setsymlist`` gets bytes
where the C call wants str) and ignores ``set_flags``; :meth:`negotiate` does
both by hand.  Every callback runs under :func:`guarded`: an unexpected error
is logged with its traceback and answered with a 4xx, never a 5xx or accept.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

import Milter

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.addresses import Address
from smtpauth_milter.core.networks import IPAddress, parse_ip
from smtpauth_milter.core.ownermaps import MapAnswer
from smtpauth_milter.core.ownership import map_lookup_sender
from smtpauth_milter.core.policy import (
    Action,
    Request,
    Verdict,
    decide_header,
    decide_with_spf,
)
from smtpauth_milter.core.replies import Reply
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.core.spf import SpfResult
from smtpauth_milter.daemon.logwriter import FieldsOf, direct_handler
from smtpauth_milter.daemon.refresh import SnapshotCache
from smtpauth_milter.lookups.ownership import OwnershipMaps
from smtpauth_milter.lookups.spf import SpfChecks

if TYPE_CHECKING:
    from smtpauth_milter.daemon.decisions import DecisionCounts
    from smtpauth_milter.daemon.logins import LoginLimiter
    from smtpauth_milter.daemon.metrics import Metrics

log = logging.getLogger("smtpauth_milter")

# What we ask the MTA for: the login and queue id at MAIL, the queue id at RCPT.
MACROS = {Milter.M_ENVFROM: "i {auth_authen}", Milter.M_ENVRCPT: "i"}
# Steps we never need. DATA is kept: skipping it stalls Postfix on TCP sockets
# (docs/internals.md#the-tcp-stall-when-data-is-skipped).
SKIPPED_STEPS = (
    Milter.P_NOHELO | Milter.P_NOHDRS | Milter.P_NOEOH | Milter.P_NOBODY | Milter.P_NOUNKNOWN
)
# Headers and end of headers are asked for only while require-header-from-match
# is on somewhere (decided per connection, from the snapshot at negotiation).
HEADER_STEPS = Milter.P_NOHDRS | Milter.P_NOEOH
HEADER_FIELDS = ("from", "sender")
MAX_HEADER_VALUES = 2  # a second From: is refused anyway; keep no more than that
FALLBACK_REPLY = Reply(451, "4.3.0", "Temporary policy failure, try again later")

F = TypeVar("F", bound=Callable[..., int])


def guarded(callback: F) -> F:
    """One place for failure policy: an unexpected error becomes a logged 4xx tempfail."""

    @functools.wraps(callback)
    def wrapper(self: SmtpAuthMilter, *args: Any) -> int:
        try:
            return callback(self, *args)
        except Exception:
            log.exception(
                "%s",
                logfmt.Fields(
                    {"event": "internal-error", "callback": callback.__name__, "queue": self._queue}
                ),
            )
            return self._tempfail(self._cache.current().global_settings.tempfail_reply)

    return cast(F, wrapper)


def client_address(hostaddr: Any) -> IPAddress | None:
    """The client IP from connect's hostaddr: a tuple for inet/inet6, a str in tests."""
    if isinstance(hostaddr, tuple) and hostaddr:
        hostaddr = hostaddr[0]
    return parse_ip(hostaddr) if isinstance(hostaddr, str) else None


def _escape_percent(text: str) -> str:
    return text.replace("%", "%%")


def _log_level(verdict: Verdict) -> int:
    return logging.INFO if verdict.action is Action.CONTINUE else logging.WARNING


def _emit(level: int, fields_of: FieldsOf, *args: Any) -> None:
    """A decision line is written once per recipient, on the MTA's critical path: to
    the daemon's own handler without a LogRecord (made by its writer thread from
    ``fields_of(*args)``); else as a record, without logging's stack walk (findCaller)."""
    handler = direct_handler(log)
    if handler is not None:
        handler.emit_fields(level, fields_of, *args)
        return
    fields = logfmt.Fields(fields_of(*args))
    record = log.makeRecord(log.name, level, __file__, 0, fields, (), None)
    log.handle(record)


class SmtpAuthMilter(Milter.Base):  # type: ignore[misc]
    """Per-connection state; libmilter may run each callback on a different thread."""

    def __init__(
        self,
        cache: SnapshotCache,
        spf: SpfChecks,
        metrics: Metrics | None = None,
        maps: OwnershipMaps | None = None,
        limiter: LoginLimiter | None = None,
        decisions: DecisionCounts | None = None,
    ) -> None:
        self._cache = cache
        self._decisions = decisions  # the Dashboard's counts: shared, in memory
        self._limiter = limiter  # per-login limits: shared by every connection
        self._counted = False  # this message has an accepted recipient: counted once
        self._spf = spf  # shared by every connection: one cache, one worker pool
        self._metrics = metrics
        self._maps = maps
        self._owners: tuple[Address, MapAnswer] | None = None  # this message's map answer
        self._client: IPAddress | None = None
        self._client_text: str | None = None  # rendered once per connection, for the log
        self._queue: str | None = None
        self._request: Request | None = None
        self._headers: dict[str, list[str]] = {}

    def negotiate(self, opts: list[int]) -> int:
        offered_actions, offered_steps = opts[0], opts[1]
        skipped = SKIPPED_STEPS & ~HEADER_STEPS if self._wants_headers() else SKIPPED_STEPS
        opts[0] = offered_actions & Milter.SETSYMLIST
        opts[1] = offered_steps & skipped
        opts[2] = opts[3] = 0
        self._actions, self._protocol = opts[0], opts[1]
        if offered_actions & Milter.SETSYMLIST:
            for stage, macros in MACROS.items():
                self._ctx.setsymlist(stage, macros)
        return int(Milter.CONTINUE)

    def _wants_headers(self) -> bool:
        """Headers cost a round trip each: ask for them only while some domain checks them."""
        return self._cache.current().header_checks

    @guarded
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self._client = client_address(hostaddr) or parse_ip(self._macro("{client_addr}") or "")
        self._client_text = str(self._client) if self._client is not None else None
        if self._metrics is not None:
            self._metrics.sessions.inc()
        return int(Milter.CONTINUE)

    @guarded
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._queue = self._macro("i")
        self._request = Request(self._client, self._macro("{auth_authen}"), mailfrom)
        self._headers = {}
        self._owners = None
        self._counted = False
        return int(Milter.CONTINUE)

    @guarded
    def envrcpt(self, rcpt: str, *params: str) -> int:
        self._queue = self._macro("i") or self._queue
        request = self._request
        if request is None:  # RCPT before MAIL: the MTA would never do this
            raise RuntimeError("RCPT TO without MAIL FROM")
        metrics = self._metrics
        started = time.perf_counter() if metrics is not None else 0.0
        snapshot = self._cache.current()
        request, verdict = decide_with_spf(
            snapshot,
            request,
            rcpt,
            lambda r: self._lookup_spf(snapshot, r),
            self._map_answer(snapshot, request),
        )
        self._request = request  # with its SPF result, once looked up: once per message
        if self._limiter is not None:
            verdict = self._limiter.apply(
                snapshot, request, verdict, not self._counted, metrics, self._queue, rcpt
            )
            self._counted = self._counted or not verdict.refuses
        if metrics is not None:
            metrics.decided(verdict, time.perf_counter() - started)
        self._log(request, rcpt, verdict)
        if self._decisions is not None:
            self._decisions.count(verdict, request.login, self._client_text)
        return self._answer(verdict)

    @guarded
    def data(self) -> int:
        return int(Milter.CONTINUE)

    @guarded
    def header(self, name: str, value: str) -> int:
        field = name.lower()
        if field in HEADER_FIELDS:
            values = self._headers.setdefault(field, [])
            if len(values) < MAX_HEADER_VALUES:
                values.append(value)
        return int(Milter.CONTINUE)

    @guarded
    def eoh(self) -> int:
        self._queue = self._macro("i") or self._queue
        request = self._request
        if request is None:
            raise RuntimeError("end of headers without MAIL FROM")
        froms, senders = self._headers.get("from", []), self._headers.get("sender", [])
        self._headers = {}
        started = time.perf_counter()
        snapshot = self._cache.current()
        verdict = decide_header(snapshot, request, froms, senders)
        if self._limiter is not None:
            verdict = self._limiter.apply_header(snapshot, request, verdict, self._metrics)
        if self._metrics is not None:
            self._metrics.decided(verdict, time.perf_counter() - started)
        self._log_header(request, froms, verdict)
        if self._decisions is not None:
            self._decisions.count(verdict, request.login, self._client_text)
        return self._answer(verdict)

    @guarded
    def abort(self) -> int:
        self._request = None
        self._queue = None
        self._headers = {}
        self._owners = None
        self._counted = False
        return int(Milter.CONTINUE)

    def close(self) -> int:
        return int(Milter.CONTINUE)

    # --- helpers ---------------------------------------------------------------

    def _map_answer(self, snapshot: Snapshot, request: Request) -> MapAnswer | None:
        """What sender-login-maps say about this message's sender, asked once per message
        and only when it could change the verdict; the wait is bounded (lookups.ownership)."""
        sender = map_lookup_sender(snapshot, request)
        if sender is None or self._maps is None:
            return None  # not needed; or no maps at all, and decide() fails closed
        if self._owners is not None and self._owners[0] == sender:
            return self._owners[1]
        ownership = self._maps.for_settings(snapshot.global_settings)
        if ownership is None:
            return None
        answer = ownership.answer(sender)
        self._owners = (sender, answer)
        return answer

    def _lookup_spf(self, snapshot: Snapshot, request: Request) -> SpfResult:
        """Bounded: at most spf-timeout (plus a margin) on this libmilter thread."""
        assert request.client is not None  # needs_spf asks only with a client address
        glob = snapshot.global_settings
        answer = self._spf.check(
            glob.dns_resolver, glob.spf_timeout, request.client, request.sender
        )
        if self._metrics is not None:
            self._metrics.spf_answered(answer.result, answer.timed_out)
        return answer.result

    def _macro(self, name: str) -> str | None:
        value = self._ctx.getsymval(name)  # Base.getsymval is one more Python call
        return value if isinstance(value, str) and value else None

    def _log(self, request: Request, rcpt: str, verdict: Verdict) -> None:
        level = _log_level(verdict)
        if log.isEnabledFor(level):
            _emit(
                level,
                logfmt.decision_fields,
                *(self._queue, request, rcpt, verdict, self._client_text),
            )

    def _log_header(self, request: Request, froms: list[str], verdict: Verdict) -> None:
        level = _log_level(verdict)
        if log.isEnabledFor(level):
            _emit(level, logfmt.header_decision_fields, self._queue, request, tuple(froms), verdict)

    def _answer(self, verdict: Verdict) -> int:
        if verdict.action is Action.REJECT:
            assert verdict.reply is not None
            self._reply(verdict.reply)
            return int(Milter.REJECT)
        if verdict.action is Action.TEMPFAIL:
            assert verdict.reply is not None
            return self._tempfail(verdict.reply)
        return int(Milter.CONTINUE)

    def _reply(self, reply: Reply) -> None:
        # Every % doubled, so Base.setreply's check for a lone % (a regex per reply)
        # could never fire: straight to the context.
        self._ctx.setreply(str(reply.code), reply.status, _escape_percent(reply.text))

    def _tempfail(self, reply: Reply) -> int:
        if not reply.temporary:
            reply = FALLBACK_REPLY
        try:
            self._reply(reply)
        except Exception:
            log.exception("%s", logfmt.Fields({"event": "setreply-failed"}))
        return int(Milter.TEMPFAIL)
