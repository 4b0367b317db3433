"""Settings: their definitions, validation, and the effective values per domain. Pure.

Values are stored as canonical text.  The effective value of a domain-scoped
setting for a sender domain comes from the domain's override, else the global
value, else the built-in default; :func:`effective` says which one won.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
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
from smtpauth_milter.core.replies import Reply

_TRUE = frozenset({"on", "true", "yes", "1"})
_FALSE = frozenset({"off", "false", "no", "0"})


class Scope(StrEnum):
    GLOBAL = "global"
    DOMAIN = "domain"


class Source(StrEnum):
    DOMAIN = "domain"
    GLOBAL = "global"
    DEFAULT = "default"


def _canonical_bool(text: str) -> str:
    word = text.strip().lower()
    if word in _TRUE:
        return "on"
    if word in _FALSE:
        return "off"
    raise SettingError(f"bad boolean {text!r}: use on/off, true/false, yes/no or 1/0")


def _canonical_list(text: str) -> str:
    items: list[str] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if any(ch in item for ch in '@<>" \t') or not item.isprintable():
            raise SettingError(f"bad list item {raw.strip()!r}: expected a plain local part")
        if item not in items:
            items.append(item)
    return ", ".join(items)


def _canonical_reply(text: str) -> str:
    return str(Reply.parse(text))


def _canonical_delimiter(text: str) -> str:
    chars = "".join(dict.fromkeys(text.strip()))
    if any(ch in '@<>" \t,' or not ch.isprintable() for ch in chars) or len(chars) > 8:
        raise SettingError(f"bad recipient delimiter {text!r}: up to 8 characters, no '@' or space")
    return chars


@dataclass(frozen=True, slots=True)
class SettingDef:
    key: str
    scope: Scope
    default: str
    canonical: Callable[[str], str]
    meaning: str


SETTINGS: Mapping[str, SettingDef] = MappingProxyType(
    {
        d.key: d
        for d in (
            SettingDef(
                "require-auth-local",
                Scope.DOMAIN,
                "off",
                _canonical_bool,
                "Authentication is always required when mail is from a local sender.",
            ),
            SettingDef(
                "exempt-local-recipients",
                Scope.DOMAIN,
                "off",
                _canonical_bool,
                "...unless the recipient is local (local -> local mail needs no login).",
            ),
            SettingDef(
                "require-sender-match",
                Scope.DOMAIN,
                "off",
                _canonical_bool,
                "An authenticated session may only use a local sender its login owns.",
            ),
            SettingDef(
                "require-auth-role",
                Scope.DOMAIN,
                "on",
                _canonical_bool,
                "A role sender always needs a login.",
            ),
            SettingDef(
                "role-senders",
                Scope.DOMAIN,
                "postmaster, abuse, webmaster",
                _canonical_list,
                "The local parts treated as role senders.",
            ),
            SettingDef(
                "bare-login-match",
                Scope.DOMAIN,
                "off",
                _canonical_bool,
                "A login without '@' owns login@<this domain>.",
            ),
            SettingDef(
                "dry-run",
                Scope.DOMAIN,
                "off",
                _canonical_bool,
                "Log what would be refused, refuse nothing.",
            ),
            SettingDef(
                "auth-required-reply",
                Scope.DOMAIN,
                "530 5.7.0 Authentication required",
                _canonical_reply,
                "Reply when a login was required.",
            ),
            SettingDef(
                "sender-mismatch-reply",
                Scope.DOMAIN,
                "553 5.7.1 Sender address rejected: not owned by authenticated user",
                _canonical_reply,
                "Reply when the login does not own the sender.",
            ),
            SettingDef(
                "require-header-from-match",
                Scope.DOMAIN,
                "off",
                _canonical_bool,
                "A local From: header address is held to the envelope sender's rules "
                "(login required, login must own From: or Sender:), decided at end of headers.",
            ),
            SettingDef(
                "header-from-mismatch-reply",
                Scope.DOMAIN,
                "550 5.7.1 From header not owned by authenticated user",
                _canonical_reply,
                "Reply when the login owns neither the From: nor the Sender: address, "
                "or the From: header is missing, unparseable or has several addresses.",
            ),
            SettingDef(
                "bad-sender-reply",
                Scope.GLOBAL,
                "553 5.1.7 Bad sender address syntax",
                _canonical_reply,
                "Reply for a MAIL FROM that cannot be parsed.",
            ),
            SettingDef(
                "tempfail-reply",
                Scope.GLOBAL,
                "451 4.3.0 Temporary policy failure, try again later",
                _canonical_reply,
                "Reply when no trustworthy settings are available.",
            ),
            SettingDef(
                "recipient-delimiter",
                Scope.GLOBAL,
                "+",
                _canonical_delimiter,
                "Characters that start a sub-address; empty turns sub-addresses off.",
            ),
        )
    }
)


def setting(key: str, *, domain: bool = False) -> SettingDef:
    """The definition of ``key``; refuses unknown keys and global-only keys per domain."""
    definition = SETTINGS.get(key)
    if definition is None:
        raise SettingError(f"unknown setting {key!r}; known: {', '.join(SETTINGS)}")
    if domain and definition.scope is Scope.GLOBAL:
        raise SettingError(f"setting {key!r} is global only and cannot be set per domain")
    return definition


def canonical_value(key: str, value: str, *, domain: bool = False) -> str:
    """Validate ``value`` for ``key`` and return the text to store."""
    return setting(key, domain=domain).canonical(value)


def effective(
    key: str, global_values: Mapping[str, str], overrides: Mapping[str, str] | None = None
) -> tuple[str, Source]:
    """The value in force for ``key`` and where it comes from."""
    if overrides is not None and key in overrides and SETTINGS[key].scope is Scope.DOMAIN:
        return overrides[key], Source.DOMAIN
    if key in global_values:
        return global_values[key], Source.GLOBAL
    return SETTINGS[key].default, Source.DEFAULT


@dataclass(frozen=True, slots=True)
class Settings:
    """Typed effective settings for one sender domain (or the global ones)."""

    require_auth_local: bool
    exempt_local_recipients: bool
    require_sender_match: bool
    require_auth_role: bool
    role_senders: frozenset[str]
    bare_login_match: bool
    dry_run: bool
    auth_required_reply: Reply
    sender_mismatch_reply: Reply
    require_header_from_match: bool
    header_from_mismatch_reply: Reply
    bad_sender_reply: Reply
    tempfail_reply: Reply
    recipient_delimiter: str

    @classmethod
    def resolve(
        cls, global_values: Mapping[str, str], overrides: Mapping[str, str] | None = None
    ) -> Settings:
        def value(key: str) -> str:
            return SETTINGS[key].canonical(effective(key, global_values, overrides)[0])

        def flag(key: str) -> bool:
            return value(key) == "on"

        return cls(
            require_auth_local=flag("require-auth-local"),
            exempt_local_recipients=flag("exempt-local-recipients"),
            require_sender_match=flag("require-sender-match"),
            require_auth_role=flag("require-auth-role"),
            role_senders=frozenset(x for x in value("role-senders").split(", ") if x),
            bare_login_match=flag("bare-login-match"),
            dry_run=flag("dry-run"),
            auth_required_reply=Reply.parse(value("auth-required-reply")),
            sender_mismatch_reply=Reply.parse(value("sender-mismatch-reply")),
            require_header_from_match=flag("require-header-from-match"),
            header_from_mismatch_reply=Reply.parse(value("header-from-mismatch-reply")),
            bad_sender_reply=Reply.parse(value("bad-sender-reply")),
            tempfail_reply=Reply.parse(value("tempfail-reply")),
            recipient_delimiter=value("recipient-delimiter"),
        )

    def as_values(self) -> dict[str, str]:
        """The settings as canonical setting-key -> text, as ``settings show`` prints them."""
        values: dict[str, str] = {}
        for key in SETTINGS:
            value = getattr(self, key.replace("-", "_"))
            if isinstance(value, bool):
                values[key] = "on" if value else "off"
            elif isinstance(value, frozenset):
                values[key] = ", ".join(sorted(value))
            else:
                values[key] = str(value)
        return values


def grant_login(login: str) -> str:
    """The key a login is granted under: trimmed and case-folded."""
    key = login.strip().lower()
    if not key or not key.isprintable() or any(ch.isspace() for ch in key):
        raise SettingError(f"bad login {login!r}")
    return key


def grant_target(target: str) -> str:
    """An exact address (normalised, no sub-address) or ``@domain``."""
    text = target.strip()
    try:
        if text.startswith("@"):
            return "@" + domain_name(text[1:])
        address = parse_address(text)
    except AddressError as exc:
        raise SettingError(f"bad address or @domain {target!r}: {exc}") from exc
    return normalise(address, "")


def _normalised_target(target: str, delimiter: str) -> str:
    """A stored grant target (already lower-case) with its sub-address cut."""
    if target.startswith("@"):
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

    @classmethod
    def build(
        cls,
        global_values: Mapping[str, str],
        domain_values: Mapping[str, Mapping[str, str]],
        networks: NetworkSet,
        grants: Iterable[tuple[str, str]],
        serial: int = 0,
    ) -> Snapshot:
        global_settings = Settings.resolve(global_values)
        domains = {
            name: Settings.resolve(global_values, overrides) if overrides else global_settings
            for name, overrides in domain_values.items()
        }
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
