"""Domains: local and alias domains. Every admin sees theirs; only a server admin adds,
turns into an alias or removes one (a new local domain changes the whole server)."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from smtpauth_milter.admin.console.permissions import Need
from smtpauth_milter.admin.console.web import Ctx, page
from smtpauth_milter.core.errors import SettingError
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
