"""The web console's accounts: server admins and domain admins of some domains.

The store keeps names, roles, domains and Argon2id hashes (made by the console's
``passwords`` module); never a password. Each change is in the audit trail.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.store import audit, editing
from smtpauth_milter.store.models import ConsoleAdmin, ConsoleAdminDomain, Domain

SERVER, DOMAIN = "server", "domain"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,63}")


@dataclass(frozen=True)
class Account:
    name: str
    role: str  # SERVER or DOMAIN
    domains: tuple[str, ...]  # a domain admin's domains; () for a server admin
    password_hash: str

    def describe(self) -> str:
        return f"role={self.role}" + (f" domains={','.join(self.domains)}" if self.domains else "")


def admin_name(name: str) -> str:
    """An account name: 1-64 letters, digits and ``. _ @ + -``, starting with a letter or digit."""
    if not _NAME.fullmatch(name):
        raise SettingError(
            f"bad admin name {name!r}: use 1-64 letters, digits and . _ @ + - "
            "(starting with a letter or digit)"
        )
    return name


def _found(session: Session, name: str) -> ConsoleAdmin:
    row = session.scalar(select(ConsoleAdmin).where(ConsoleAdmin.name == admin_name(name)))
    if row is None:
        raise SettingError(f"no console admin named {name!r}")
    return row


def _account(row: ConsoleAdmin) -> Account:
    domains = tuple(d.domain for d in row.domains)
    return Account(row.name, row.role, domains, row.password_hash)


def _local_domains(session: Session, names: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(editing.local_domain(name) for name in names))
    known = set(session.scalars(select(Domain.name).where(Domain.name.in_(wanted))))
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SettingError(
            f"unknown domain {unknown[0]!r}: add it with `smtpauth-milter domain add` first"
        )
    return wanted


def add_admin(
    session: Session, name: str, password_hash: str, domains: Iterable[str] = ()
) -> Account:
    """A server admin (no domains) or a domain admin of ``domains`` (local domains)."""
    name = admin_name(name)
    if session.scalar(select(ConsoleAdmin.id).where(ConsoleAdmin.name == name)) is not None:
        raise SettingError(f"a console admin named {name!r} exists already")
    names = sorted(_local_domains(session, domains))
    row = ConsoleAdmin(name=name, password_hash=password_hash, role=DOMAIN if names else SERVER)
    row.domains = [ConsoleAdminDomain(domain=domain) for domain in names]
    session.add(row)
    session.flush()
    account = _account(row)
    audit.record(session, "admin-add", name, new=account.describe())
    return account


def set_password(session: Session, name: str, password_hash: str) -> None:
    row = _found(session, name)
    row.password_hash = password_hash
    audit.record(session, "admin-passwd", row.name)  # what changed is no one's to read


def remove_admin(session: Session, name: str) -> None:
    row = _found(session, name)
    audit.record(session, "admin-remove", row.name, old=_account(row).describe())
    session.delete(row)


def list_admins(session: Session) -> list[Account]:
    rows = session.scalars(select(ConsoleAdmin).order_by(ConsoleAdmin.name))
    return [_account(row) for row in rows]


def find_admin(session: Session, name: str) -> Account | None:
    """The account called ``name``, or None (a malformed name is nobody)."""
    if not _NAME.fullmatch(name):
        return None
    row = session.scalar(select(ConsoleAdmin).where(ConsoleAdmin.name == name))
    return None if row is None else _account(row)
