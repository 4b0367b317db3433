"""What the MTA told us about one message, as the decision reads it. Pure.

A module of its own, below both :mod:`.ownership` and :mod:`.policy`, so that
neither has to import the other for it (no import circle).
"""

from __future__ import annotations

from dataclasses import dataclass

from smtpauth_milter.core.networks import IPAddress
from smtpauth_milter.core.spf import SpfResult


@dataclass(frozen=True, slots=True)
class Request:
    """What the MTA told us about one message: client, login and raw MAIL FROM.

    ``spf`` is the SPF result for client and sender once it was looked up
    (see :func:`smtpauth_milter.core.policy.needs_spf`); None while it was not.
    """

    client: IPAddress | None
    login: str | None
    sender: str
    spf: SpfResult | None = None

    @property
    def authenticated(self) -> bool:
        return bool(self.login and self.login.strip())
