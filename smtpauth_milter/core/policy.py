"""The decision, per recipient. Pure: no I/O, no clock, no pymilter.

The rules are documented in docs/policy.md#the-envelope-decision and
docs/policy.md#the-end-of-headers-decision.

The milter and ``smtpauth-milter check`` both call :func:`decide`.  The
milter also calls :func:`decide_header` once per message at end of headers
when ``require-header-from-match`` is on anywhere.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from smtpauth_milter.core.addresses import (
    Address,
    AddressError,
    header_domains,
    parse_header_list,
    parse_path,
    strip_batv,
)
from smtpauth_milter.core.ownermaps import MapAnswer, MapOutcome
from smtpauth_milter.core.ownership import Ownership, ownership_form, owns, sub_address_form
from smtpauth_milter.core.recipients import recipient_is_local
from smtpauth_milter.core.replies import Reply
from smtpauth_milter.core.request import Request as Request  # re-exported: callers import it here
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.core.spf import SpfResult


class Action(StrEnum):
    CONTINUE = "continue"
    REJECT = "reject"
    TEMPFAIL = "tempfail"
    WOULD_REJECT = "would-reject"
    WOULD_TEMPFAIL = "would-tempfail"


# Asked for every recipient: a module constant (an enum member looked up on its class
# costs ~0.2 us on Python 3.11).
_REFUSING = (Action.REJECT, Action.TEMPFAIL)


class Rule(StrEnum):
    NO_SETTINGS = "no-settings"
    TRUSTED_NETWORK = "trusted-network"
    BAD_SENDER = "bad-sender"
    NULL_SENDER = "null-sender"
    NON_LOCAL_SENDER = "non-local-sender"
    SENDER_MISMATCH = "sender-mismatch"
    SENDER_OWNED = "sender-owned"
    SENDER_MAP_FAILED = "sender-map-failed"
    AUTHENTICATED = "authenticated"
    ROLE_AUTH_REQUIRED = "role-auth-required"
    AUTH_REQUIRED = "auth-required"
    SPF_PASS = "spf-pass"  # noqa: S105 -- an SPF result, not a password
    SPF_TEMPERROR = "spf-temperror"
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
    # per-login limits (core/loginpolicy.py): the limit crossed, or the login is frozen
    LOGIN_MAX_MESSAGES = "login-max-messages"
    LOGIN_MAX_RECIPIENTS = "login-max-recipients"
    LOGIN_MAX_CLIENT_IPS = "login-max-client-ips"
    LOGIN_MAX_MISMATCHES = "login-max-mismatches"
    LOGIN_FROZEN = "login-frozen"


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    rule: Rule
    reply: Reply | None = None
    domain: str | None = None
    owned_by: str | None = None  # *-owned: an Ownership form, or the map that answered
    owner_key: str | None = None  # the key the map answered

    @property
    def refuses(self) -> bool:
        return self.action in _REFUSING


def _refuse(rule: Rule, reply: Reply, dry_run: bool, domain: str | None) -> Verdict:
    if reply.temporary:
        action = Action.WOULD_TEMPFAIL if dry_run else Action.TEMPFAIL
    else:
        action = Action.WOULD_REJECT if dry_run else Action.REJECT
    return Verdict(action, rule, reply, domain)


def _is_role_sender(local: str, roles: frozenset[str], delimiter: str) -> bool:
    """The whole local part, or the part before any delimiter in it, is a listed role.

    With a delimiter of ``+-`` the list's ``no-reply`` matches ``no-reply``,
    ``No-Reply+x`` and ``no-reply-x``, and ``postmaster`` matches ``postmaster-x``.
    """
    folded = local.lower()
    if folded in roles:
        return True
    return any(folded[:cut] in roles for cut, ch in enumerate(folded) if cut and ch in delimiter)


def _store_and_network_rules(snapshot: Snapshot, request: Request) -> Verdict | None:
    """Rules 1 and 2 (no settings, trusted network), shared by both decisions."""
    glob = snapshot.global_settings
    if not snapshot.trusted:
        return _refuse(Rule.NO_SETTINGS, glob.tempfail_reply, glob.dry_run, None)
    if request.client is not None and snapshot.networks.contains(request.client):
        return Verdict(Action.CONTINUE, Rule.TRUSTED_NETWORK)
    return None


def _by_maps(
    settings: Settings, glob: Settings, login: str, domain: str, owners: MapAnswer | None
) -> Verdict:
    """Not owned by a built-in form: the maps decide (None = never asked: fail closed)."""
    if owners is None or owners.outcome is MapOutcome.FAILED:
        return _refuse(Rule.SENDER_MAP_FAILED, glob.tempfail_reply, settings.dry_run, domain)
    if owners.owned_by(login):
        return Verdict(Action.CONTINUE, Rule.SENDER_OWNED, None, domain, owners.map, owners.key)
    return _refuse(Rule.SENDER_MISMATCH, settings.sender_mismatch_reply, settings.dry_run, domain)


def _by_owner(
    snapshot: Snapshot, settings: Settings, login: str, sender: Address, owners: MapAnswer | None
) -> Verdict:
    """require-sender-match: the full address by the built-in forms, then by the maps;
    only when neither names it, the sender's sub-address (docs/policy.md#sub-addresses)."""
    glob, domain = snapshot.global_settings, sender.domain
    form = ownership_form(snapshot, settings, login, sender)
    maps = bool(glob.sender_login_maps)
    unnamed = not maps or (  # the maps answered, and not for the full address
        owners is not None and owners.outcome is not MapOutcome.FAILED and not owners.names(sender)
    )
    if form is None and unnamed:
        form = sub_address_form(snapshot, settings, login, sender)
    if form is not None:
        return Verdict(Action.CONTINUE, Rule.SENDER_OWNED, domain=domain, owned_by=form)
    if maps:
        return _by_maps(settings, glob, login, domain, owners)
    return _refuse(Rule.SENDER_MISMATCH, settings.sender_mismatch_reply, settings.dry_run, domain)


def decide(
    snapshot: Snapshot, request: Request, rcpt: str, owners: MapAnswer | None = None
) -> Verdict:
    """The verdict for one recipient; the first rule that applies wins.  ``owners``: what
    sender-login-maps said, looked up when ``ownership.map_lookup_sender`` asked for it."""
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
        return _by_owner(snapshot, settings, request.login, sender, owners)
    role = _is_role_sender(sender.local, settings.role_senders, glob.recipient_delimiter)
    if settings.require_auth_role and role:
        return _login_or_spf(snapshot, request, settings, Rule.ROLE_AUTH_REQUIRED, domain)
    if settings.require_auth_local:
        if settings.exempt_local_recipients and recipient_is_local(snapshot, rcpt):
            return Verdict(Action.CONTINUE, Rule.LOCAL_RECIPIENT, domain=domain)
        return _login_or_spf(snapshot, request, settings, Rule.AUTH_REQUIRED, domain)
    return Verdict(Action.CONTINUE, Rule.AUTH_NOT_REQUIRED, domain=domain)


def _spf_exempts(settings: Settings, rule: Rule) -> bool:
    """Whether SPF may stand in for the login this rule requires (spf-exempt[-role])."""
    if rule is Rule.ROLE_AUTH_REQUIRED:
        return settings.spf_exempt_role
    return rule is Rule.AUTH_REQUIRED and settings.spf_exempt


def _login_or_spf(
    snapshot: Snapshot, request: Request, settings: Settings, rule: Rule, domain: str
) -> Verdict:
    """A login is required: SPF pass stands in for it where allowed, temperror tempfails."""
    if _spf_exempts(settings, rule):
        if request.spf is SpfResult.PASS:
            return Verdict(Action.CONTINUE, Rule.SPF_PASS, domain=domain)
        if request.spf is SpfResult.TEMPERROR:
            tempfail = snapshot.global_settings.tempfail_reply
            return _refuse(Rule.SPF_TEMPERROR, tempfail, settings.dry_run, domain)
    return _refuse(rule, settings.auth_required_reply, settings.dry_run, domain)


def needs_spf(snapshot: Snapshot, request: Request, verdict: Verdict) -> bool:
    """Whether an SPF result could change ``verdict``, decided without one.

    The milter looks SPF up only then (once per message), and decides again
    with the result in ``request.spf``.
    """
    if request.spf is not None or verdict.domain is None or request.client is None:
        return False
    settings = snapshot.settings_for(verdict.domain)
    return settings is not None and _spf_exempts(settings, verdict.rule)


def spf_identity(mail_from: str) -> str:
    """The address SPF checks for a raw MAIL FROM: as sent (a BATV tag included), no brackets;
    empty for the null sender or one that cannot be parsed."""
    try:
        address = parse_path(mail_from)
    except AddressError:
        return ""
    return "" if address is None else str(address)


SpfLookup = Callable[[Request], SpfResult]


def decide_with_spf(
    snapshot: Snapshot,
    request: Request,
    rcpt: str,
    lookup_spf: SpfLookup,
    owners: MapAnswer | None = None,
) -> tuple[Request, Verdict]:
    """:func:`decide`, asking ``lookup_spf`` only when SPF could change the verdict.

    Returns the request (with ``spf`` set once looked up: keep it for the
    message's next recipients) and the verdict.  ``owners`` goes to :func:`decide`.
    """
    verdict = decide(snapshot, request, rcpt, owners)
    if not needs_spf(snapshot, request, verdict):
        return request, verdict
    request = Request(request.client, request.login, request.sender, lookup_spf(request))
    return request, decide(snapshot, request, rcpt, owners)


def _owns_header_address(snapshot: Snapshot, login: str, address: Address) -> Ownership | None:
    settings = snapshot.settings_for(address.domain)
    if settings is None:  # bare-login-match is a local domain's setting, never a remote one's
        settings = dataclasses.replace(snapshot.global_settings, bare_login_match=False)
    return owns(snapshot, settings, login, address)


def _single(values: Sequence[str]) -> Address | None:
    """The one address of a header that occurs once with one address; else None."""
    if len(values) != 1:
        return None
    try:
        addresses = parse_header_list(values)
    except AddressError:
        return None
    return addresses[0] if len(addresses) == 1 else None


def _header_checked(snapshot: Snapshot, domain: str) -> Settings | None:
    """The settings of a local domain with require-header-from-match on; else None."""
    found = snapshot.settings_for(domain)
    return found if found is not None and found.require_header_from_match else None


def _envelope_domain(request: Request) -> list[str]:
    try:
        parsed = parse_path(request.sender)
    except AddressError:  # already refused (or would-rejected) at RCPT: bad-sender
        return []
    return [] if parsed is None else [parsed.domain]


def _bad_header_from(snapshot: Snapshot, request: Request, from_values: Sequence[str]) -> Verdict:
    """A From: that is missing, repeated, names several addresses or cannot be parsed.

    Refused only when the message is one of a domain with the rule in effect:
    the first From: domain we can extract with the rule on, else the envelope
    sender's domain with the rule on; that domain's reply and dry-run apply.
    """
    for domain in (*header_domains(from_values), *_envelope_domain(request)):
        settings = _header_checked(snapshot, domain)
        if settings is not None:
            reply = settings.header_from_mismatch_reply
            return _refuse(Rule.BAD_HEADER_FROM, reply, settings.dry_run, domain)
    return Verdict(Action.CONTINUE, Rule.HEADER_FROM_NOT_CHECKED)


def decide_header(
    snapshot: Snapshot, request: Request, from_values: Sequence[str], sender_values: Sequence[str]
) -> Verdict:
    """The verdict for one message at end of headers (require-header-from-match).

    ``from_values`` / ``sender_values`` are the raw values of every ``From:`` /
    ``Sender:`` header field, in order.  The From: address is held to the
    envelope sender's rules: a local From: in a domain with the setting on needs
    a login, and the login must own the From: or the Sender: address (docs/policy.md#ownership).
    A From: that is missing, unparseable or names more than one address is
    refused (``bad-header-from``) when a From: domain or the envelope sender's
    domain has the setting on.
    """
    first = _store_and_network_rules(snapshot, request)
    if first is not None:
        return first
    if not snapshot.header_checks:
        return Verdict(Action.CONTINUE, Rule.HEADER_CHECKS_OFF)
    header_from = _single(from_values)
    if header_from is None:
        return _bad_header_from(snapshot, request, from_values)
    domain = header_from.domain
    settings = _header_checked(snapshot, domain)
    if settings is None:
        return Verdict(Action.CONTINUE, Rule.HEADER_FROM_NOT_CHECKED, domain=domain)
    if not request.authenticated:
        return _refuse(
            Rule.HEADER_FROM_AUTH_REQUIRED, settings.auth_required_reply, settings.dry_run, domain
        )
    assert request.login is not None
    if owned := _owns_header_address(snapshot, request.login, header_from):
        return Verdict(Action.CONTINUE, Rule.HEADER_FROM_OWNED, domain=domain, owned_by=owned)
    sender = _single(sender_values)
    if sender and (owned := _owns_header_address(snapshot, request.login, sender)):
        return Verdict(Action.CONTINUE, Rule.HEADER_SENDER_OWNED, domain=domain, owned_by=owned)
    return _refuse(
        Rule.HEADER_FROM_MISMATCH, settings.header_from_mismatch_reply, settings.dry_run, domain
    )
