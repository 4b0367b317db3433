"""Domains: local and alias domains. Every admin sees theirs; only a server admin adds,
turns into an alias or removes one (a new local domain changes the whole server)."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from smtpauth_milter.admin import domainsync
from smtpauth_milter.admin.console.permissions import Need
from smtpauth_milter.admin.console.web import Ctx, page
from smtpauth_milter.core.errors import SettingError, SmtpauthError
from smtpauth_milter.store import editing


def _show(ctx: Ctx, status: int = 200, error: str | None = None) -> Response:
    with ctx.read() as session:
        names, aliases = editing.list_domains(session), editing.domain_aliases(session)
    rows = [
        (name, aliases.get(name)) for name in names if ctx.who.server or name in ctx.who.domains
    ]
    return ctx.render("domains.html", status, rows=rows, error=error)


@page(Need.LOGGED_IN)
def domains(ctx: Ctx) -> Response:
    return _show(ctx)


@page(Need.SERVER)
def domains_change(ctx: Ctx) -> Response:
    remove = ctx.form.get("remove")
    names = ctx.form.get("names", "").replace(",", " ").split()
    target = ctx.form.get("alias_of", "").strip()
    try:
        if remove is not None:
            with ctx.write(f"domain remove {remove}") as session:
                editing.remove_domains(session, [remove])
        elif not names:
            raise SettingError("name at least one domain")
        elif target:
            with ctx.write(f"domain add {' '.join(names)} --alias-of {target}") as session:
                editing.add_alias_domains(session, names, target)
        else:
            with ctx.write(f"domain add {' '.join(names)}") as session:
                editing.add_domains(session, names)
    except SettingError as exc:
        return _show(ctx, 400, str(exc))
    return RedirectResponse("/domains", status_code=303)


def _plan(ctx: Ctx) -> tuple[str, domainsync.SyncPlan]:
    return domainsync.from_postfix(ctx.console.store.load_snapshot())


@page(Need.SERVER)
def sync_preview(ctx: Ctx) -> Response:
    """``domain sync --from-postfix --dry-run``: what applying would add."""
    try:
        directory, sync = _plan(ctx)
    except SmtpauthError as exc:
        return _show(ctx, 400, str(exc))
    lines = domainsync.report(sync, remove=False, dry_run=True)
    return ctx.render(
        "domainsync.html", directory=directory, lines=lines, changes=sync.changes(False)
    )


@page(Need.SERVER)
def sync_apply(ctx: Ctx) -> Response:
    """``domain sync --from-postfix``: add the domains Postfix lists (never removes)."""
    try:
        directory, sync = _plan(ctx)
        if sync.changes(False):
            with ctx.write(f"domain sync --from-postfix (postfix:{directory})") as session:
                domainsync.apply(session, sync, False, f"postfix:{directory}")
    except SmtpauthError as exc:
        return _show(ctx, 400, str(exc))
    return RedirectResponse("/domains", status_code=303)
