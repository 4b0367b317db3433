"""The settings of per-login limits (stolen logins), by the login's domain. Pure.

See docs/policy.md#stolen-logins for what each counts and why each default.
"""

from __future__ import annotations

from smtpauth_milter.core.limits import (
    canonical_action,
    canonical_duration,
    canonical_limit,
    canonical_limit_reply,
    canonical_notify_address,
    canonical_relay,
)
from smtpauth_milter.core.settingdef import Scope, SettingDef
from smtpauth_milter.core.values import canonical_reply

LOGIN_LIMIT_SETTINGS = (
    SettingDef(
        "login-max-messages",
        Scope.DOMAIN,
        "200/1h",
        canonical_limit,
        "Messages (with an accepted recipient) one login may send per window, or off.",
    ),
    SettingDef(
        "login-max-recipients",
        Scope.DOMAIN,
        "1000/1h",
        canonical_limit,
        "Accepted recipients one login may have per window, or off.",
    ),
    SettingDef(
        "login-max-client-ips",
        Scope.DOMAIN,
        "20/1h",
        canonical_limit,
        "Distinct client addresses (IPv6 by /64) one login may use per window, or off.",
    ),
    SettingDef(
        "login-max-mismatches",
        Scope.DOMAIN,
        "20/1h",
        canonical_limit,
        "Recipients refused per window because the login does not own the sender, or off.",
    ),
    SettingDef(
        "login-limit-action",
        Scope.DOMAIN,
        "tempfail",
        canonical_action,
        "Over a limit: tempfail (until the window allows) or freeze (until unfrozen).",
    ),
    SettingDef(
        "login-limit-reply",
        Scope.DOMAIN,
        "452 4.7.1 Too much mail from this login, try again later",
        canonical_limit_reply,
        "Reply (4xx) to a login over a limit, action tempfail.",
    ),
    SettingDef(
        "login-frozen-reply",
        Scope.DOMAIN,
        "550 5.7.1 Sending is suspended for this login: contact your mail administrator",
        canonical_reply,
        "Reply to every recipient of a frozen login.",
    ),
    SettingDef(
        "login-freeze-duration",
        Scope.DOMAIN,
        "off",
        canonical_duration,
        "How long a freeze lasts (90m, 1d); off: until `login unfreeze`.",
    ),
    SettingDef(
        "notify-address",
        Scope.GLOBAL,
        "",
        canonical_notify_address,
        "Where a milter mails one plain-text report per login it freezes; empty: none.",
    ),
    SettingDef(
        "notify-relay",
        Scope.GLOBAL,
        "127.0.0.1:25",
        canonical_relay,
        "The SMTP server (IP:PORT) those reports are sent through, e.g. the local MTA.",
    ),
)
