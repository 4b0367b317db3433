"""History: the audit trail, filtered by domain and age (a domain admin: their domains only)."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.responses import Response

from smtpauth_milter.admin.console.permissions import Need
from smtpauth_milter.admin.console.smtpauth import domains_for
from smtpauth_milter.admin.console.web import Ctx, page
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.store import audit

SHOWN = 500  # the newest entries shown; narrow with the filters for older ones


@page(Need.SCOPED)
def history(ctx: Ctx) -> Response:
    since_text = ctx.query.get("since", "").strip()
    error, entries = None, []
    try:
        since = audit.parse_since(since_text, datetime.now(UTC)) if since_text else None
    except SettingError as exc:
        error, since = str(exc), None
    with ctx.read() as session:
        if error is None:
            entries = audit.history(session, domain=ctx.domain, since=since)
        choices = domains_for(session, ctx.who)
    newest = list(reversed(entries))[:SHOWN]
    return ctx.render(
        "history.html",
        400 if error else 200,
        entries=newest,
        more=len(entries) - len(newest),
        domain=ctx.domain,
        since=since_text,
        choices=choices,
        error=error,
    )
