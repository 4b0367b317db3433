"""Who owns a sender: the built-in forms, and whether sender-login-maps must be asked. Pure.

See docs/policy.md#ownership.  The maps' own answer is looked up outside the
decision (smtpauth_milter.lookups.ownership) and handed to ``decide()``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smtpauth_milter.core.addresses import (
    Address,
    AddressError,
    normalise,
    parse_address,
    parse_path,
    strip_batv,
)
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.core.snapshot import Snapshot

if TYPE_CHECKING:
    from smtpauth_milter.core.policy import Request


def ownership_form(
    snapshot: Snapshot, settings: Settings, login: str, sender: Address
) -> str | None:
    """How the login owns the sender by the built-in forms: ``login`` (exactly),
    ``bare-login``, ``grant`` (send-as), or None.  See docs/policy.md#ownership.
    """
    delimiter = snapshot.global_settings.recipient_delimiter
    wanted = normalise(sender, delimiter)
    login = login.strip()
    if "@" in login:
        try:
            if normalise(parse_address(login), delimiter) == wanted:
                return "login"
        except AddressError:
            pass
    elif (
        settings.bare_login_match and normalise(Address(login, sender.domain), delimiter) == wanted
    ):
        return "bare-login"
    granted = snapshot.grants.get(login.lower(), frozenset())
    return "grant" if wanted in granted or f"@{sender.domain}" in granted else None


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
