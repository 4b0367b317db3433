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

from . import logfmt
from .networks import IPAddress, parse_ip
from .policy import Action, Request, Verdict, decide
from .refresh import SnapshotCache
from .replies import Reply

if TYPE_CHECKING:
    from .metrics import Metrics

log = logging.getLogger("smtpauth_milter")

# What we ask the MTA for: the login and queue id at MAIL, the queue id at RCPT.
MACROS = {Milter.M_ENVFROM: "i {auth_authen}", Milter.M_ENVRCPT: "i"}
# Steps we never need. DATA is kept: skipping it stalls Postfix on TCP sockets (NOTES.md).
SKIPPED_STEPS = (
    Milter.P_NOHELO | Milter.P_NOHDRS | Milter.P_NOEOH | Milter.P_NOBODY | Milter.P_NOUNKNOWN
)
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


class SmtpAuthMilter(Milter.Base):  # type: ignore[misc]
    """Per-connection state; libmilter may run each callback on a different thread."""

    def __init__(self, cache: SnapshotCache, metrics: Metrics | None = None) -> None:
        self._cache = cache
        self._metrics = metrics
        self._client: IPAddress | None = None
        self._queue: str | None = None
        self._request: Request | None = None

    def negotiate(self, opts: list[int]) -> int:
        offered_actions, offered_steps = opts[0], opts[1]
        opts[0] = offered_actions & Milter.SETSYMLIST
        opts[1] = offered_steps & SKIPPED_STEPS
        opts[2] = opts[3] = 0
        self._actions, self._protocol = opts[0], opts[1]
        if offered_actions & Milter.SETSYMLIST:
            for stage, macros in MACROS.items():
                self._ctx.setsymlist(stage, macros)
        return int(Milter.CONTINUE)

    @guarded
    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self._client = client_address(hostaddr) or parse_ip(self._macro("{client_addr}") or "")
        if self._metrics is not None:
            self._metrics.sessions.inc()
        return int(Milter.CONTINUE)

    @guarded
    def envfrom(self, mailfrom: str, *params: str) -> int:
        self._queue = self._macro("i")
        self._request = Request(self._client, self._macro("{auth_authen}"), mailfrom)
        return int(Milter.CONTINUE)

    @guarded
    def envrcpt(self, rcpt: str, *params: str) -> int:
        self._queue = self._macro("i") or self._queue
        request = self._request
        if request is None:  # RCPT before MAIL: the MTA would never do this
            raise RuntimeError("RCPT TO without MAIL FROM")
        metrics = self._metrics
        if metrics is None:
            verdict = decide(self._cache.current(), request, rcpt)
        else:
            started = time.perf_counter()
            verdict = decide(self._cache.current(), request, rcpt)
            metrics.decided(verdict, time.perf_counter() - started)
        self._log(request, rcpt, verdict)
        return self._answer(verdict)

    @guarded
    def data(self) -> int:
        return int(Milter.CONTINUE)

    @guarded
    def abort(self) -> int:
        self._request = None
        self._queue = None
        return int(Milter.CONTINUE)

    def close(self) -> int:
        return int(Milter.CONTINUE)

    # --- helpers ---------------------------------------------------------------

    def _macro(self, name: str) -> str | None:
        value = self.getsymval(name)
        return value if isinstance(value, str) and value else None

    def _log(self, request: Request, rcpt: str, verdict: Verdict) -> None:
        level = logging.INFO if verdict.action is Action.CONTINUE else logging.WARNING
        if log.isEnabledFor(level):
            # makeRecord + handle skips logging's stack walk (findCaller): this
            # line is written once per recipient, on the MTA's critical path.
            line = logfmt.Fields(logfmt.decision_fields(self._queue, request, rcpt, verdict))
            log.handle(log.makeRecord(log.name, level, __file__, 0, line, (), None))

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
        self.setreply(str(reply.code), reply.status, _escape_percent(reply.text))

    def _tempfail(self, reply: Reply) -> int:
        if not reply.temporary:
            reply = FALLBACK_REPLY
        try:
            self._reply(reply)
        except Exception:
            log.exception("%s", logfmt.Fields({"event": "setreply-failed"}))
        return int(Milter.TEMPFAIL)
