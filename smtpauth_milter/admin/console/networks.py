"""Trusted networks: a server admin's page only (they exempt clients from every check)."""

from __future__ import annotations

from starlette.responses import RedirectResponse, Response

from smtpauth_milter.admin.console.permissions import Need
from smtpauth_milter.admin.console.web import Ctx, page
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.store import editing


def _show(ctx: Ctx, status: int = 200, error: str | None = None) -> Response:
    with ctx.read() as session:
        networks = editing.list_networks(session)
    return ctx.render("networks.html", status, networks=networks, error=error)


@page(Need.SERVER)
def networks(ctx: Ctx) -> Response:
    return _show(ctx)


@page(Need.SERVER)
def networks_change(ctx: Ctx) -> Response:
    cidr, remove = ctx.form.get("cidr", ""), ctx.form.get("remove")
    try:
        if remove is not None:
            with ctx.write(f"network remove {remove}") as session:
                editing.remove_network(session, remove)
        else:
            comment = ctx.form.get("comment", "")
            with ctx.write(f"network add {cidr} --comment {comment}") as session:
                editing.add_network(session, cidr, comment)
    except SettingError as exc:
        return _show(ctx, 400, str(exc))
    return RedirectResponse("/networks", status_code=303)
