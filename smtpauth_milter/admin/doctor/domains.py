"""Doctor's domain check: the domains Postfix receives mail for against our local domains."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from smtpauth_milter.admin.doctor.checks import DOMAIN_PARAMS, Finding, Severity, ok, warning
from smtpauth_milter.core.addresses import AddressError, domain_name

_SPLIT = re.compile(r"[\s,]+")


def domain_tokens(value: str) -> tuple[list[str], list[str]]:
    """A Postfix domain list: (literal names, ``type:table`` or ``/file`` lookups)."""
    names: list[str] = []
    lookups: list[str] = []
    for token in _SPLIT.split(value.strip()):
        if not token:
            continue
        if token.startswith("/") or re.match(r"^[a-z0-9_-]+:", token):
            lookups.append(token)
        else:
            names.append(token)
    return names, lookups


def _normal(name: str) -> str | None:
    try:
        return domain_name(name.lstrip("."))
    except AddressError:
        return None


def postfix_domains(params: Mapping[str, str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """{domain: parameter} Postfix receives for, and (lookup table, parameter) pairs."""
    domains: dict[str, str] = {}
    lookups: list[tuple[str, str]] = []
    for param in DOMAIN_PARAMS:
        names, tables = domain_tokens(params.get(param, ""))
        for name in names:
            normal = _normal(name)
            if normal and normal != "localhost" and not normal.startswith("localhost."):
                domains.setdefault(normal, param)
        lookups.extend((table, param) for table in tables)
    return domains, lookups


def check_domains(
    params: Mapping[str, str],
    milter_domains: Iterable[str],
    in_table: Callable[[str, str], bool | None],
) -> list[Finding]:
    """Both directions; ``in_table(domain, table)``: found, not found, or None (unknown)."""
    received, lookups = postfix_domains(params)
    local = set(milter_domains)
    findings: list[Finding] = []
    for name, param in sorted(received.items()):
        if name not in local:
            findings.append(
                warning(
                    f"Postfix receives mail for {name} ({param}) but the milter does not "
                    f"treat it as local: mail sent as @{name} is not checked",
                    f"smtpauth-milter domain add {name} (if users send as @{name})",
                )
            )
    for table, param in lookups:
        findings.append(
            ok(
                f"{param} uses {table}: doctor cannot list its domains; "
                "check each is a milter local domain (smtpauth-milter domain list)"
            )
        )
    for name in sorted(local - set(received)):
        hits = [in_table(name, table) for table, _ in lookups]
        if any(hits):
            continue
        unknown = " (some lookup tables could not be queried)" if None in hits else ""
        findings.append(
            warning(
                f"the milter treats {name} as local but Postfix does not receive mail for it"
                f"{unknown}",
                f"add {name} to mydestination or virtual_mailbox_domains, or "
                f"smtpauth-milter domain remove {name}",
            )
        )
    if not findings:
        findings.append(ok("Postfix and the milter agree on the local domains"))
    elif all(f.severity is Severity.OK for f in findings):
        findings.append(ok("every domain listed in Postfix is local in the milter"))
    return findings
