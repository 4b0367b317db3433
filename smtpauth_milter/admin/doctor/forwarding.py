"""Doctor's check of ``exempt-local-recipients`` against Postfix's aliases.

A recipient counts as local by its domain alone (docs/policy.md#forwarding-aliases):
an alias of a local domain that forwards off-site is exempted too, so an
unauthenticated client could reach its outside target with a forged local
sender.  Doctor cannot read every alias; it warns when the two meet.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from smtpauth_milter.admin.doctor.checks import Finding, warning
from smtpauth_milter.core.snapshot import Snapshot

# Postfix's tables that may forward an address of a local domain elsewhere.
ALIAS_PARAMS = ("virtual_alias_maps", "alias_maps")


def exempt_domains(snapshot: Snapshot) -> list[str]:
    """The local domains whose effective ``exempt-local-recipients`` is on."""
    return sorted(name for name, s in snapshot.domains.items() if s.exempt_local_recipients)


def check_forwarding(exempt: Sequence[str], params: Mapping[str, str]) -> Finding | None:
    """A warning when ``exempt-local-recipients`` is on for a domain and Postfix has aliases."""
    tables = [f"{name} = {params[name]}" for name in ALIAS_PARAMS if params.get(name, "").strip()]
    if not exempt or not tables:
        return None
    shown = ", ".join(exempt[:5]) + (f" and {len(exempt) - 5} more" if len(exempt) > 5 else "")
    return warning(
        f"exempt-local-recipients is on for {shown} and Postfix has aliases "
        f"({'; '.join(tables)}): an alias of a local domain that forwards off-site counts "
        "as a local recipient, so an unauthenticated client can reach its outside target "
        "with a forged local sender",
        "turn exempt-local-recipients off (settings set [--domain D] exempt-local-recipients "
        "off) unless no alias of a local domain forwards off-site; "
        "see docs/policy.md#forwarding-aliases",
    )
