"""The decision, per recipient (SPEC section 3). Pure: no I/O, no clock, no pymilter.

The milter and ``smtpauth-milter check`` both call :func:`decide`.  The
milter also calls :func:`decide_header` once per message at end of headers
when ``require-header-from-match`` is on anywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from smtpauth_milter.core.addresses import (
    Address,
    AddressError,
    normalise,
    parse_header_list,
    parse_path,
    strip_batv,
)
from smtpauth_milter.core.networks import IPAddress
from smtpauth_milter.core.ownership import Ownership, ownership
from smtpauth_milter.core.replies import Reply
from smtpauth_milter.core.snapshot import Snapshot


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
    # end of headers (require-header-from-match)
    HEADER_CHECKS_OFF = "header-checks-off"
    BAD_HEADER_FROM = "bad-header-from"
    HEADER_FROM_NOT_CHECKED = "header-from-not-checked"
    HEADER_FROM_AUTH_REQUIRED = "header-from-auth-required"
    HEADER_FROM_OWNED = "header-from-owned"
    HEADER_SENDER_OWNED = "header-sender-owned"
    HEADER_FROM_MISMATCH = "header-from-mismatch"


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
    # how the login owns the sender (rules sender-owned, header-*-owned), else None
    owned_by: Ownership | None = None

    @property
    def refuses(self) -> bool:
        return self.action in (Action.REJECT, Action.TEMPFAIL)


def _refuse(rule: Rule, reply: Reply, dry_run: bool, domain: str | None) -> Verdict:
    if reply.temporary:
        action = Action.WOULD_TEMPFAIL if dry_run else Action.TEMPFAIL
    else:
        action = Action.WOULD_REJECT if dry_run else Action.REJECT
    return Verdict(action, rule, reply, domain)


def _recipient_is_local(snapshot: Snapshot, rcpt: str) -> bool:
    try:
        address = parse_path(rcpt)
    except AddressError:
        return False
    return address is not None and snapshot.settings_for(address.domain) is not None


def _store_and_network_rules(snapshot: Snapshot, request: Request) -> Verdict | None:
    """SPEC 3 rules 1 and 2, shared by the envelope and the header decision."""
    glob = snapshot.global_settings
    if not snapshot.trusted:
        return _refuse(Rule.NO_SETTINGS, glob.tempfail_reply, glob.dry_run, None)
    if request.client is not None and snapshot.networks.contains(request.client):
        return Verdict(Action.CONTINUE, Rule.TRUSTED_NETWORK)
    return None


def decide(snapshot: Snapshot, request: Request, rcpt: str) -> Verdict:
    """The verdict for one recipient; the first rule that applies wins."""
    glob = snapshot.global_settings
    first = _store_and_network_rules(snapshot, request)
    if first is not None:
        return first
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
        owned = ownership(snapshot, settings, request.login, sender)
        if owned is not None:
            return Verdict(Action.CONTINUE, Rule.SENDER_OWNED, domain=domain, owned_by=owned)
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


def _owns_header_address(snapshot: Snapshot, login: str, address: Address) -> Ownership | None:
    settings = snapshot.settings_for(address.domain)
    if settings is None:  # bare-login-match is a local domain's setting, never a remote one's
        settings = dataclasses.replace(snapshot.global_settings, bare_login_match=False)
    return ownership(snapshot, settings, login, address)


def _single(values: Sequence[str]) -> Address | None:
    """The one address of a header that occurs once with one address; else None."""
    if len(values) != 1:
        return None
    try:
        addresses = parse_header_list(values)
    except AddressError:
        return None
    return addresses[0] if len(addresses) == 1 else None


def decide_header(
    snapshot: Snapshot, request: Request, from_values: Sequence[str], sender_values: Sequence[str]
) -> Verdict:
    """The verdict for one message at end of headers (require-header-from-match).

    ``from_values`` / ``sender_values`` are the raw values of every ``From:`` /
    ``Sender:`` header field, in order.  The From: address is held to the
    envelope sender's rules: a local From: in a domain with the setting on needs
    a login, and the login must own the From: or the Sender: address (SPEC 1).
    With the setting on anywhere, a message whose From: is missing, cannot be
    parsed or names more than one address is refused (``bad-header-from``).
    """
    glob = snapshot.global_settings
    first = _store_and_network_rules(snapshot, request)
    if first is not None:
        return first
    if not snapshot.header_checks:
        return Verdict(Action.CONTINUE, Rule.HEADER_CHECKS_OFF)
    try:
        addresses = parse_header_list(from_values)
    except AddressError:
        addresses = []
    if len(addresses) != 1 or len(from_values) != 1:
        checked = (snapshot.settings_for(a.domain) for a in addresses)
        settings = next((s for s in checked if s and s.require_header_from_match), glob)
        return _refuse(
            Rule.BAD_HEADER_FROM, settings.header_from_mismatch_reply, settings.dry_run, None
        )
    header_from = addresses[0]
    domain = header_from.domain
    found = snapshot.settings_for(domain)
    if found is None or not found.require_header_from_match:
        return Verdict(Action.CONTINUE, Rule.HEADER_FROM_NOT_CHECKED, domain=domain)
    settings = found
    if not request.authenticated:
        return _refuse(
            Rule.HEADER_FROM_AUTH_REQUIRED, settings.auth_required_reply, settings.dry_run, domain
        )
    assert request.login is not None
    owned = _owns_header_address(snapshot, request.login, header_from)
    if owned is not None:
        return Verdict(Action.CONTINUE, Rule.HEADER_FROM_OWNED, domain=domain, owned_by=owned)
    sender = _single(sender_values)
    owned = _owns_header_address(snapshot, request.login, sender) if sender else None
    if owned is not None:
        return Verdict(Action.CONTINUE, Rule.HEADER_SENDER_OWNED, domain=domain, owned_by=owned)
    return _refuse(
        Rule.HEADER_FROM_MISMATCH, settings.header_from_mismatch_reply, settings.dry_run, domain
    )
