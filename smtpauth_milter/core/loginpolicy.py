"""Where per-login limits meet the policy's verdict. Pure.

Which decisions are counted (an authenticated login, settings in force, not a
trusted network), the limits that apply to a login (its domain's settings,
else the global ones), and the verdict the MTA gets when a limit refuses.
See docs/policy.md#stolen-logins.
"""

from __future__ import annotations

from smtpauth_milter.core.limits import (
    Event,
    LimitKind,
    LimitVerdict,
    LoginLimits,
    Outcome,
    login_domain,
)
from smtpauth_milter.core.policy import Action, Request, Rule, Verdict
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.core.snapshot import Snapshot

# Decisions that say nothing about what the login did: nothing is counted.
_NOT_COUNTED = frozenset({Rule.NO_SETTINGS, Rule.TRUSTED_NETWORK})
MISMATCH_RULES = frozenset({Rule.SENDER_MISMATCH, Rule.HEADER_FROM_MISMATCH})
_RULES = {
    LimitKind.MESSAGES: Rule.LOGIN_MAX_MESSAGES,
    LimitKind.RECIPIENTS: Rule.LOGIN_MAX_RECIPIENTS,
    LimitKind.CLIENT_IPS: Rule.LOGIN_MAX_CLIENT_IPS,
    LimitKind.MISMATCHES: Rule.LOGIN_MAX_MISMATCHES,
}
_ACTIONS = {
    Outcome.TEMPFAIL: Action.TEMPFAIL,
    Outcome.FREEZE: Action.REJECT,
    Outcome.FROZEN: Action.REJECT,
    Outcome.WOULD_TEMPFAIL: Action.WOULD_TEMPFAIL,
    Outcome.WOULD_FREEZE: Action.WOULD_REJECT,
}


def limits_of(settings: Settings) -> LoginLimits:
    """The limit settings in force for a login whose domain resolved to ``settings``."""
    return LoginLimits(
        limits=tuple(
            (kind, limit)
            for kind, limit in (
                (LimitKind.MESSAGES, settings.login_max_messages),
                (LimitKind.RECIPIENTS, settings.login_max_recipients),
                (LimitKind.CLIENT_IPS, settings.login_max_client_ips),
                (LimitKind.MISMATCHES, settings.login_max_mismatches),
            )
            if limit.on
        ),
        action=settings.login_limit_action,
        limit_reply=settings.login_limit_reply,
        frozen_reply=settings.login_frozen_reply,
        freeze_for=settings.login_freeze_duration.seconds,
        dry_run=settings.dry_run,
    )


MAX_LOGIN = 320  # the store's column: a longer login is counted by its first 320 characters


def login_key(login: str) -> str:
    """The key a login is counted, frozen and exempted under: trimmed, case-folded."""
    return login.strip().lower()[:MAX_LOGIN]


def counted_login(request: Request, verdict: Verdict) -> str | None:
    """The login this decision counts for; None when it counts for nobody."""
    if not request.authenticated or verdict.rule in _NOT_COUNTED:
        return None
    assert request.login is not None
    return login_key(request.login)


def limits_for(snapshot: Snapshot, login: str) -> LoginLimits:
    """The limits of ``login``: its domain's (a local one), else the global settings."""
    domain = login_domain(login)
    settings = snapshot.settings_for(domain) if domain is not None else None
    return _limits(settings or snapshot.global_settings)


_MADE: dict[int, tuple[Settings, LoginLimits]] = {}
_MAX_MADE = 4096


def _limits(settings: Settings) -> LoginLimits:
    """Made once per settings object (by identity: hashing ~30 fields would cost more than
    making them), not once per recipient.  The entry holds the object, so its id is not
    reused while it is there; bounded."""
    made = _MADE.get(id(settings))
    if made is not None and made[0] is settings:
        return made[1]
    if len(_MADE) >= _MAX_MADE:
        _MADE.clear()
    limits = limits_of(settings)
    _MADE[id(settings)] = (settings, limits)
    return limits


def event_of(verdict: Verdict, first_of_message: bool) -> Event:
    """What a policy verdict adds to the login's counts (dry run: it goes through)."""
    return Event(
        accepted=not verdict.refuses,
        first_of_message=first_of_message,
        mismatch=verdict.rule in MISMATCH_RULES,
    )


def combined(verdict: Verdict, limit: LimitVerdict) -> Verdict:
    """The verdict the MTA gets: the policy's, unless a limit refuses or would refuse."""
    action = _ACTIONS.get(limit.outcome)
    if action is None or (verdict.refuses and not limit.outcome.refuses):
        return verdict  # a would-... never turns the policy's own refusal into an accept
    rule = Rule.LOGIN_FROZEN if limit.limit is None else _RULES[limit.limit]
    return Verdict(action, rule, limit.reply, verdict.domain)
