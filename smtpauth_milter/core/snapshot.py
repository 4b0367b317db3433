"""The snapshot: every setting, domain, network and grant a decision needs, immutable.

Loaded at once from the store (or built by tests) and swapped in whole, so a
decision never sees half of a change.  Grants are normalised here, once, and
an alias domain's effective settings are resolved here, once.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from smtpauth_milter.core.addresses import (
    AddressError,
    domain_name,
    normalise,
    parse_address,
)
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.networks import NetworkSet
from smtpauth_milter.core.settings import Settings

# The send-as-anyone grant target: the login owns every sender.
ANYONE = "*"


def grant_login(login: str) -> str:
    """The key a login is granted under: trimmed and case-folded."""
    key = login.strip().lower()
    if not key or not key.isprintable() or any(ch.isspace() for ch in key):
        raise SettingError(f"bad login {login!r}")
    return key


def grant_target(target: str) -> str:
    """An exact address (normalised, never cut at a delimiter), ``@domain`` or ``*`` (anyone)."""
    text = target.strip()
    if text == ANYONE:
        return ANYONE
    try:
        if text.startswith("@"):
            return "@" + domain_name(text[1:])
        address = parse_address(text)
    except AddressError as exc:
        raise SettingError(f"bad address, @domain or '*' {target!r}: {exc}") from exc
    return normalise(address, "")


def _normalised_target(target: str) -> str:
    """A stored grant target as compared: lower-case, never cut at a delimiter (a grant
    of ``sales-team@`` is that address, whatever ``recipient-delimiter`` says)."""
    if target.startswith("@") or target == ANYONE:
        return target
    if target.isascii() and '"' not in target and " " not in target:
        return target.lower()  # no re-parse: grant_target wrote it in canonical form
    return normalise(parse_address(target), "")


# A login already in canonical form (lower-case dot-atom @ LDH labels): no parse needed.
_PLAIN_LOGIN = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*"
)


def _owned_addresses(grants: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """Every exact address someone owns by name: each exact grant target, and each
    login that is an address (a login that holds a grant is known to exist)."""
    found = {t for targets in grants.values() for t in targets if t != ANYONE and t[0] != "@"}
    for login in grants:
        if "@" not in login:
            continue  # a bare login (``carol``)
        if _PLAIN_LOGIN.fullmatch(login):
            found.add(login)
            continue
        try:
            found.add(normalise(parse_address(login), ""))
        except AddressError:
            continue  # a login that is no address
    return frozenset(found)


@dataclass(frozen=True)
class Snapshot:
    """Everything a decision needs, immutable, loaded at once from the store.

    ``trusted`` is False when the store could not be read for longer than
    ``--max-stale``: the policy then tempfails, using the last known replies.
    """

    global_settings: Settings
    domains: Mapping[str, Settings]
    networks: NetworkSet
    grants: Mapping[str, frozenset[str]]
    serial: int = 0
    trusted: bool = True
    # Exact addresses (normalised, never cut) that a grant or a login names: a sender's
    # sub-address is never cut to find its owner when its full address is one of them.
    owned_addresses: frozenset[str] = frozenset()
    global_values: Mapping[str, str] = field(default_factory=dict)
    # require-header-from-match is in effect for some local domain (its own
    # value or the global one): the milter then asks the MTA for the headers.
    header_checks: bool = False
    # alias domain -> its target domain (one level: a target is never an alias)
    aliases: Mapping[str, str] = field(default_factory=dict)
    # logins no per-login limit counts (core/loginpolicy.py), as login_key() folds them
    exempt_logins: frozenset[str] = frozenset()

    @classmethod
    def build(
        cls,
        global_values: Mapping[str, str],
        domain_values: Mapping[str, Mapping[str, str]],
        networks: NetworkSet,
        grants: Iterable[tuple[str, str]],
        serial: int = 0,
        aliases: Mapping[str, str] | None = None,
    ) -> Snapshot:
        """``aliases`` maps an alias domain to its target; both are in ``domain_values``.

        An alias domain's effective settings are its own overrides, else its
        target's overrides, else the global values, else the defaults.
        """
        global_settings = Settings.resolve(global_values)
        links = {
            alias: target
            for alias, target in (aliases or {}).items()
            if alias in domain_values and target in domain_values and target != alias
        }
        domains = {}
        for name, own in domain_values.items():
            inherited = domain_values[links[name]] if name in links else {}
            domains[name] = (
                Settings.resolve(global_values, own, inherited)
                if own or inherited
                else global_settings
            )
        by_login: dict[str, set[str]] = {}
        for login, target in grants:
            by_login.setdefault(login, set()).add(_normalised_target(target))
        granted = {k: frozenset(v) for k, v in by_login.items()}
        return cls(
            global_settings=global_settings,
            domains=MappingProxyType(domains),
            networks=networks,
            grants=MappingProxyType(granted),
            serial=serial,
            global_values=MappingProxyType(dict(global_values)),
            header_checks=any(s.require_header_from_match for s in domains.values()),
            aliases=MappingProxyType(links),
            owned_addresses=_owned_addresses(granted),
        )

    @classmethod
    def unavailable(cls, last_good: Snapshot | None) -> Snapshot:
        """A snapshot that only says "tempfail", keeping the last known replies and dry-run."""
        base = last_good.global_settings if last_good else Settings.resolve({})
        return cls(
            base,
            MappingProxyType({}),
            NetworkSet.of(()),
            MappingProxyType({}),
            serial=last_good.serial if last_good else 0,
            trusted=False,
        )

    def settings_for(self, domain: str) -> Settings | None:
        """The effective settings of a local domain; None when the domain is not local."""
        return self.domains.get(domain)
