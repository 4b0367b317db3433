"""Who owns a sender address, and by which form. Pure: no I/O.

A login owns an address, checked in this order (the first form that matches
is the one reported):

- ``login``: the login is the address itself (case and sub-address aside);
- ``bare-login``: a login without ``@`` owns ``login@domain`` where the
  domain's ``bare-login-match`` is on;
- ``grant``: a send-as grant names the exact address;
- ``grant-domain``: a send-as grant names ``@domain``;
- ``alias-domain``: the address is in an alias domain and the login owns the
  same local part in the alias's target domain, by any of the forms above
  (with the target's ``bare-login-match``);
- ``send-as-anyone``: a ``*`` grant: the login owns every address.
"""

from __future__ import annotations

from enum import StrEnum

from smtpauth_milter.core.addresses import Address, AddressError, normalise, parse_address
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


def ownership(
    snapshot: Snapshot, settings: Settings, login: str, sender: Address
) -> Ownership | None:
    """The form by which ``login`` owns ``sender`` (whose domain's settings are
    ``settings``), or None when it does not own it."""
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
