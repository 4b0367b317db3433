"""Settings: their definitions, validation, and the effective values per domain. Pure.

Values are stored as canonical text.  The effective value of a domain-scoped
setting comes from the domain's override, else (an alias domain) its target's,
else the global value, else the built-in default; :func:`effective` says which.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.limits import Duration, Limit, LimitAction
from smtpauth_milter.core.limitsettings import LOGIN_LIMIT_SETTINGS
from smtpauth_milter.core.ownermaps import (
    canonical_config_dir,
    canonical_domains,
    canonical_map_list,
    canonical_map_timeout,
    canonical_ttl,
)
from smtpauth_milter.core.replies import Reply
from smtpauth_milter.core.settingdef import Scope, SettingDef
from smtpauth_milter.core.settingdef import Source as Source
from smtpauth_milter.core.spf import canonical_resolver, canonical_timeout
from smtpauth_milter.core.values import (
    canonical_bool,
    canonical_delimiter,
    canonical_list,
    canonical_reply,
    canonical_temporary_reply,
)

SETTINGS: Mapping[str, SettingDef] = MappingProxyType(
    {
        d.key: d
        for d in (
            SettingDef(
                "require-auth-local",
                Scope.DOMAIN,
                "off",
                canonical_bool,
                "Authentication is always required when mail is from a local sender.",
            ),
            SettingDef(
                "exempt-local-recipients",
                Scope.DOMAIN,
                "off",
                canonical_bool,
                "...unless the recipient is local (local -> local mail needs no login).",
            ),
            SettingDef(
                "require-sender-match",
                Scope.DOMAIN,
                "off",
                canonical_bool,
                "An authenticated session may only use a local sender its login owns.",
            ),
            SettingDef(
                "require-auth-role",
                Scope.DOMAIN,
                "on",
                canonical_bool,
                "A role sender always needs a login.",
            ),
            SettingDef(
                "role-senders",
                Scope.DOMAIN,
                "postmaster, abuse, webmaster",
                canonical_list,
                "The local parts treated as role senders.",
            ),
            SettingDef(
                "spf-exempt",
                Scope.DOMAIN,
                "off",
                canonical_bool,
                "...unless the sender domain's SPF record authorises the client (SPF pass); "
                "a DNS failure tempfails.",
            ),
            SettingDef(
                "spf-exempt-role",
                Scope.DOMAIN,
                "off",
                canonical_bool,
                "A role sender needs no login either when SPF passes.",
            ),
            SettingDef(
                "bare-login-match",
                Scope.DOMAIN,
                "off",
                canonical_bool,
                "A login without '@' owns login@<this domain>.",
            ),
            SettingDef(
                "dry-run",
                Scope.DOMAIN,
                "off",
                canonical_bool,
                "Log what would be refused, refuse nothing.",
            ),
            SettingDef(
                "auth-required-reply",
                Scope.DOMAIN,
                "530 5.7.0 Authentication required",
                canonical_reply,
                "Reply when a login was required.",
            ),
            SettingDef(
                "sender-mismatch-reply",
                Scope.DOMAIN,
                "553 5.7.1 Sender address rejected: not owned by authenticated user",
                canonical_reply,
                "Reply when the login does not own the sender.",
            ),
            SettingDef(
                "require-header-from-match",
                Scope.DOMAIN,
                "off",
                canonical_bool,
                "A local From: header address is held to the envelope sender's rules "
                "(login required, login must own From: or Sender:), decided at end of headers.",
            ),
            SettingDef(
                "header-from-mismatch-reply",
                Scope.DOMAIN,
                "550 5.7.1 From header not owned by authenticated user",
                canonical_reply,
                "Reply when the login owns neither the From: nor the Sender: address, "
                "or the From: header is missing, unparseable or has several addresses.",
            ),
            SettingDef(
                "bad-sender-reply",
                Scope.GLOBAL,
                "553 5.1.7 Bad sender address syntax",
                canonical_reply,
                "Reply for a MAIL FROM that cannot be parsed.",
            ),
            SettingDef(
                "tempfail-reply",
                Scope.GLOBAL,
                "451 4.3.0 Temporary policy failure, try again later",
                canonical_temporary_reply,
                "Reply when no trustworthy settings are available.",
            ),
            SettingDef(
                "sender-login-maps",
                Scope.GLOBAL,
                "",
                canonical_map_list,
                "Maps that say which logins own a sender (TYPE:/file, in order; the first "
                "answer wins), asked when the built-in forms do not prove ownership.",
            ),
            SettingDef(
                "sender-login-maps-ttl",
                Scope.GLOBAL,
                "60",
                canonical_ttl,
                "Seconds an answer of sender-login-maps (owners or none) is remembered.",
            ),
            SettingDef(
                "sender-login-maps-local-domains",
                Scope.GLOBAL,
                "",
                canonical_domains,
                "Domains whose senders are also looked up by bare local part, as Postfix "
                "does for $myorigin and $mydestination.",
            ),
            SettingDef(
                "sender-login-maps-timeout",
                Scope.GLOBAL,
                "3",
                canonical_map_timeout,
                "Seconds one lookup in sender-login-maps may take in all (every map, every "
                "key); longer tempfails.",
            ),
            SettingDef(
                "postfix-config-dir",
                Scope.GLOBAL,
                "",
                canonical_config_dir,
                "The Postfix configuration directory whose main.cf postmap reads for "
                "sender-login-maps; empty is Postfix's own default (/etc/postfix).",
            ),
            SettingDef(
                "recipient-delimiter",
                Scope.GLOBAL,
                "+",
                canonical_delimiter,
                "Characters that start a sub-address; empty turns sub-addresses off.",
            ),
            SettingDef(
                "dns-resolver",
                Scope.GLOBAL,
                "",
                canonical_resolver,
                "The DNS server for SPF lookups: IP[:PORT] or [IPV6]:PORT; "
                "empty uses the system's resolvers.",
            ),
            SettingDef(
                "spf-timeout",
                Scope.GLOBAL,
                "3",
                canonical_timeout,
                "Seconds one SPF check may take in all; longer tempfails.",
            ),
            *LOGIN_LIMIT_SETTINGS,
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
    key: str,
    global_values: Mapping[str, str],
    overrides: Mapping[str, str] | None = None,
    inherited: Mapping[str, str] | None = None,
) -> tuple[str, Source]:
    """The value in force for ``key`` and its source; ``inherited``: an alias's target's."""
    if SETTINGS[key].scope is Scope.DOMAIN:
        for values, source in ((overrides, Source.DOMAIN), (inherited, Source.TARGET)):
            if values is not None and key in values:
                return values[key], source
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
    spf_exempt: bool
    spf_exempt_role: bool
    bare_login_match: bool
    dry_run: bool
    auth_required_reply: Reply
    sender_mismatch_reply: Reply
    require_header_from_match: bool
    header_from_mismatch_reply: Reply
    bad_sender_reply: Reply
    tempfail_reply: Reply
    recipient_delimiter: str
    sender_login_maps: str
    sender_login_maps_ttl: int
    sender_login_maps_local_domains: frozenset[str]
    sender_login_maps_timeout: float
    postfix_config_dir: str
    dns_resolver: str
    spf_timeout: float
    login_max_messages: Limit
    login_max_recipients: Limit
    login_max_client_ips: Limit
    login_max_mismatches: Limit
    login_limit_action: LimitAction
    login_limit_reply: Reply
    login_frozen_reply: Reply
    login_freeze_duration: Duration
    notify_address: str
    notify_relay: str

    @classmethod
    def resolve(
        cls,
        global_values: Mapping[str, str],
        overrides: Mapping[str, str] | None = None,
        inherited: Mapping[str, str] | None = None,
    ) -> Settings:
        def value(key: str) -> str:
            return SETTINGS[key].canonical(effective(key, global_values, overrides, inherited)[0])

        def flag(key: str) -> bool:
            return value(key) == "on"

        return cls(
            require_auth_local=flag("require-auth-local"),
            exempt_local_recipients=flag("exempt-local-recipients"),
            require_sender_match=flag("require-sender-match"),
            require_auth_role=flag("require-auth-role"),
            role_senders=frozenset(x for x in value("role-senders").split(", ") if x),
            spf_exempt=flag("spf-exempt"),
            spf_exempt_role=flag("spf-exempt-role"),
            bare_login_match=flag("bare-login-match"),
            dry_run=flag("dry-run"),
            auth_required_reply=Reply.parse(value("auth-required-reply")),
            sender_mismatch_reply=Reply.parse(value("sender-mismatch-reply")),
            require_header_from_match=flag("require-header-from-match"),
            header_from_mismatch_reply=Reply.parse(value("header-from-mismatch-reply")),
            bad_sender_reply=Reply.parse(value("bad-sender-reply")),
            tempfail_reply=Reply.parse(value("tempfail-reply")),
            recipient_delimiter=value("recipient-delimiter"),
            sender_login_maps=value("sender-login-maps"),
            sender_login_maps_ttl=int(value("sender-login-maps-ttl")),
            sender_login_maps_local_domains=frozenset(
                x for x in value("sender-login-maps-local-domains").split(", ") if x
            ),
            sender_login_maps_timeout=float(value("sender-login-maps-timeout")),
            postfix_config_dir=value("postfix-config-dir"),
            dns_resolver=value("dns-resolver"),
            spf_timeout=float(value("spf-timeout")),
            login_max_messages=Limit.parse(value("login-max-messages")),
            login_max_recipients=Limit.parse(value("login-max-recipients")),
            login_max_client_ips=Limit.parse(value("login-max-client-ips")),
            login_max_mismatches=Limit.parse(value("login-max-mismatches")),
            login_limit_action=LimitAction(value("login-limit-action")),
            login_limit_reply=Reply.parse(value("login-limit-reply")),
            login_frozen_reply=Reply.parse(value("login-frozen-reply")),
            login_freeze_duration=Duration.parse(value("login-freeze-duration")),
            notify_address=value("notify-address"),
            notify_relay=value("notify-relay"),
        )

    def as_values(self) -> dict[str, str]:
        """The settings as canonical setting-key -> text, as ``settings show`` prints them."""
        values: dict[str, str] = {}
        for key in SETTINGS:
            value = getattr(self, key.replace("-", "_"))
            if isinstance(value, bool):
                values[key] = "on" if value else "off"
            elif isinstance(value, float):
                values[key] = f"{value:g}"
            elif isinstance(value, frozenset):
                values[key] = ", ".join(sorted(value))
            else:
                values[key] = str(value)
        return values
