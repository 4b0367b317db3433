"""Doctor's domain check: the domains Postfix receives mail for against our local domains."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from smtpauth_milter.admin.doctor.checks import Finding, Severity, ok, warning
from smtpauth_milter.admin.postfix import PostfixDomains


def check_domains(
    postfix: PostfixDomains,
    milter_domains: Iterable[str],
    in_table: Callable[[str, str], bool | None],
) -> list[Finding]:
    """Both directions; ``in_table(domain, table)``: found, not found, or None (unknown)."""
    received, lookups = postfix.domains, postfix.lookups
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
