"""Per-login limits (stolen logins): their values, and the verdict for one recipient. Pure.

A limit is ``COUNT/WINDOW`` (``200/1h``, ``10/1m``) or ``off``; counts come from
:mod:`smtpauth_milter.core.window`.  The rules are documented in
docs/policy.md#stolen-logins.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from smtpauth_milter.core.addresses import AddressError, parse_address
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.replies import Reply
from smtpauth_milter.core.values import temporary_reply

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MIN_WINDOW = 60  # whole minutes: buckets of whole seconds (core/window.py)
MAX_WINDOW = 7 * 86400
MAX_COUNT = 1_000_000
MIN_FREEZE, MAX_FREEZE = 60, 365 * 86400
_DURATION = re.compile(r"(\d{1,9})\s*([smhd]?)")


class LimitKind(StrEnum):
    """The four limits, named by their setting."""

    MESSAGES = "login-max-messages"
    RECIPIENTS = "login-max-recipients"
    CLIENT_IPS = "login-max-client-ips"
    MISMATCHES = "login-max-mismatches"


class LimitAction(StrEnum):
    TEMPFAIL = "tempfail"
    FREEZE = "freeze"


def render_seconds(seconds: int) -> str:
    """Seconds in the largest unit that divides them: 3600 -> ``1h``, 90 -> ``90s``."""
    for unit, size in sorted(UNITS.items(), key=lambda item: -item[1]):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    raise AssertionError("1 divides everything")


def parse_seconds(text: str, what: str, low: int, high: int) -> int:
    """``90s``, ``10m``, ``1h``, ``2d`` or plain seconds, within [low, high]."""
    match = _DURATION.fullmatch(text.strip().lower())
    seconds = int(match.group(1)) * UNITS[match.group(2) or "s"] if match else -1
    if not low <= seconds <= high:
        raise SettingError(
            f"bad {what} {text!r}: a duration such as 90s, 10m, 1h or 2d, "
            f"from {render_seconds(low)} to {render_seconds(high)}"
        )
    return seconds


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` in any ``window`` seconds; ``count == 0`` is off."""

    count: int
    window: int

    @property
    def on(self) -> bool:
        return self.count > 0

    def __str__(self) -> str:
        return f"{self.count}/{render_seconds(self.window)}" if self.on else "off"

    @classmethod
    def parse(cls, text: str) -> Limit:
        if text.strip().lower() == "off":
            return OFF
        count, slash, window = text.partition("/")
        if not slash or not count.strip().isdigit() or not 1 <= int(count) <= MAX_COUNT:
            raise SettingError(
                f"bad limit {text!r}: COUNT/WINDOW (200/1h, 10/1m) with COUNT from 1 to "
                f"{MAX_COUNT}, or off"
            )
        seconds = parse_seconds(window, "limit window", MIN_WINDOW, MAX_WINDOW)
        if seconds % MIN_WINDOW:
            raise SettingError(f"bad limit {text!r}: the window is whole minutes (10m, 1h, 1d)")
        return cls(int(count), seconds)


OFF = Limit(0, 0)


@dataclass(frozen=True, slots=True)
class Duration:
    """How long a freeze lasts; 0 is ``off``: until an admin unfreezes the login."""

    seconds: int

    def __str__(self) -> str:
        return render_seconds(self.seconds) if self.seconds else "off"

    @classmethod
    def parse(cls, text: str) -> Duration:
        if text.strip().lower() == "off":
            return cls(0)
        return cls(parse_seconds(text, "login-freeze-duration", MIN_FREEZE, MAX_FREEZE))


def canonical_limit(text: str) -> str:
    return str(Limit.parse(text))


def canonical_duration(text: str) -> str:
    return str(Duration.parse(text))


def canonical_action(text: str) -> str:
    word = text.strip().lower()
    if word not in {a.value for a in LimitAction}:
        raise SettingError(f"bad login-limit-action {text!r}: use tempfail or freeze")
    return word


def canonical_limit_reply(text: str) -> str:
    return temporary_reply(
        text,
        "login-limit-reply must be a 4xx reply (the login may send again when its "
        "window allows); a permanent refusal is login-limit-action freeze",
    )


def canonical_notify_address(text: str) -> str:
    """Empty (no notification) or one plain address."""
    stripped = text.strip()
    if not stripped:
        return ""
    try:
        return str(parse_address(stripped))
    except AddressError as exc:
        raise SettingError(f"bad notify-address {text!r}: {exc}") from exc


def parse_relay(text: str) -> tuple[str, int]:
    """``IP:PORT`` or ``[IPV6]:PORT`` (port 25 when left out) -> (host, port)."""
    stripped = text.strip()
    host, port = stripped, "25"
    if stripped.startswith("["):
        host, _, rest = stripped[1:].partition("]")
        port = rest.removeprefix(":") if rest else "25"
    elif stripped.count(":") == 1:
        host, _, port = stripped.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingError(f"bad notify-relay {text!r}: IP:PORT or [IPV6]:PORT, e.g. 127.0.0.1:25")
    return str(address), int(port)


def canonical_relay(text: str) -> str:
    host, port = parse_relay(text)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def login_domain(login: str) -> str | None:
    """The domain whose settings hold a login's limits; None for a bare login (global)."""
    _, at, domain = login.rpartition("@")
    return domain.lower() if at and domain else None


@dataclass(frozen=True, slots=True)
class LoginLimits:
    """The limit settings in force for one login."""

    limits: tuple[tuple[LimitKind, Limit], ...]
    action: LimitAction
    limit_reply: Reply
    frozen_reply: Reply
    freeze_for: int  # seconds; 0: until unfrozen
    dry_run: bool

    def window(self, kind: LimitKind) -> int:
        """The window of ``kind``; 0 when that limit is off."""
        return next((limit.window for k, limit in self.limits if k is kind), 0)


class Outcome(StrEnum):
    PASS = "pass"  # noqa: S105 -- nothing to do: count it
    NOT_COUNTED = "not-counted"  # exempt, or the session is not one that counts
    FROZEN = "frozen"  # frozen already: refused with login-frozen-reply
    TEMPFAIL = "tempfail"  # over a limit, action tempfail
    FREEZE = "freeze"  # over a limit, action freeze: frozen now
    WOULD_TEMPFAIL = "would-tempfail"
    WOULD_FREEZE = "would-freeze"

    @property
    def refuses(self) -> bool:
        return self in _REFUSING


# What runs once per recipient compares with module constants: an enum member looked up
# on its class costs ~0.2 us on Python 3.11, and judge() asked for a dozen.
_REFUSING = (Outcome.FROZEN, Outcome.TEMPFAIL, Outcome.FREEZE)
_MESSAGES, _RECIPIENTS = LimitKind.MESSAGES, LimitKind.RECIPIENTS
_CLIENT_IPS, _MISMATCHES = LimitKind.CLIENT_IPS, LimitKind.MISMATCHES
_FREEZE_ACTION = LimitAction.FREEZE


@dataclass(frozen=True, slots=True)
class Counts:
    """A login's counts in each limit's window (site-wide as far as known), before this
    recipient; ``new_client``: this client (IPv6 by /64) is not among the ones counted."""

    messages: int = 0
    recipients: int = 0
    client_ips: int = 0
    mismatches: int = 0
    new_client: bool = False


@dataclass(frozen=True, slots=True)
class Event:
    """What this recipient adds: the policy accepted it (and it is the message's first
    accepted one), or refused it as a sender the login does not own."""

    accepted: bool
    first_of_message: bool = False
    mismatch: bool = False


@dataclass(frozen=True, slots=True)
class LimitVerdict:
    outcome: Outcome
    limit: LimitKind | None = None
    count: int = 0  # the count that crossed the limit, this recipient included
    reply: Reply | None = None


PASS = LimitVerdict(Outcome.PASS)


def _after(kind: LimitKind, counts: Counts, event: Event) -> int:
    """The count of ``kind`` with this recipient, as if it went through."""
    if kind is _MESSAGES:
        return counts.messages + (1 if event.accepted and event.first_of_message else 0)
    if kind is _RECIPIENTS:
        return counts.recipients + (1 if event.accepted else 0)
    if kind is _CLIENT_IPS:
        return counts.client_ips + (1 if counts.new_client else 0)
    return counts.mismatches + (1 if event.mismatch else 0)


def judge(limits: LoginLimits, counts: Counts, event: Event) -> LimitVerdict:
    """The verdict for one recipient of a login that is counted and not frozen.

    A limit is crossed when the count with this recipient exceeds it: with
    ``200/1h`` the 201st message in the hour.  An accepted recipient is held to
    every limit; a refused one (the policy's own refusal stands) only to
    ``login-max-mismatches`` with action freeze: the signal that a login tries
    senders it does not own.  With action tempfail the login's next accepted
    recipients are refused while its mismatches are over the limit.
    """
    freeze = limits.action is _FREEZE_ACTION
    for kind, limit in limits.limits:
        if not event.accepted and not (kind is _MISMATCHES and event.mismatch and freeze):
            continue  # refused by the policy already: only a freeze adds anything
        count = _after(kind, counts, event)
        if count > limit.count:
            if limits.dry_run:
                outcome = Outcome.WOULD_FREEZE if freeze else Outcome.WOULD_TEMPFAIL
            else:
                outcome = Outcome.FREEZE if freeze else Outcome.TEMPFAIL
            reply = limits.frozen_reply if freeze else limits.limit_reply
            return LimitVerdict(outcome, kind, count, reply)
    return PASS


def frozen_verdict(limits: LoginLimits) -> LimitVerdict:
    """A frozen login: every recipient refused, also in dry run (a freeze is an admin's
    act, or was made while dry run was off)."""
    return LimitVerdict(Outcome.FROZEN, reply=limits.frozen_reply)
