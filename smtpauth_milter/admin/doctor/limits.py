"""Doctor's check of per-login limits: off where logins must own their senders."""

from __future__ import annotations

from smtpauth_milter.admin.doctor.checks import Finding, warning
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.core.settings import SETTINGS, Settings
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.store.engine import Store

LIMITS = (
    "login-max-messages",
    "login-max-recipients",
    "login-max-client-ips",
    "login-max-mismatches",
)


def _off(settings: Settings) -> list[str]:
    return [key for key in LIMITS if not getattr(settings, key.replace("-", "_")).on]


def check_login_limits(snapshot: Snapshot) -> list[Finding]:
    """A warning for each scope (global, a domain's override) where ``require-sender-match``
    is on and a per-login limit is off: a stolen password then sends unchecked
    (docs/policy.md#stolen-logins)."""
    scopes: list[tuple[str | None, Settings]] = [(None, snapshot.global_settings)]
    scopes += sorted(snapshot.domains.items())
    findings = []
    for domain, settings in scopes:
        off = _off(settings)
        if domain is not None and settings is snapshot.global_settings:
            continue  # no override: said once, globally
        if not settings.require_sender_match or not off:
            continue
        where = f"for {domain}" if domain else "globally"
        scope = f"--domain {domain} " if domain else ""
        findings.append(
            warning(
                f"{', '.join(off)} {'is' if len(off) == 1 else 'are'} off {where} while "
                "require-sender-match is on: a stolen password could send without limit",
                f"smtpauth-milter settings unset {scope}{off[0]} (the default: "
                f"{SETTINGS[off[0]].default})",
            )
        )
    return findings


def login_limit_findings(db: str) -> list[Finding]:
    """The check on the store's current snapshot; nothing when the store cannot be read
    (the store check says so already)."""
    store = Store(db)
    try:
        snapshot = store.load_snapshot()
    except SmtpauthError:
        return []
    finally:
        store.dispose()
    return check_login_limits(snapshot)
