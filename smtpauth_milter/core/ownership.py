"""Who owns a sender: the built-in forms, and whether sender-login-maps must be asked. Pure.

See docs/policy.md#ownership.  A login owns an address by one of these forms,
tried in this order; the first that holds is the one reported (``owned_by``):

- ``login``: the login is the address itself (case and sub-address aside);
- ``bare-login``: a login without ``@`` owns ``login@domain`` where the
  domain's ``bare-login-match`` is on;
- ``grant``: a send-as grant names the exact address;
- ``grant-domain``: a send-as grant names ``@domain``;
- ``alias-domain``: the address is in an alias domain and the login owns the
  same local part in the alias's target domain, by any of the forms above
  (with the target's settings);
- ``send-as-anyone``: a ``*`` grant: the login owns every address.

The maps' own answer is looked up outside the decision
(smtpauth_milter.lookups.ownership) and handed to ``decide()``.
"""

from __future__ import annotations

from enum import StrEnum

from smtpauth_milter.core.addresses import (
    Address,
    AddressError,
    normalise,
    parse_address,
    parse_path,
    strip_batv,
)
from smtpauth_milter.core.request import Request
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.core.snapshot import ANYONE, Snapshot


class Ownership(StrEnum):
    LOGIN = "login"
    BARE_LOGIN = "bare-login"
    GRANT = "grant"
    GRANT_DOMAIN = "grant-domain"
    ALIAS_DOMAIN = "alias-domain"
    SEND_AS_ANYONE = "send-as-anyone"


def _direct(
    snapshot: Snapshot, settings: Settings, login: str, sender: Address
) -> Ownership | None:
    """The forms that need no alias: the login itself, bare login, a grant."""
    delimiter = snapshot.global_settings.recipient_delimiter
    wanted = normalise(sender, delimiter)
    if "@" in login:
        try:
            if normalise(parse_address(login), delimiter) == wanted:
                return Ownership.LOGIN
        except AddressError:
            pass
    elif (
        settings.bare_login_match and normalise(Address(login, sender.domain), delimiter) == wanted
    ):
        return Ownership.BARE_LOGIN
    granted = snapshot.grants.get(login.lower(), frozenset())
    if wanted in granted:
        return Ownership.GRANT
    if f"@{sender.domain}" in granted:
        return Ownership.GRANT_DOMAIN
    return None


def ownership_form(
    snapshot: Snapshot, settings: Settings, login: str, sender: Address
) -> Ownership | None:
    """How ``login`` owns ``sender`` (whose domain's settings are ``settings``) by the
    built-in forms, or None."""
    login = login.strip()
    found = _direct(snapshot, settings, login, sender)
    if found is not None:
        return found
    target = snapshot.aliases.get(sender.domain)
    target_settings = snapshot.settings_for(target) if target is not None else None
    if target is not None and target_settings is not None:
        in_target = Address(sender.local, target)
        if _direct(snapshot, target_settings, login, in_target) is not None:
            return Ownership.ALIAS_DOMAIN
    if ANYONE in snapshot.grants.get(login.lower(), frozenset()):
        return Ownership.SEND_AS_ANYONE
    return None


def login_owns(snapshot: Snapshot, settings: Settings, login: str, sender: Address) -> bool:
    """The login owns the sender by one of the built-in forms."""
    return ownership_form(snapshot, settings, login, sender) is not None


def map_lookup_sender(snapshot: Snapshot, request: Request) -> Address | None:
    """The sender to ask ``sender-login-maps`` about, or None when no answer could change
    the verdict: no map, trusted client, no login, null/bad/remote sender,
    require-sender-match off for its domain, or owned by a built-in form already.
    """
    if not snapshot.global_settings.sender_login_maps or not request.authenticated:
        return None
    if not snapshot.trusted or (  # rules 1 and 2 answer before ownership is asked
        request.client is not None and snapshot.networks.contains(request.client)
    ):
        return None
    try:
        parsed = parse_path(request.sender)
    except AddressError:
        return None
    if parsed is None:
        return None
    sender = strip_batv(parsed)
    settings = snapshot.settings_for(sender.domain)
    if settings is None or not settings.require_sender_match:
        return None
    assert request.login is not None
    return None if login_owns(snapshot, settings, request.login, sender) else sender
