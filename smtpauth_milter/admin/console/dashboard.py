"""Dashboard: what every milter sharing the store decided in the last 24 hours, per rule
and per domain, and the most refused logins and client addresses, as bars drawn by the
template (inline SVG: no JavaScript, the Content-Security-Policy stays strict).

The counts come from the state store (store/decisioncounts.py), flushed by each
milter's login-sync thread about once a second.  A domain admin sees only the rows
about their domains (the domain whose settings decided).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from starlette.responses import Response

from smtpauth_milter.admin.console.permissions import Need
from smtpauth_milter.admin.console.web import Ctx, page
from smtpauth_milter.store import decisioncounts

HOURS = 24
# The columns (and bar colours, in console.css) an action is shown in.
COLUMNS = (
    ("accepted", ("continue",)),
    ("refused", ("reject",)),
    ("tempfailed", ("tempfail",)),
    ("dry run", ("would-reject", "would-tempfail")),
)


@dataclass(frozen=True)
class Row:
    label: str
    counts: tuple[int, ...]  # one per COLUMNS

    @property
    def total(self) -> int:
        return sum(self.counts)


def rows(found: Mapping[str, Mapping[str, int]]) -> list[Row]:
    """Rows by total, largest first, each with its counts per column."""
    made = [
        Row(label, tuple(sum(actions.get(a, 0) for a in names) for _, names in COLUMNS))
        for label, actions in found.items()
    ]
    return sorted(made, key=lambda row: (-row.total, row.label))


@page(Need.LOGGED_IN)
def dashboard(ctx: Ctx) -> Response:
    domains = None if ctx.who.server else ctx.who.domains
    with ctx.console.state_store.read() as session:
        found = decisioncounts.summary(session, time.time(), HOURS, domains)
    by_rule, by_domain = rows(found.by_rule), rows(found.by_domain)
    widest = max([r.total for r in by_rule + by_domain] or [1])
    top = max([n for _, n in found.top_logins + found.top_clients] or [1])
    return ctx.render(
        "dashboard.html",
        hours=HOURS,
        columns=[name for name, _ in COLUMNS],
        by_rule=by_rule,
        by_domain=by_domain,
        widest=widest,
        top_logins=found.top_logins,
        top_clients=found.top_clients,
        top=top,
    )
