"""The console's plumbing: sessions from cookies, CSRF, the declared permission, audited writes.

Every page handler is wrapped by :func:`page`, the one place that finds the
session, checks the CSRF token of a POST and the handler's :class:`Need`, and
answers 403 (nothing read or changed) when one fails. Handlers are plain
functions run on a worker thread; they write through :meth:`Ctx.write`, which
records each change in the audit trail as this admin's, from this address.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import Environment
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from smtpauth_milter.admin.console.permissions import Need, Principal, scope
from smtpauth_milter.admin.console.sessions import ConsoleSession, RateLimit, SessionTable
from smtpauth_milter.core import logfmt
from smtpauth_milter.store import accounts, audit
from smtpauth_milter.store.engine import Store

COOKIE = "smtpauth_console"
LOGIN_TOKEN_AGE = 3600  # seconds a login form may stay open
# The console's pages in the menu's order, and whether only a server admin sees them.
PAGES: list[tuple[str, str, bool]] = [
    ("/dashboard", "Dashboard", False),
    ("/smtp-auth", "SMTP Authentication", False),
    ("/domains", "Domains", False),
    ("/send-as", "Send-as", False),
    ("/networks", "Trusted networks", True),
    ("/logins", "Logins", False),
    ("/history", "History", False),
    ("/explain", "Explain", True),
]


@dataclass
class Console:
    """The running console: its store, sessions, limits and templates."""

    store: Store
    sessions: SessionTable
    by_name: RateLimit
    by_client: RateLimit
    secure: bool  # behind HTTPS: cookies are Secure
    signer: URLSafeTimedSerializer
    templates: Environment
    state: Store | None = None  # the milter's counts and freezes; None: in ``store``

    @property
    def state_store(self) -> Store:
        return self.store if self.state is None else self.state

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        text = self.templates.get_template(template).render(**values)
        return HTMLResponse(text, status_code=status)

    def set_cookie(self, response: Response, sid: str) -> None:
        response.set_cookie(
            COOKIE,
            self.signer.dumps(sid, salt="session"),
            httponly=True,
            samesite="strict",
            secure=self.secure,
            path="/",
        )

    def session_of(self, request: Request) -> tuple[ConsoleSession, Principal] | None:
        """The request's live session and its admin (re-read: a removed account or a new
        password ends every session)."""
        cookie = request.cookies.get(COOKIE)
        if not cookie:
            return None
        try:
            sid = self.signer.loads(cookie, salt="session")
        except BadSignature:
            return None
        found = self.sessions.find(str(sid))
        if found is None:
            return None
        with self.store.read() as session:
            account = accounts.find_admin(session, found.name)
        if account is None or account.password_hash != found.password_hash:
            self.sessions.end(found.sid)
            return None
        return found, Principal.of(account)


def client_of(request: Request) -> str:
    return request.client.host if request.client else "-"


@dataclass
class Ctx:
    """What a handler gets: the request's admin, its For Domain and form, and the console."""

    console: Console
    who: Principal
    session: ConsoleSession
    client: str
    path: str
    domain: str | None
    query: Mapping[str, str]
    form: Mapping[str, str]

    def render(self, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        return self.console.render(
            template,
            status,
            who=self.who,
            csrf=self.session.csrf,
            pages=PAGES,
            here=self.path,
            **values,
        )

    @contextmanager
    def write(self, what: str) -> Iterator[Session]:
        """One transaction, each change recorded as made by this admin from this address."""
        actor = audit.Actor(
            user=f"console:{self.who.name}",
            command=logfmt.printable(f"console from {self.client}: {what}"),
            at=datetime.now(UTC),
        )
        with self.console.store.write() as session:
            audit.begin(session, actor)
            yield session

    def read(self) -> Any:
        return self.console.store.read()


Handler = Callable[[Ctx], Response]
# Which domain a request is about, from its fields (the form of a POST, else the query):
# by default the For Domain field ``domain``; "" or None is the entire server.
ScopeOf = Callable[[Mapping[str, str]], str | None]


def for_domain(fields: Mapping[str, str]) -> str | None:
    return fields.get("domain")


def refuse(console: Console, status: int, message: str) -> HTMLResponse:
    return console.render("refused.html", status, message=message)


def page(
    need: Need, scope_of: ScopeOf = for_domain
) -> Callable[[Handler], Callable[[Request], Any]]:
    """Wrap a handler: session, CSRF token on POST, the declared permission (for the
    domain ``scope_of`` finds in the request), then the call."""

    def wrap(handler: Handler) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            console: Console = request.app.state.console
            found = await run_in_threadpool(console.session_of, request)
            if found is None:
                if request.method == "GET":
                    return RedirectResponse("/login", status_code=303)
                return refuse(console, 403, "Your session has ended: log in again.")
            session, who = found
            form: dict[str, str] = {}
            if request.method == "POST":
                async with request.form() as data:
                    form = {k: v for k, v in data.items() if isinstance(v, str)}
                sent = form.get("csrf", "")
                if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                    return refuse(console, 403, "This form has expired: load the page again.")
            fields = form if request.method == "POST" else dict(request.query_params)
            domain = scope(scope_of(fields))
            if not who.may(need, domain):
                return refuse(console, 403, "You may not see or change this.")
            ctx = Ctx(
                console,
                who,
                session,
                client_of(request),
                request.url.path,
                domain,
                dict(request.query_params),
                form,
            )
            return await run_in_threadpool(handler, ctx)

        endpoint.__name__ = handler.__name__
        return endpoint

    return wrap


SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class SecurityHeaders:
    """Add :data:`SECURITY_HEADERS` to every response (pure ASGI: no body buffering)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope_: Any, receive: Any, send: Any) -> None:
        if scope_["type"] != "http":
            await self.app(scope_, receive, send)
            return

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope_, receive, with_headers)
