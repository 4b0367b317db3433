"""The edits the CLI makes, each on an open session inside one transaction.

Every value is validated before anything is written; a bad one raises a
:class:`SettingError` and the caller's transaction rolls back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session, aliased

from smtpauth_milter.core.addresses import AddressError, domain_name
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.networks import parse_cidr
from smtpauth_milter.core.settings import SETTINGS, Source, canonical_value, effective, setting
from smtpauth_milter.core.snapshot import grant_login, grant_target
from smtpauth_milter.store import audit
from smtpauth_milter.store.models import (
    Domain,
    DomainSetting,
    GlobalSetting,
    SendAsGrant,
    TrustedNetwork,
)


def local_domain(name: str) -> str:
    try:
        return domain_name(name)
    except AddressError as exc:
        raise SettingError(str(exc)) from exc


def _domain(session: Session, name: str) -> Domain:
    found = session.scalar(select(Domain).where(Domain.name == local_domain(name)))
    if found is None:
        raise SettingError(f"unknown domain {name!r}: add it with `smtpauth-milter domain add`")
    return found


# --- domains ---------------------------------------------------------------


def add_domains(session: Session, names: Iterable[str]) -> list[str]:
    """Add local domains; adding one that exists already is not an error."""
    wanted = list(dict.fromkeys(local_domain(name) for name in names))
    existing = set(session.scalars(select(Domain.name).where(Domain.name.in_(wanted))))
    added = [name for name in wanted if name not in existing]
    session.add_all(Domain(name=name) for name in added)
    for name in added:
        audit.record(session, "domain-add", name, domain=name)
    return added


def _aliases_of(session: Session, target: Domain) -> list[str]:
    query = select(Domain.name).where(Domain.alias_of_id == target.id).order_by(Domain.name)
    return list(session.scalars(query))


def _alias_target(session: Session, name: str) -> Domain:
    target = _domain(session, name)
    if target.alias_of is not None:
        raise SettingError(
            f"{target.name} is itself an alias domain of {target.alias_of.name}: "
            f"use --alias-of {target.alias_of.name} (aliases are one level deep)"
        )
    return target


def add_alias_domains(
    session: Session, names: Iterable[str], target_name: str
) -> list[tuple[str, str | None]]:
    """Make each of ``names`` an alias domain of ``target_name``, adding it when new.

    Returns (name, before) for each domain that changed: ``before`` is None for a
    new domain, else the old relation (``standalone`` or ``alias of OTHER``).
    An alias's target must be a local domain that is not an alias itself, and a
    domain that aliases point at cannot become an alias (one level only).
    """
    target = _alias_target(session, target_name)
    changed: list[tuple[str, str | None]] = []
    for name in dict.fromkeys(local_domain(name) for name in names):
        if name == target.name:
            raise SettingError(f"{name} cannot be an alias domain of itself")
        found = session.scalar(select(Domain).where(Domain.name == name))
        if found is None:
            session.add(Domain(name=name, alias_of=target))
            audit.record(
                session, "domain-add", name, new=f"{audit.ALIAS_OF}={target.name}", domain=name
            )
            changed.append((name, None))
            continue
        if found.alias_of is target:
            continue
        pointing = _aliases_of(session, found)
        if pointing:
            raise SettingError(
                f"{name} cannot become an alias domain: {', '.join(pointing)} "
                f"{'is an alias' if len(pointing) == 1 else 'are aliases'} of it "
                "(aliases are one level deep)"
            )
        before = f"{audit.ALIAS_OF}={found.alias_of.name}" if found.alias_of else None
        audit.record(
            session,
            "domain-alias",
            name,
            old=before,
            new=f"{audit.ALIAS_OF}={target.name}",
            domain=name,
        )
        changed.append(
            (name, f"alias of {found.alias_of.name}" if found.alias_of else "standalone")
        )
        found.alias_of = target
    session.flush()
    return changed


def _overrides_text(found: Domain) -> str | None:
    pairs = sorted((row.key, row.value) for row in found.settings)
    if found.alias_of is not None:
        pairs.insert(0, (audit.ALIAS_OF, found.alias_of.name))
    return "; ".join(f"{key}={value}" for key, value in pairs) or None


def remove_domains(session: Session, names: Iterable[str]) -> None:
    """Remove domains and their overrides; a target goes only with all its aliases."""
    doomed = {found.name: found for found in (_domain(session, name) for name in names)}
    for found in doomed.values():
        staying = [alias for alias in _aliases_of(session, found) if alias not in doomed]
        if staying:
            raise SettingError(
                f"cannot remove {found.name}: alias domains point at it: {', '.join(staying)} "
                "(remove them first, or in the same command)"
            )
    aliases_first = sorted(doomed.values(), key=lambda d: (d.alias_of is None, d.name))
    for found in aliases_first:
        audit.record(
            session, "domain-remove", found.name, old=_overrides_text(found), domain=found.name
        )
        session.delete(found)
        if found.alias_of is not None:
            session.flush()  # aliases leave before their target


def list_domains(session: Session) -> list[str]:
    return list(session.scalars(select(Domain.name).order_by(Domain.name)))


def domain_aliases(session: Session) -> dict[str, str]:
    """Every alias domain and its target."""
    target = aliased(Domain)
    rows = session.execute(
        select(Domain.name, target.name)
        .join(target, Domain.alias_of_id == target.id)
        .order_by(Domain.name)
    )
    return {alias: name for alias, name in rows}  # noqa: C416 (rows are Row objects)


# --- settings --------------------------------------------------------------


@dataclass(frozen=True)
class ShownSetting:
    key: str
    value: str
    source: Source


def _stored(
    session: Session, key: str, found: Domain | None
) -> GlobalSetting | DomainSetting | None:
    """The stored row of ``key`` (global, or ``found``'s override), through the identity map."""
    if found is None:
        return session.get(GlobalSetting, key)
    return session.get(DomainSetting, (found.id, key))


def set_setting(session: Session, key: str, value: str, domain: str | None = None) -> str:
    stored = canonical_value(key, value, domain=domain is not None)
    found = None if domain is None else _domain(session, domain)
    row = _stored(session, key, found)
    old = row.value if row is not None else None
    if row is not None:
        row.value = stored
    elif found is None:
        session.add(GlobalSetting(key=key, value=stored))
    else:
        session.add(DomainSetting(domain_id=found.id, key=key, value=stored))
    if old != stored:
        name = found.name if found else None
        audit.record(session, "setting-set", key, old=old, new=stored, domain=name)
    return stored


def unset_setting(session: Session, key: str, domain: str | None = None) -> None:
    setting(key, domain=domain is not None)
    found = None if domain is None else _domain(session, domain)
    row = _stored(session, key, found)
    if row is None:
        return
    audit.record(session, "setting-unset", key, old=row.value, domain=found.name if found else None)
    session.delete(row)


def global_values(session: Session) -> dict[str, str]:
    return dict(session.execute(select(GlobalSetting.key, GlobalSetting.value)).all())


def show_settings(session: Session, domain: str | None = None) -> list[ShownSetting]:
    """Every effective value and where it comes from (an alias domain's target: ``target``)."""
    glob = global_values(session)
    overrides = inherited = None
    if domain is not None:
        found = _domain(session, domain)
        overrides = {row.key: row.value for row in found.settings}
        if found.alias_of is not None:
            inherited = {row.key: row.value for row in found.alias_of.settings}
    return [ShownSetting(key, *effective(key, glob, overrides, inherited)) for key in SETTINGS]


# --- send-as grants --------------------------------------------------------


def allow(session: Session, login: str, target: str) -> tuple[str, str]:
    pair = grant_login(login), grant_target(target)
    exists = session.scalar(
        select(SendAsGrant).where(SendAsGrant.login == pair[0], SendAsGrant.target == pair[1])
    )
    if exists is None:
        session.add(SendAsGrant(login=pair[0], target=pair[1]))
        audit.record(
            session, "grant-allow", pair[0], new=pair[1], domain=audit.target_domain(pair[1])
        )
    return pair


def revoke(session: Session, login: str, target: str) -> None:
    pair = grant_login(login), grant_target(target)
    removed = session.execute(
        delete(SendAsGrant).where(SendAsGrant.login == pair[0], SendAsGrant.target == pair[1])
    )
    if not getattr(removed, "rowcount", 0):
        raise SettingError(f"no grant lets {pair[0]} send as {pair[1]}")
    audit.record(session, "grant-revoke", pair[0], old=pair[1], domain=audit.target_domain(pair[1]))


def list_grants(session: Session, login: str | None = None) -> list[tuple[str, str]]:
    query = select(SendAsGrant.login, SendAsGrant.target).order_by(
        SendAsGrant.login, SendAsGrant.target
    )
    if login is not None:
        query = query.where(SendAsGrant.login == grant_login(login))
    return list(session.execute(query).all())


# --- trusted networks ------------------------------------------------------


def add_network(session: Session, cidr: str, comment: str = "") -> str:
    text = str(parse_cidr(cidr))
    if not comment.isprintable():
        raise SettingError("a network comment must be printable text on one line")
    found = session.scalar(select(TrustedNetwork).where(TrustedNetwork.cidr == text))
    if found is None:
        session.add(TrustedNetwork(cidr=text, comment=comment))
        audit.record(session, "network-add", text, new=comment)
    elif found.comment != comment:
        audit.record(session, "network-comment", text, old=found.comment, new=comment)
        found.comment = comment
    return text


def remove_network(session: Session, cidr: str) -> None:
    text = str(parse_cidr(cidr))
    found = session.scalar(select(TrustedNetwork).where(TrustedNetwork.cidr == text))
    if found is None:
        raise SettingError(f"network {text} is not trusted")
    audit.record(session, "network-remove", text, old=found.comment)
    session.delete(found)


def list_networks(session: Session) -> list[tuple[str, str]]:
    rows = session.execute(select(TrustedNetwork.cidr, TrustedNetwork.comment)).all()
    return sorted(rows, key=lambda row: (parse_cidr(row[0]).version, parse_cidr(row[0])))
