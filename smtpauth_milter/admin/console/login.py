"""Logging in and out: one message for an unknown name and a wrong password, rate-limited
per name and per client address (a limited attempt is not even checked)."""

from __future__ import annotations

from itsdangerous import BadSignature
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from smtpauth_milter.admin.console import passwords
from smtpauth_milter.admin.console.permissions import Need
from smtpauth_milter.admin.console.web import (
    COOKIE,
    LOGIN_TOKEN_AGE,
    Console,
    Ctx,
    client_of,
    page,
)
from smtpauth_milter.store import accounts

FAILED = "Wrong name or password."
LIMITED = "Too many failed logins for this name or from this address: try again later."


def _form(console: Console, status: int = 200, error: str | None = None) -> Response:
    token = console.signer.dumps("login", salt="login")
    return console.render("login.html", status, token=token, error=error)


async def login_form(request: Request) -> Response:
    return _form(request.app.state.console)


def _check(console: Console, name: str, password: str) -> accounts.Account | None:
    with console.store.read() as session:
        account = accounts.find_admin(session, name)
    ok = passwords.verify(account.password_hash if account else None, password)
    return account if ok else None


async def login(request: Request) -> Response:
    console: Console = request.app.state.console
    async with request.form() as data:
        form = {k: v for k, v in data.items() if isinstance(v, str)}
    try:
        console.signer.loads(form.get("token", ""), salt="login", max_age=LOGIN_TOKEN_AGE)
    except BadSignature:
        return _form(console, 403, "This form has expired: try again.")
    name, client = form.get("name", "")[:200], client_of(request)
    keys = (console.by_name, name.lower()), (console.by_client, client)
    if any(limit.blocked(key) for limit, key in keys):
        return _form(console, 429, LIMITED)
    account = await run_in_threadpool(_check, console, name, form.get("password", ""))
    if account is None:
        for limit, key in keys:
            limit.failed(key)
        return _form(console, 401, FAILED)
    session = console.sessions.start(account.name, account.password_hash)
    response = RedirectResponse("/", status_code=303)
    console.set_cookie(response, session.sid)
    return response


@page(Need.LOGGED_IN)
def logout(ctx: Ctx) -> Response:
    ctx.console.sessions.end(ctx.session.sid)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
