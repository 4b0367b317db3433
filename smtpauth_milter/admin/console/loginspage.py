"""Logins: the frozen logins and the logins near a limit (what ``login list`` shows, from the
same store functions), with Unfreeze.  A domain admin sees and unfreezes only the logins of
their domains (a login's domain: what follows its last "@"; a bare login is the server's)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping

from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from smtpauth_milter.admin.cli.login import near_limits
from smtpauth_milter.admin.console.permissions import Need, Principal, scope
from smtpauth_milter.admin.console.web import Ctx, page
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.limits import login_domain
from smtpauth_milter.core.loginpolicy import login_key
from smtpauth_milter.store import loginedit, loginstate


def login_scope(fields: Mapping[str, str]) -> str | None:
    """An unfreeze is about the login's domain (None, the server's, for a bare login)."""
    return login_domain(login_key(fields.get("login", "")))


def _mine(who: Principal, login: str) -> bool:
    return who.server or scope(login_domain(login)) in who.domains


@contextlib.contextmanager
def _writing(ctx: Ctx, what: str) -> Iterator[tuple[Session, Session]]:
    """The audited settings transaction and the state store's (one when they are one)."""
    with ctx.write(what) as session:
        state = ctx.console.state_store
        if state is ctx.console.store:
            yield session, session
        else:
            with loginstate.writing(state) as state_session:
                yield session, state_session


def _show(ctx: Ctx, status: int = 200, error: str | None = None) -> Response:
    now = time.time()
    snapshot = ctx.console.store.load_snapshot()
    with ctx.console.state_store.read() as state:
        frozen = [r for r in loginedit.frozen_rows(state, now) if _mine(ctx.who, r.login)]
        near = near_limits(snapshot, loginstate.read(state, now))
    near = [r for r in near if _mine(ctx.who, r["login"])]
    return ctx.render("logins.html", status, frozen=frozen, near=near, error=error)


@page(Need.LOGGED_IN)
def logins(ctx: Ctx) -> Response:
    return _show(ctx)


@page(Need.SCOPED, login_scope)
def logins_unfreeze(ctx: Ctx) -> Response:
    login = loginedit.checked_login(ctx.form.get("login", ""))
    try:
        with _writing(ctx, f"login unfreeze {login}") as (session, state):
            by = f"console:{ctx.who.name}"
            was = loginedit.unfreeze(state, login, by, time.time())
            loginedit.record_unfreeze(session, login, was)
    except SettingError as exc:
        return _show(ctx, 400, str(exc))
    return RedirectResponse("/logins", status_code=303)
