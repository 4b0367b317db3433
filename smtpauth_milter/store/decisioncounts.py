"""What every milter decided, per hour: the counts behind the console's Dashboard.

Each milter counts its decisions in memory (daemon/decisions.py) and its
``login-sync`` thread adds them here in the same transaction as its login
counts (store/loginstate.py), once per interval: never a write per message.
Rows older than :data:`KEEP_HOURS` are pruned.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from smtpauth_milter.store.bulk import insert_for, insert_many
from smtpauth_milter.store.models import DecisionCount, RefusedCount

HOUR = 3600
KEEP_HOURS = 48  # rows older than this are pruned
LOGIN, CLIENT = "login", "client"  # the kinds of RefusedCount
# (hour, rule, action, domain) and (hour, kind, value, domain) -> n
DecisionKey = tuple[int, str, str, str]
RefusedKey = tuple[int, str, str, str]


@dataclass
class Counts:
    """What one milter decided since its last flush."""

    decisions: dict[DecisionKey, int] = field(default_factory=dict)
    refused: dict[RefusedKey, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.decisions or self.refused)


def write(session: Session, counts: Counts) -> None:
    """Add one milter's counts to every milter's (one statement per table)."""
    insert = insert_for(session)
    for model, keys, rows in (
        (DecisionCount, ("hour", "rule", "action", "domain"), counts.decisions),
        (RefusedCount, ("hour", "kind", "value", "domain"), counts.refused),
    ):
        if not rows:
            continue
        table = model.__table__
        stmt = insert(table)
        upsert = stmt.on_conflict_do_update(
            index_elements=list(keys), set_={"n": table.c.n + stmt.excluded.n}
        )
        insert_many(session, upsert, (*keys, "n"), [(*key, n) for key, n in rows.items()])


def prune(session: Session, now: float) -> int:
    """Delete the hours older than KEEP_HOURS."""
    oldest = int(now) // HOUR - KEEP_HOURS
    removed = 0
    for model in (DecisionCount, RefusedCount):
        result = session.execute(delete(model).where(model.hour < oldest))
        removed += getattr(result, "rowcount", 0) or 0
    return removed


@dataclass(frozen=True)
class Summary:
    """The last ``hours`` hours: decisions per rule and per domain, top refused."""

    by_rule: Mapping[str, Mapping[str, int]]  # rule -> action -> n
    by_domain: Mapping[str, Mapping[str, int]]  # domain ("" none) -> action -> n
    top_logins: list[tuple[str, int]]
    top_clients: list[tuple[str, int]]


def _nested(rows: Iterable[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    found: dict[str, dict[str, int]] = {}
    for outer, inner, n in rows:
        found.setdefault(outer, {})[inner] = int(n)
    return found


def summary(
    session: Session,
    now: float,
    hours: int = 24,
    domains: frozenset[str] | None = None,
    top: int = 10,
) -> Summary:
    """``domains``: only rows about these domains (a domain admin's); None: every row."""
    since = int(now) // HOUR - hours + 1
    d, r = DecisionCount, RefusedCount
    where_d = [d.hour >= since] + ([d.domain.in_(domains)] if domains is not None else [])
    where_r = [r.hour >= since] + ([r.domain.in_(domains)] if domains is not None else [])
    by_rule = session.execute(
        select(d.rule, d.action, func.sum(d.n)).where(*where_d).group_by(d.rule, d.action)
    )
    by_domain = session.execute(
        select(d.domain, d.action, func.sum(d.n)).where(*where_d).group_by(d.domain, d.action)
    )

    def _top(kind: str) -> list[tuple[str, int]]:
        total = func.sum(r.n).label("total")
        rows = session.execute(
            select(r.value, total)
            .where(r.kind == kind, *where_r)
            .group_by(r.value)
            .order_by(total.desc(), r.value)
            .limit(top)
        )
        return [(value, int(n)) for value, n in rows]

    return Summary(_nested(by_rule), _nested(by_domain), _top(LOGIN), _top(CLIENT))
