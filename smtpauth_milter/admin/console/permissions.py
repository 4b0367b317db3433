"""Who may do what in the console: each handler declares one :class:`Need`, checked once.

A server admin may do everything. A domain admin may look at the console and
change what belongs to one of their domains (its overrides, its grants, its
alias domains), never the server's values, trusted networks or another domain.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.store import accounts, editing


class Need(Enum):
    LOGGED_IN = "any console admin"
    SERVER = "a server admin"
    SCOPED = "a server admin, or without a domain, the domain's admin"  # the For Domain value


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    domains: frozenset[str]

    @classmethod
    def of(cls, account: accounts.Account) -> Principal:
        return cls(account.name, account.role, frozenset(account.domains))

    @property
    def server(self) -> bool:
        return self.role == accounts.SERVER

    def may(self, need: Need, domain: str | None) -> bool:
        """``domain``: the request's For Domain (None: the entire server)."""
        if self.server or need is Need.LOGGED_IN:
            return True
        if need is Need.SERVER:
            return False
        return domain is not None and domain in self.domains


def scope(raw: str | None) -> str | None:
    """The For Domain of a request: None for the entire server, else the domain's
    ASCII name (a malformed one is kept as given: it is nobody's domain)."""
    if raw is None or raw == "":
        return None
    try:
        return editing.local_domain(raw)
    except SettingError:
        return raw
