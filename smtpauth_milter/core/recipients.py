"""What counts as a local recipient (``exempt-local-recipients``). Pure.

docs/policy.md#recipients-the-mta-routes-elsewhere and #forwarding-aliases say
exactly what is checked, and what is not.
"""

from __future__ import annotations

from smtpauth_milter.core.addresses import AddressError, parse_path
from smtpauth_milter.core.snapshot import Snapshot

# A local part holding one of these may be routed elsewhere by the MTA:
# ``victim%gmail.com@example.com`` (Postfix allow_percent_hack, Sendmail's %
# hack), ``gmail.com!victim@example.com`` (swap_bangpath, UUCP) and
# ``"victim@gmail.com"@example.com`` (resolve_dequoted_address).
_ROUTING_CHARACTERS = frozenset("%!@")


def recipient_is_local(snapshot: Snapshot, rcpt: str) -> bool:
    """A local recipient for ``exempt-local-recipients``: a local (or alias) domain and no
    routing character in the local part.  Where the MTA then forwards it (an alias to
    an outside address) is not asked: docs/policy.md#forwarding-aliases."""
    try:
        address = parse_path(rcpt)
    except AddressError:
        return False
    if address is None or not _ROUTING_CHARACTERS.isdisjoint(address.local):
        return False
    return snapshot.settings_for(address.domain) is not None
