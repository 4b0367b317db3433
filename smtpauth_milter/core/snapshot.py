"""The snapshot: every setting, domain, network and grant a decision needs, immutable.

Loaded at once from the store (or built by tests) and swapped in whole, so a
decision never sees half of a change.  Grants are normalised here, once, and
an alias domain's effective settings are resolved here, once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from smtpauth_milter.core.addresses import (
    AddressError,
    domain_name,
    normalise,
    normalise_local,
    parse_address,
    render_local,
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
    """An exact address (normalised, no sub-address), ``@domain`` or ``*`` (anyone)."""
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


def _normalised_target(target: str, delimiter: str) -> str:
    """A stored grant target (already lower-case) with its sub-address cut."""
    if target.startswith("@") or target == ANYONE:
        return target
    local, _, domain = target.rpartition("@")
    if target.isascii() and '"' not in target and " " not in target:
        return f"{render_local(normalise_local(local, delimiter))}@{domain}"  # no re-parse
    return normalise(parse_address(target), delimiter)


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
        delimiter = global_settings.recipient_delimiter
        for login, target in grants:
            by_login.setdefault(login, set()).add(_normalised_target(target, delimiter))
        return cls(
            global_settings=global_settings,
            domains=MappingProxyType(domains),
            networks=networks,
            grants=MappingProxyType({k: frozenset(v) for k, v in by_login.items()}),
            serial=serial,
            global_values=MappingProxyType(dict(global_values)),
            header_checks=any(s.require_header_from_match for s in domains.values()),
            aliases=MappingProxyType(links),
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
