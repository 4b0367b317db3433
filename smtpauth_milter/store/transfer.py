"""Export the whole store as JSON, and import it back in one transaction.

Import replaces the store's content with the file's, so importing the same
file twice changes nothing the second time, and export -> import round-trips.
``aliases`` (alias domain -> target) and ``exempt_logins`` (login -> comment)
are optional: exports older than them import unchanged (with none).
:func:`parse` reads an export's text strictly: a duplicate key, a number too
long to be a value, ``NaN``/``Infinity`` or nesting deeper than Python can
parse is a :class:`SettingError`, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.store import audit, editing, loginedit
from smtpauth_milter.store.models import (
    Domain,
    DomainSetting,
    GlobalSetting,
    LoginExempt,
    SendAsGrant,
    TrustedNetwork,
)

FORMAT = "smtpauth-milter/1"
MAX_DIGITS = 64  # no value is a longer number; Python refuses ints over 4,300 digits
MAX_CHARS, MAX_TEXT = 64 << 20, "64 Mi characters"  # ~700,000 grants


def _unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise SettingError(f"the key {key!r} appears twice in one object")
        data[key] = value
    return data


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise SettingError(f"a number of {len(text.lstrip('-'))} digits (at most {MAX_DIGITS})")
    return int(text)


def _constant(name: str) -> Any:
    raise SettingError(f"{name} is not a JSON value")


def parse(text: str, source: str = "-") -> Any:
    """The data of an export's text, read strictly (see the module's docstring).

    ``source`` names the file in the error, escaped as every printed name is.
    """
    where = f"import: {logfmt.printable(source)}"
    try:
        return json.loads(
            text, object_pairs_hook=_unique, parse_int=_integer, parse_constant=_constant
        )
    except SettingError as exc:
        raise SettingError(f"{where}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise SettingError(f"{where} is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise SettingError(f"{where} nests deeper than any export") from exc


def export_store(session: Session) -> dict[str, Any]:
    domains: dict[str, dict[str, str]] = {name: {} for name in editing.list_domains(session)}
    rows = session.execute(
        select(Domain.name, DomainSetting.key, DomainSetting.value)
        .join(DomainSetting.domain)
        .order_by(Domain.name, DomainSetting.key)
    )
    for name, key, value in rows:
        domains[name][key] = value
    return {
        "format": FORMAT,
        "settings": dict(sorted(editing.global_values(session).items())),
        "domains": domains,
        "aliases": editing.domain_aliases(session),
        "networks": [{"cidr": c, "comment": m} for c, m in editing.list_networks(session)],
        "grants": [{"login": lg, "target": t} for lg, t in editing.list_grants(session)],
        "exempt_logins": dict(sorted(loginedit.exempt_logins(session).items())),
    }


def _require(data: Mapping[str, Any], key: str, kind: type) -> Any:
    value = data.get(key, kind())
    if not isinstance(value, kind):
        raise SettingError(f"import: {key!r} must be a JSON {kind.__name__}")
    return value


def _strings(item: Any, keys: tuple[str, ...], where: str) -> list[str]:
    if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in keys):
        raise SettingError(f"import: each entry of {where!r} needs string fields {', '.join(keys)}")
    unknown = sorted(set(item) - set(keys))
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise SettingError(f"import: unknown keys in an entry of {where!r}: {names}")
    return [item[k] for k in keys]


def check_source(source: str) -> None:
    """Refuse a file name the audit trail cannot record: one that is not UTF-8 (Python
    holds its undecodable bytes as lone surrogates, which no database stores)."""
    try:
        source.encode("utf-8")
    except UnicodeEncodeError as exc:
        shown = logfmt.printable(source)
        raise SettingError(f"import: the file name {shown} is not UTF-8: rename it") from exc


def import_store(session: Session, data: Any, source: str = "-") -> int:
    """Replace the store's content with ``data``; any bad value aborts the whole import.

    The audit trail is kept: the import adds one entry per change it made and a
    summary entry naming ``source``. Returns the number of changes.
    """
    check_source(source)
    before = export_store(session)
    with audit.muted(session):
        _replace(session, data)
    session.flush()
    return audit.record_import(session, before, export_store(session), source)


def _replace(session: Session, data: Any) -> None:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise SettingError(f"import: not a smtpauth-milter export (expected format {FORMAT!r})")
    known = {"format", "settings", "domains", "aliases", "networks", "grants", "exempt_logins"}
    unknown = set(data) - known
    if unknown:
        raise SettingError(f"import: unknown top-level keys: {', '.join(sorted(unknown))}")
    for model in (DomainSetting, Domain, GlobalSetting, TrustedNetwork, SendAsGrant, LoginExempt):
        session.execute(delete(model))
    session.flush()
    for key, value in _require(data, "settings", dict).items():
        editing.set_setting(session, key, _text(value, key))
    domains = _require(data, "domains", dict)
    editing.add_domains(session, domains)
    session.flush()
    for name, overrides in domains.items():
        if not isinstance(overrides, dict):
            raise SettingError(f"import: domain {name!r} must map to an object of settings")
        for key, value in overrides.items():
            editing.set_setting(session, key, _text(value, key), domain=name)
    for alias, target in _require(data, "aliases", dict).items():
        if not isinstance(target, str) or alias not in domains:
            raise SettingError(
                f"import: alias {alias!r} must be one of the domains and map to a domain name"
            )
        editing.add_alias_domains(session, [alias], target)
    for item in _require(data, "networks", list):
        if isinstance(item, dict):
            item = {"comment": "", **item}
        editing.add_network(session, *_strings(item, ("cidr", "comment"), "networks"))
    for item in _require(data, "grants", list):
        editing.allow(session, *_strings(item, ("login", "target"), "grants"))
    for login, comment in _require(data, "exempt_logins", dict).items():
        loginedit.exempt(session, login, _text(comment, login))


def _text(value: Any, key: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise SettingError(f"import: the value of {key!r} must be a string")
    return str(value)
