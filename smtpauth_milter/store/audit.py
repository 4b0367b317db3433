"""The audit trail: who changed what, when, with which command, old -> new.

The CLI puts an :class:`Actor` on the write session (:func:`begin`); the edits
in ``editing`` and ``transfer`` then :func:`record` each change on that same
session, so a change and its audit entry commit or roll back together. The
milter never reads this table.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.store.models import AuditEntry

ALIAS_OF = "alias-of"  # an alias domain's relation in the trail: alias-of=TARGET
_ACTOR = "smtpauth_milter.store.audit.actor"
_MUTED = "smtpauth_milter.store.audit.muted"
_RELATIVE = re.compile(r"(\d+)\s*([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


CLAIMED_SUDO = " (claimed sudo: "  # USER (claimed sudo: CLAIM): see os_user
MAX_USER = 128  # the audit_entry.os_user column


def os_user() -> str:
    """Who runs this command, as the audit trail records it, never failing.

    The real uid's passwd name, or ``uid:N`` when it has none; never a name from the
    environment (``LOGNAME=root`` is anyone's to set). ``SUDO_USER``, which is just as
    easy to set, is kept as a claim: ``root (claimed sudo: alice)``. The form parses
    back with :func:`parse_user`; the claim is escaped (:func:`logfmt.printable`) and
    cut so that the whole fits the column.
    """
    uid = os.getuid()
    try:
        name = logfmt.printable(pwd.getpwuid(uid).pw_name)
    except KeyError:  # a uid without a passwd entry (containers, a deleted account)
        name = f"uid:{uid}"
    claim = logfmt.printable(os.environ.get("SUDO_USER", ""))
    room = MAX_USER - len(name) - len(CLAIMED_SUDO) - 1
    if not claim or claim == name or room <= 0:
        return name[:MAX_USER]
    return f"{name}{CLAIMED_SUDO}{claim[:room]})"


def parse_user(text: str) -> tuple[str, str | None]:
    """``(user, claimed sudo user or None)`` from what :func:`os_user` recorded."""
    user, found, claim = text.partition(CLAIMED_SUDO)
    if found and claim.endswith(")"):
        return user, claim[:-1]
    return text, None


@dataclass(frozen=True)
class Actor:
    """Who makes the changes of one transaction, with which command, and when."""

    user: str
    command: str
    at: datetime

    @classmethod
    def now(cls, command: str) -> Actor:
        return cls(user=os_user(), command=command, at=datetime.now(UTC))


def begin(session: Session, actor: Actor) -> None:
    """Record every change made on ``session`` from now on as made by ``actor``."""
    session.info[_ACTOR] = actor


@contextlib.contextmanager
def muted(session: Session) -> Iterator[None]:
    """Record nothing inside (``import`` records its own, computed entries)."""
    session.info[_MUTED] = True
    try:
        yield
    finally:
        session.info.pop(_MUTED, None)


def record(
    session: Session,
    action: str,
    subject: str,
    *,
    old: str | None = None,
    new: str | None = None,
    domain: str | None = None,
) -> None:
    """Add one audit entry to the session's transaction (nothing without an actor)."""
    actor: Actor | None = session.info.get(_ACTOR)
    if actor is None or session.info.get(_MUTED):
        return
    session.add(
        AuditEntry(
            at=actor.at,
            os_user=actor.user,
            command=actor.command,
            action=action,
            domain=domain,
            subject=subject,
            old=old,
            new=new,
        )
    )


def target_domain(target: str) -> str | None:
    """The domain of a grant target (``@d`` or ``user@d``); None for ``*`` (anyone)."""
    return target.rpartition("@")[2] if "@" in target else None


# --- import: the difference between two exports ----------------------------


def _diff_settings(
    session: Session, before: Mapping[str, str], after: Mapping[str, str], domain: str | None
) -> int:
    changed = 0
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old != new:
            action = "setting-unset" if new is None else "setting-set"
            record(session, action, key, old=old, new=new, domain=domain)
            changed += 1
    return changed


def _alias_texts(export: Mapping[str, Any]) -> dict[str, str]:
    return {alias: f"{ALIAS_OF}={target}" for alias, target in export.get("aliases", {}).items()}


def record_import(
    session: Session, before: Mapping[str, Any], after: Mapping[str, Any], source: str
) -> int:
    """Record what an import changed, entry by entry, plus one summary entry."""
    changed = _diff_settings(session, before["settings"], after["settings"], None)
    old_domains, new_domains = before["domains"], after["domains"]
    old_alias, new_alias = _alias_texts(before), _alias_texts(after)
    for name in sorted(set(old_domains) - set(new_domains)):
        record(session, "domain-remove", name, old=old_alias.get(name), domain=name)
        changed += 1
    for name in sorted(set(new_domains) - set(old_domains)):
        record(session, "domain-add", name, new=new_alias.get(name), domain=name)
        changed += 1
    for name in sorted(set(new_domains) & set(old_domains)):
        if old_alias.get(name) != new_alias.get(name):
            old, new = old_alias.get(name), new_alias.get(name)
            record(session, "domain-alias", name, old=old, new=new, domain=name)
            changed += 1
    for name in sorted(new_domains):
        changed += _diff_settings(session, old_domains.get(name, {}), new_domains[name], name)
    old_nets = {n["cidr"]: n["comment"] for n in before["networks"]}
    new_nets = {n["cidr"]: n["comment"] for n in after["networks"]}
    for cidr in sorted(set(old_nets) | set(new_nets)):
        old, new = old_nets.get(cidr), new_nets.get(cidr)
        if old != new:
            action = (
                "network-add"
                if old is None
                else "network-remove"
                if new is None
                else "network-comment"
            )
            record(session, action, cidr, old=old, new=new)
            changed += 1
    old_grants = {(g["login"], g["target"]) for g in before["grants"]}
    new_grants = {(g["login"], g["target"]) for g in after["grants"]}
    for login, target in sorted(old_grants - new_grants):
        record(session, "grant-revoke", login, old=target, domain=target_domain(target))
        changed += 1
    for login, target in sorted(new_grants - old_grants):
        record(session, "grant-allow", login, new=target, domain=target_domain(target))
        changed += 1
    old_exempt, new_exempt = before.get("exempt_logins", {}), after.get("exempt_logins", {})
    for login in sorted(set(old_exempt) | set(new_exempt)):
        old, new = old_exempt.get(login), new_exempt.get(login)
        if old != new:
            action = "login-unexempt" if new is None else "login-exempt"
            record(session, action, login, old=old, new=new)
            changed += 1
    record(session, "import", source, new=f"{changed} change{'s' * (changed != 1)}")
    return changed


# --- reading the trail -----------------------------------------------------


def parse_since(text: str, now: datetime) -> datetime:
    """``2h``, ``7d``, ``30m``, ``2w``; an ISO date (UTC midnight) or datetime (UTC if naive)."""
    spec = text.strip()
    relative = _RELATIVE.fullmatch(spec)
    if relative:
        amount, unit = int(relative[1]), relative[2]
        try:
            return now - timedelta(**{_UNITS[unit]: amount})
        except OverflowError as exc:
            raise SettingError(f"{text!r} reaches too far back") from exc
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", spec):
            day = date.fromisoformat(spec)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(spec)
    except ValueError as exc:
        raise SettingError(
            f"{text!r} is not an ISO date/datetime or an age like 30m, 2h, 7d, 2w"
        ) from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class HistoryEntry:
    at: datetime
    user: str
    command: str
    action: str
    domain: str | None
    subject: str
    old: str | None
    new: str | None

    def as_json(self) -> dict[str, str | None]:
        """The entry for ``history --json``; ``claimed_sudo`` is the claim in ``user``."""
        return {
            "at": _utc_text(self.at),
            "user": self.user,
            "claimed_sudo": parse_user(self.user)[1],
            "command": self.command,
            "action": self.action,
            "domain": self.domain,
            "subject": self.subject,
            "old": self.old,
            "new": self.new,
        }

    def line(self) -> str:
        """One logfmt line; ``old``/``new`` are left out when there is none."""
        fields = {**self.as_json(), "at": _utc_text(self.at.replace(microsecond=0))}
        del fields["claimed_sudo"]  # the text line shows it inside user=
        shown = {k: v for k, v in fields.items() if v is not None or k not in ("old", "new")}
        return logfmt.line(shown)


def history(
    session: Session, *, domain: str | None = None, since: datetime | None = None
) -> list[HistoryEntry]:
    """The trail, oldest first; ``domain`` is a normalised domain name."""
    query = select(AuditEntry).order_by(AuditEntry.at, AuditEntry.id)
    if domain is not None:
        query = query.where(AuditEntry.domain == domain)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    return [
        HistoryEntry(e.at, e.os_user, e.command, e.action, e.domain, e.subject, e.old, e.new)
        for e in session.scalars(query)
    ]
