"""Who owns a sender: the built-in forms, the sender's own sub-address, and whether
sender-login-maps must be asked. Pure.

See docs/policy.md#ownership.  A login owns an address by one of these forms,
tried in this order; the first that holds is the one reported (``owned_by``):

- ``login``: the login is the address itself (case aside);
- ``bare-login``: a login without ``@`` owns ``login@domain`` where the
  domain's ``bare-login-match`` is on;
- ``grant``: a send-as grant names the exact address;
- ``grant-domain``: a send-as grant names ``@domain``;
- ``alias-domain``: the address is in an alias domain and the login owns the
  same local part in the alias's target domain, by any of the forms above
  (with the target's settings);
- ``send-as-anyone``: a ``*`` grant: the login owns every address.

Nothing is ever cut at a ``recipient-delimiter`` character but the sender's
own sub-address, and only once its full address found no owner anywhere, as
Postfix's first match wins: the forms above, every address a grant or a
login names (``Snapshot.owned_addresses``), then the maps.  Only then is
``bob+news@`` (or, with ``-`` a delimiter, ``bob-smith@``) judged as ``bob@``
(:func:`sub_address_form`).  A login and a grant's target are never cut.

The maps' own answer is looked up outside the decision
(smtpauth_milter.lookups.ownership) and handed to ``decide()``.
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

from smtpauth_milter.core.addresses import (
    Address,
    AddressError,
    normalise,
    parse_address,
    parse_path,
    split_local,
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
    """The forms that need no alias: the login itself, bare login, a grant (nothing cut)."""
    wanted = normalise(sender, "")
    if "@" in login:
        try:
            if normalise(parse_address(login), "") == wanted:
                return Ownership.LOGIN
        except AddressError:
            pass
    elif settings.bare_login_match and normalise(Address(login, sender.domain), "") == wanted:
        return Ownership.BARE_LOGIN
    granted = snapshot.grants.get(login.lower(), frozenset())
    if wanted in granted:
        return Ownership.GRANT
    if f"@{sender.domain}" in granted:
        return Ownership.GRANT_DOMAIN
    return None


def _by_address(
    snapshot: Snapshot, settings: Settings, login: str, sender: Address
) -> Ownership | None:
    """The forms that name the address: :func:`_direct`, then the alias domain's target."""
    found = _direct(snapshot, settings, login, sender)
    if found is not None:
        return found
    target = snapshot.aliases.get(sender.domain)
    target_settings = snapshot.settings_for(target) if target is not None else None
    if target is not None and target_settings is not None:
        in_target = Address(sender.local, target)
        if _direct(snapshot, target_settings, login, in_target) is not None:
            return Ownership.ALIAS_DOMAIN
    return None


def ownership_form(
    snapshot: Snapshot, settings: Settings, login: str, sender: Address
) -> Ownership | None:
    """How ``login`` owns the full address ``sender`` (whose domain's settings are
    ``settings``) by the built-in forms, or None.  Nothing is cut at a delimiter."""
    login = login.strip()
    found = _by_address(snapshot, settings, login, sender)
    if found is not None:
        return found
    if ANYONE in snapshot.grants.get(login.lower(), frozenset()):
        return Ownership.SEND_AS_ANYONE
    return None


def _named(snapshot: Snapshot, sender: Address) -> bool:
    """A grant or a login names the full address (or, in an alias domain, the same
    local part in the target domain): it has an owner of its own."""
    named = snapshot.owned_addresses
    if normalise(sender, "") in named:
        return True
    target = snapshot.aliases.get(sender.domain)
    return target is not None and normalise(Address(sender.local, target), "") in named


def sub_address_form(
    snapshot: Snapshot, settings: Settings, login: str, sender: Address
) -> Ownership | None:
    """How ``login`` owns ``sender`` as its own sub-address: the local part cut at the
    first ``recipient-delimiter`` character (as Postfix cuts it), then the forms that
    name an address.  None when Postfix would not cut, or when a grant or login names
    the full address.  Ask it only after the full address found no owner in the
    built-in forms and in the maps (``MapAnswer.names``): the first match wins."""
    base = split_local(sender.local, snapshot.global_settings.recipient_delimiter)
    if base is None or _named(snapshot, sender):
        return None
    return _by_address(snapshot, settings, login.strip(), replace(sender, local=base))


def owns(snapshot: Snapshot, settings: Settings, login: str, address: Address) -> Ownership | None:
    """How ``login`` owns ``address`` by a built-in form, its full address first, then as
    its sub-address (no map asked: the header checks)."""
    found = ownership_form(snapshot, settings, login, address)
    return found if found is not None else sub_address_form(snapshot, settings, login, address)


def map_lookup_sender(snapshot: Snapshot, request: Request) -> Address | None:
    """The sender to ask ``sender-login-maps`` about, or None when no answer could change
    the verdict: no map, trusted client, no login, null/bad/remote sender,
    require-sender-match off for its domain, or its full address owned by a built-in
    form already.  A sub-address is asked too: its full address may have an owner
    of its own in the maps, which must be known before it is cut.
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
    return None if ownership_form(snapshot, settings, request.login, sender) else sender
