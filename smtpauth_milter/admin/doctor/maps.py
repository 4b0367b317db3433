"""Doctor on ``sender-login-maps``: does each map answer, and does it cover Postfix's own maps?

:func:`map_facts` asks each map one probe key (at the edge); :func:`check_maps`
is pure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from smtpauth_milter.admin.doctor.checks import Finding, error, ok, warning
from smtpauth_milter.core.ownermaps import parse_map_list
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.lookups.keys import Probe
from smtpauth_milter.lookups.ownership import find_owners, make_source

PROBE_KEY = "postmaster@{domain}"
_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class MapFact:
    map: str
    key: str
    error: str | None  # None: the map answered (found or not)


def map_facts(settings: Settings, domains: Sequence[str]) -> list[MapFact]:
    """Ask every configured map for postmaster@<first local domain>, one map at a time,
    as the milter would (postfix-config-dir, sender-login-maps-timeout)."""
    key = PROBE_KEY.format(domain=domains[0] if domains else "example.invalid")
    facts = []
    for spec in parse_map_list(settings.sender_login_maps):
        source = make_source(spec, settings)
        try:
            find_owners([source], [Probe(key, False)], settings.sender_login_maps_timeout)
            problem = None
        except Exception as exc:  # a map's trouble is a finding, never a crash
            problem = str(exc)
        finally:
            dispose = getattr(source, "dispose", None)
            if dispose is not None:
                dispose()
        facts.append(MapFact(spec.text, key, problem))
    return facts


def different_config_dirs(asked: str, milter: str) -> Finding:
    return warning(
        f"doctor reads Postfix's configuration in {asked}, but the milter's postmap reads "
        f"{milter} (postfix-config-dir)",
        f"smtpauth-milter settings set postfix-config-dir {asked} (or run doctor without "
        "--postfix-config)",
    )


def _table_name(entry: str) -> str:
    return entry.removeprefix("proxy:")


def check_maps(facts: Sequence[MapFact], ours: str, postfix_maps: str) -> list[Finding]:
    findings = [
        error(f"sender-login-maps: {f.map} does not answer ({f.error})", "fix the map or its file")
        if f.error is not None
        else ok(f"sender-login-maps: {f.map} answers (asked for {f.key})")
        for f in facts
    ]
    configured = {spec.text for spec in parse_map_list(ours)} if ours else set()
    missing = [
        entry
        for entry in _SPLIT.split(postfix_maps.strip())
        if entry and _table_name(entry) not in configured
    ]
    if missing:
        findings.append(
            warning(
                "Postfix's smtpd_sender_login_maps names maps that sender-login-maps does not: "
                + ", ".join(missing),
                "smtpauth-milter settings set sender-login-maps '"
                + ", ".join([*sorted(configured), *(_table_name(m) for m in missing)])
                + "' (or say why they differ)",
            )
        )
    return findings
