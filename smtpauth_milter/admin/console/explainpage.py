"""Explain: the ``check`` form, answered by the same code as ``smtpauth-milter check``.

A server admin's page: the explanation shows server-wide facts (trusted networks,
grants to anyone, the sender-login-maps' answers)."""

from __future__ import annotations

from starlette.responses import Response

from smtpauth_milter.admin.console.permissions import Need
from smtpauth_milter.admin.console.web import Ctx, page
from smtpauth_milter.admin.explain import Headers, explain
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.lookups.ownership import OwnershipMaps
from smtpauth_milter.lookups.spf import SpfChecks

FIELDS = ("client", "login", "from", "rcpts", "header_from")


def _lines(ctx: Ctx, fields: dict[str, str]) -> list[str]:
    rcpts = fields["rcpts"].replace(",", " ").split()
    headers = Headers((fields["header_from"],)) if fields["header_from"] else None
    if not rcpts and headers is None:
        raise SmtpauthError("give at least one recipient or a From: header")
    snapshot = ctx.console.store.load_snapshot()
    spf, maps = SpfChecks(), OwnershipMaps()
    try:
        report = explain(
            snapshot, fields["client"] or None, fields["login"], fields["from"], rcpts, spf,
            headers, maps,
        )  # fmt: skip
    finally:
        spf.stop()
        maps.stop()
    return list(report.lines())


@page(Need.SERVER)
def explain_page(ctx: Ctx) -> Response:
    fields = {name: ctx.query.get(name, "").strip() for name in FIELDS}
    lines: list[str] = []
    error = None
    if "from" in ctx.query:
        try:
            lines = _lines(ctx, fields)
        except SmtpauthError as exc:
            error = str(exc)
    return ctx.render(
        "explain.html", 400 if error else 200, fields=fields, lines=lines, error=error
    )
