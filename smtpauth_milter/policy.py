"""The decision, per recipient (SPEC section 3). Pure: no I/O, no clock, no pymilter.

The milter and ``smtpauth-milter check`` both call :func:`decide`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .addresses import (
    Address,
    AddressError,
    normalise,
    parse_address,
    parse_path,
    strip_batv,
)
from .networks import IPAddress
from .replies import Reply
from .settings import Settings, Snapshot


class Action(StrEnum):
    CONTINUE = "continue"
    REJECT = "reject"
    TEMPFAIL = "tempfail"
    WOULD_REJECT = "would-reject"
    WOULD_TEMPFAIL = "would-tempfail"


class Rule(StrEnum):
    NO_SETTINGS = "no-settings"
    TRUSTED_NETWORK = "trusted-network"
    BAD_SENDER = "bad-sender"
    NULL_SENDER = "null-sender"
    NON_LOCAL_SENDER = "non-local-sender"
    SENDER_MISMATCH = "sender-mismatch"
    SENDER_OWNED = "sender-owned"
    AUTHENTICATED = "authenticated"
    ROLE_AUTH_REQUIRED = "role-auth-required"
    AUTH_REQUIRED = "auth-required"
    LOCAL_RECIPIENT = "local-recipient"
    AUTH_NOT_REQUIRED = "auth-not-required"


@dataclass(frozen=True, slots=True)
class Request:
    """What the MTA told us about one message: client, login and raw MAIL FROM."""

    client: IPAddress | None
    login: str | None
    sender: str

    @property
    def authenticated(self) -> bool:
        return bool(self.login and self.login.strip())


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    rule: Rule
    reply: Reply | None = None
    domain: str | None = None

    @property
    def refuses(self) -> bool:
        return self.action in (Action.REJECT, Action.TEMPFAIL)


def _refuse(rule: Rule, reply: Reply, dry_run: bool, domain: str | None) -> Verdict:
    if reply.temporary:
        action = Action.WOULD_TEMPFAIL if dry_run else Action.TEMPFAIL
    else:
        action = Action.WOULD_REJECT if dry_run else Action.REJECT
    return Verdict(action, rule, reply, domain)


def login_owns(snapshot: Snapshot, settings: Settings, login: str, sender: Address) -> bool:
    """SPEC 1: the login owns the sender exactly, as a bare login, or by a send-as grant."""
    delimiter = snapshot.global_settings.recipient_delimiter
    wanted = normalise(sender, delimiter)
    login = login.strip()
    if "@" in login:
        try:
            if normalise(parse_address(login), delimiter) == wanted:
                return True
        except AddressError:
            pass
    elif (
        settings.bare_login_match and normalise(Address(login, sender.domain), delimiter) == wanted
    ):
        return True
    granted = snapshot.grants.get(login.lower(), frozenset())
    return wanted in granted or f"@{sender.domain}" in granted


def _recipient_is_local(snapshot: Snapshot, rcpt: str) -> bool:
    try:
        address = parse_path(rcpt)
    except AddressError:
        return False
    return address is not None and snapshot.settings_for(address.domain) is not None


def decide(snapshot: Snapshot, request: Request, rcpt: str) -> Verdict:
    """The verdict for one recipient; the first rule that applies wins."""
    glob = snapshot.global_settings
    if not snapshot.trusted:
        return _refuse(Rule.NO_SETTINGS, glob.tempfail_reply, glob.dry_run, None)
    if request.client is not None and snapshot.networks.contains(request.client):
        return Verdict(Action.CONTINUE, Rule.TRUSTED_NETWORK)
    try:
        parsed = parse_path(request.sender)
    except AddressError:
        return _refuse(Rule.BAD_SENDER, glob.bad_sender_reply, glob.dry_run, None)
    if parsed is None:
        return Verdict(Action.CONTINUE, Rule.NULL_SENDER)
    sender = strip_batv(parsed)
    settings = snapshot.settings_for(sender.domain)
    if settings is None:
        return Verdict(Action.CONTINUE, Rule.NON_LOCAL_SENDER)
    domain = sender.domain
    if request.authenticated:
        assert request.login is not None
        if not settings.require_sender_match:
            return Verdict(Action.CONTINUE, Rule.AUTHENTICATED, domain=domain)
        if login_owns(snapshot, settings, request.login, sender):
            return Verdict(Action.CONTINUE, Rule.SENDER_OWNED, domain=domain)
        return _refuse(
            Rule.SENDER_MISMATCH, settings.sender_mismatch_reply, settings.dry_run, domain
        )
    local_part = normalise(sender, glob.recipient_delimiter).rpartition("@")[0]
    if settings.require_auth_role and local_part in settings.role_senders:
        return _refuse(
            Rule.ROLE_AUTH_REQUIRED, settings.auth_required_reply, settings.dry_run, domain
        )
    if settings.require_auth_local:
        if settings.exempt_local_recipients and _recipient_is_local(snapshot, rcpt):
            return Verdict(Action.CONTINUE, Rule.LOCAL_RECIPIENT, domain=domain)
        return _refuse(Rule.AUTH_REQUIRED, settings.auth_required_reply, settings.dry_run, domain)
    return Verdict(Action.CONTINUE, Rule.AUTH_NOT_REQUIRED, domain=domain)
