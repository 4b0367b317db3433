"""The console's ASGI application: its routes, pages and security headers."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from importlib import resources

from itsdangerous import URLSafeTimedSerializer
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from smtpauth_milter.admin.console import (
    dashboard,
    domains,
    explainpage,
    historypage,
    login,
    loginspage,
    networks,
    sendas,
    smtpauth,
)
from smtpauth_milter.admin.console.sessions import RateLimit, SessionTable
from smtpauth_milter.admin.console.web import Console, SecurityHeaders
from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import SettingError, StoreError
from smtpauth_milter.store.engine import Store

IDLE_TIMEOUT = 30 * 60.0
NAME_LIMIT, CLIENT_LIMIT, LIMIT_WINDOW = 10, 30, 15 * 60.0
CSS = resources.files("smtpauth_milter.admin.console").joinpath("static/console.css")


def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("smtpauth_milter.admin.console", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )


async def _css(_request: Request) -> Response:
    return Response(CSS.read_text(encoding="utf-8"), media_type="text/css")


def make_console(
    store: Store,
    *,
    secure: bool = False,
    idle_timeout: float = IDLE_TIMEOUT,
    clock: Callable[[], float] = time.monotonic,
    state: Store | None = None,
) -> Console:
    """A console on ``store``; its cookies are signed with a key of this process only."""
    return Console(
        store=store,
        sessions=SessionTable(idle_timeout, clock),
        by_name=RateLimit(NAME_LIMIT, LIMIT_WINDOW, clock),
        by_client=RateLimit(CLIENT_LIMIT, LIMIT_WINDOW, clock),
        secure=secure,
        signer=URLSafeTimedSerializer(secrets.token_bytes(32)),
        templates=_templates(),
        state=state,
    )


async def _store_trouble(request: Request, exc: Exception) -> Response:
    """The store failing (down, at another schema): one line, 503, nothing changed."""
    console: Console = request.app.state.console
    message = f"The settings store is unavailable: {exc}"
    return console.render("refused.html", 503, message=logfmt.printable(message))


async def _bad_request(request: Request, exc: Exception) -> Response:
    """A value the editing code refuses outside a form's own handling: one line, 400."""
    console: Console = request.app.state.console
    return console.render("refused.html", 400, message=logfmt.printable(str(exc)))


def create_app(console: Console) -> Starlette:
    routes = [
        Route("/", smtpauth.home),
        Route("/static/console.css", _css),
        Route("/login", login.login_form, methods=["GET"]),
        Route("/login", login.login, methods=["POST"]),
        Route("/logout", login.logout, methods=["POST"]),
        Route("/smtp-auth", smtpauth.smtp_auth, methods=["GET"]),
        Route("/smtp-auth", smtpauth.smtp_auth_save, methods=["POST"]),
        Route("/domains", domains.domains, methods=["GET"]),
        Route("/domains", domains.domains_change, methods=["POST"]),
        Route("/domains/sync", domains.sync_preview, methods=["GET"]),
        Route("/domains/sync", domains.sync_apply, methods=["POST"]),
        Route("/send-as", sendas.send_as, methods=["GET"]),
        Route("/send-as", sendas.send_as_change, methods=["POST"]),
        Route("/send-as/who", sendas.who_may, methods=["GET"]),
        Route("/history", historypage.history, methods=["GET"]),
        Route("/explain", explainpage.explain_page, methods=["GET"]),
        Route("/networks", networks.networks, methods=["GET"]),
        Route("/networks", networks.networks_change, methods=["POST"]),
        Route("/logins", loginspage.logins, methods=["GET"]),
        Route("/dashboard", dashboard.dashboard, methods=["GET"]),
        Route("/logins", loginspage.logins_unfreeze, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders)],
        exception_handlers={StoreError: _store_trouble, SettingError: _bad_request},
    )
    app.state.console = console
    return app
