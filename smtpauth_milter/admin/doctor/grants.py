"""Doctor's check of the store's send-as grants: every ``*`` grant is a warning."""

from __future__ import annotations

from collections.abc import Iterable

from smtpauth_milter.admin.doctor.checks import Finding, warning


def check_send_as_anyone(logins: Iterable[str]) -> list[Finding]:
    """One warning per login that may send as anyone (``sender allow LOGIN '*'``)."""
    return [
        warning(
            f"login {login} may send as anyone (send-as-anyone grant '*')",
            f"keep it only for a relay or application login; else "
            f"smtpauth-milter sender revoke {login} '*'",
        )
        for login in sorted(logins)
    ]
