"""The SMTP Authentication page: SecurityGateway's four options and ours, for the entire
server or one domain, each value with where it comes from."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from smtpauth_milter.admin.console.permissions import Need, Principal
from smtpauth_milter.admin.console.web import Ctx, page
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.settings import SETTINGS, Source, canonical_value
from smtpauth_milter.store import editing


@dataclass(frozen=True)
class Option:
    key: str
    gateway: str  # SecurityGateway's name for it ("" when it has none)
    text: bool = False  # a text field, else a checkbox
    under: bool = False  # laid out under the option before it


OPTIONS = (
    Option(
        "require-auth-local", "Authentication is always required when mail is from local accounts"
    ),
    Option("exempt-local-recipients", "...unless the message is to a local account", under=True),
    Option("require-sender-match", "Credentials used must match those of the email sender"),
    Option(
        "require-auth-role",
        "Mail from postmaster, abuse, webmaster requires an authenticated session",
    ),
    Option("role-senders", "", text=True, under=True),
    Option("spf-exempt", ""),
    Option("bare-login-match", ""),
    Option("dry-run", ""),
    Option("auth-required-reply", "", text=True),
    Option("sender-mismatch-reply", "", text=True),
)
KEYS = tuple(option.key for option in OPTIONS)


@dataclass(frozen=True)
class Row:
    option: Option
    meaning: str
    value: str
    source: str  # where the value comes from, in words
    overridden: bool  # this domain's own value: "use the server's value" drops it


def _source(source: Source, domain: str | None, target: str | None) -> str:
    if domain is None:
        return "set for the server" if source is Source.GLOBAL else "default"
    return {
        Source.DOMAIN: "this domain",
        Source.TARGET: f"its alias target {target}",
        Source.GLOBAL: "the server",
        Source.DEFAULT: "the server (default)",
    }[source]


def rows(session: Session, domain: str | None) -> list[Row]:
    shown = {row.key: row for row in editing.show_settings(session, domain)}
    target = editing.domain_aliases(session).get(domain or "")
    return [
        Row(
            option,
            SETTINGS[option.key].meaning,
            shown[option.key].value,
            _source(shown[option.key].source, domain, target),
            shown[option.key].source is Source.DOMAIN,
        )
        for option in OPTIONS
    ]


def domains_for(session: Session, who: Principal) -> list[str]:
    """The For Domain choices: every local domain, or a domain admin's own."""
    return [name for name in editing.list_domains(session) if who.server or name in who.domains]


def _show(ctx: Ctx, status: int = 200, error: str | None = None) -> Response:
    with ctx.read() as session:
        shown = rows(session, ctx.domain)
        choices = domains_for(session, ctx.who)
    return ctx.render(
        "smtpauth.html",
        status,
        rows=shown,
        domain=ctx.domain,
        choices=choices,
        error=error,
        saved=ctx.query.get("saved") == "1",
    )


@page(Need.LOGGED_IN)
def home(ctx: Ctx) -> Response:
    """The SMTP Authentication page: the server's values, or a domain admin's first domain."""
    first = "" if ctx.who.server else min(ctx.who.domains, default="")
    return RedirectResponse(f"/smtp-auth?{urlencode({'domain': first})}", status_code=303)


@page(Need.SCOPED)
def smtp_auth(ctx: Ctx) -> Response:
    return _show(ctx)


def _submitted(ctx: Ctx, option: Option) -> str | None:
    """The value sent, None when the form left it out. A checkbox comes after a hidden
    ``off`` of the same name, so the last value sent is ``on`` only when it is ticked."""
    return ctx.form.get(option.key)


def _save(ctx: Ctx, session: Session) -> None:
    """Set each value that differs from the one in force (an unchanged one stays inherited)."""
    domain = ctx.domain
    current = {row.key: row.value for row in editing.show_settings(session, domain)}
    for option in OPTIONS:
        value = _submitted(ctx, option)
        if value is None:
            continue
        if canonical_value(option.key, value, domain=domain is not None) != current[option.key]:
            editing.set_setting(session, option.key, value, domain)


@page(Need.SCOPED)
def smtp_auth_save(ctx: Ctx) -> Response:
    where = f" --domain {ctx.domain}" if ctx.domain else ""
    unset = ctx.form.get("unset")
    try:
        if unset is not None:
            if unset not in KEYS or ctx.domain is None:
                raise SettingError(f"{unset!r} is not a domain value of this page")
            with ctx.write(f"settings unset{where} {unset}") as session:
                editing.unset_setting(session, unset, ctx.domain)
        else:
            with ctx.write(f"smtp-auth page saved{where}") as session:
                _save(ctx, session)
    except SettingError as exc:
        return _show(ctx, 400, str(exc))
    query = urlencode({"domain": ctx.domain or "", "saved": "1"})
    return RedirectResponse(f"/smtp-auth?{query}", status_code=303)
