"""The CLI's edits of logins (stolen logins): freeze, unfreeze, exempt, unexempt; and the
reads ``login list``, ``login show`` and ``check --login`` print.

Each edit validates first and records itself in the audit trail on the
session it writes.  Freezes live in the milter's state tables (the state
store, which may be the settings store itself); exemptions are settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.limits import login_domain
from smtpauth_milter.core.loginpolicy import login_key
from smtpauth_milter.core.snapshot import grant_login
from smtpauth_milter.core.window import width
from smtpauth_milter.store import audit
from smtpauth_milter.store.loginstate import (
    Freeze,
    FrozenState,
    clients_query,
    forget_counts,
    read_frozen,
    totals_query,
    write_freeze,
)
from smtpauth_milter.store.models import LoginExempt, LoginFrozen

ADMIN = "admin"  # the cause of a freeze an admin made


def checked_login(login: str) -> str:
    """A login as counted: trimmed, case-folded, printable, no spaces."""
    return login_key(grant_login(login))


def _reason(text: str) -> str:
    if len(text) > 400 or not text.isprintable():
        raise SettingError("a reason must be printable text on one line, at most 400 characters")
    return text


# --- freezes (state store) ----------------------------------------------------------


def freeze(session: Session, login: str, reason: str, by: str, now: float) -> bool:
    """Freeze ``login`` until unfrozen; False when it was frozen already."""
    key, why = checked_login(login), _reason(reason)
    found = read_frozen(session).get(key)
    if found is not None and found.active(now):
        return False
    write_freeze(session, Freeze(key, ADMIN, 0, now, None, by, why))
    return True


def unfreeze(session: Session, login: str, by: str, now: float) -> FrozenState:
    """Unfreeze ``login`` and forget its counts; refuses a login that is not frozen."""
    key = checked_login(login)
    found = read_frozen(session).get(key)
    if found is None or not found.active(now):
        raise SettingError(f"login {key} is not frozen")
    row = session.get(LoginFrozen, key)
    assert row is not None
    row.unfrozen_at = datetime.fromtimestamp(now, UTC)
    row.unfrozen_by = by[:128]
    forget_counts(session, [key])
    return found


def record_freeze(session: Session, login: str, reason: str) -> None:
    key = checked_login(login)
    audit.record(session, "login-freeze", key, new=reason or "frozen", domain=login_domain(key))


def record_unfreeze(session: Session, login: str, was: FrozenState) -> None:
    old = f"frozen ({was.cause}{f' {was.count}' if was.count else ''})"
    key = checked_login(login)
    audit.record(session, "login-unfreeze", key, old=old, domain=login_domain(key))


# --- exemptions (settings store) -------------------------------------------------------


def exempt(session: Session, login: str, comment: str = "") -> bool:
    """Exempt ``login`` from every limit; False when it was exempt already (same comment)."""
    key, text = checked_login(login), _reason(comment)
    found = session.get(LoginExempt, key)
    if found is not None and found.comment == text:
        return False
    if found is None:
        session.add(LoginExempt(login=key, comment=text))
        audit.record(session, "login-exempt", key, new=text, domain=login_domain(key))
    else:
        audit.record(
            session, "login-exempt", key, old=found.comment, new=text, domain=login_domain(key)
        )
        found.comment = text
    return True


def unexempt(session: Session, login: str) -> None:
    key = checked_login(login)
    found = session.get(LoginExempt, key)
    if found is None:
        raise SettingError(f"login {key} is not exempt")
    audit.record(session, "login-unexempt", key, old=found.comment, domain=login_domain(key))
    session.execute(delete(LoginExempt).where(LoginExempt.login == key))


def exempt_logins(session: Session) -> dict[str, str]:
    return dict(session.execute(select(LoginExempt.login, LoginExempt.comment)).all())


# --- what people read -------------------------------------------------------------------


@dataclass(frozen=True)
class LoginCounts:
    """A login's site-wide counts in each of its limits' windows."""

    counts: Mapping[str, int]  # limit setting name -> count
    clients: frozenset[str]


def counts(session: Session, login: str, windows: Mapping[str, int], now: float) -> LoginCounts:
    """``windows``: limit setting name -> window (seconds) of each limit that is on."""
    key = checked_login(login)
    totals: dict[tuple[str, int], int] = {}
    for _, kind, step, n in session.execute(totals_query(int(now), key)):
        totals[kind, step] = n
    found: dict[str, int] = {}
    clients: frozenset[str] = frozenset()
    for limit, window in windows.items():
        if limit == "login-max-client-ips":
            clients = frozenset(
                client
                for _, step, client in session.execute(clients_query(int(now), key))
                if step == width(window)
            )
            found[limit] = len(clients)
        else:
            found[limit] = totals.get((limit.removeprefix("login-max-"), width(window)), 0)
    return LoginCounts(found, clients)


def frozen_logins(session: Session, now: float) -> dict[str, FrozenState]:
    return {login: s for login, s in read_frozen(session).items() if s.active(now)}


def frozen_rows(session: Session, now: float) -> list[LoginFrozen]:
    """The logins frozen now, oldest freeze first."""
    rows = session.scalars(select(LoginFrozen).order_by(LoginFrozen.frozen_at, LoginFrozen.login))
    return [
        row
        for row in rows
        if FrozenState(row.until.timestamp() if row.until else None, row.unfrozen_by).active(now)
    ]
