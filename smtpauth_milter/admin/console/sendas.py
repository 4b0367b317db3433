"""Send-as grants: who may send as whom. A domain admin sees and changes only the grants
whose address (or ``@domain``) is in one of their domains; ``*`` grants are the server's."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import RedirectResponse, Response

from smtpauth_milter.admin.console.permissions import Need
from smtpauth_milter.admin.console.web import Ctx, page
from smtpauth_milter.core.addresses import Address, AddressError, parse_address
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.ownermaps import MapAnswer
from smtpauth_milter.core.ownership import ownership_form
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.core.snapshot import ANYONE, grant_target
from smtpauth_milter.lookups.ownership import OwnershipMaps
from smtpauth_milter.store import audit, editing


def target_scope(fields: Mapping[str, str]) -> str | None:
    """The domain a grant is about: its target's (``*``: the entire server)."""
    raw = fields.get("target", "")
    try:
        target = grant_target(raw)
    except SettingError:
        return raw.rpartition("@")[2] or raw  # nobody's domain: only a server admin passes
    return audit.target_domain(target)


def _show(ctx: Ctx, status: int = 200, error: str | None = None) -> Response:
    with ctx.read() as session:
        grants = editing.list_grants(session)
    if not ctx.who.server:
        grants = [g for g in grants if audit.target_domain(g[1]) in ctx.who.domains]
    login = ctx.query.get("login", "").strip().lower()
    shown = [g for g in grants if not login or g[0] == login]
    return ctx.render("sendas.html", status, grants=shown, login=login, anyone=ANYONE, error=error)


@page(Need.LOGGED_IN)
def send_as(ctx: Ctx) -> Response:
    return _show(ctx)


@page(Need.SCOPED, target_scope)
def send_as_change(ctx: Ctx) -> Response:
    login, target = ctx.form.get("login", ""), ctx.form.get("target", "")
    revoke = ctx.form.get("revoke") == "1"
    try:
        with ctx.write(f"sender {'revoke' if revoke else 'allow'} {login} {target}") as session:
            if revoke:
                editing.revoke(session, login, target)
            else:
                editing.allow(session, login, target)
    except SettingError as exc:
        return _show(ctx, 400, str(exc))
    return RedirectResponse("/send-as", status_code=303)


def address_scope(fields: Mapping[str, str]) -> str | None:
    raw = fields.get("address", "")
    try:
        return parse_address(raw.strip()).domain
    except AddressError:
        return raw.rpartition("@")[2] or raw  # nobody's domain: only a server admin passes


@page(Need.SCOPED, address_scope)
def who_may(ctx: Ctx) -> Response:
    """Who may send as an address: by the built-in forms, ``check``'s own ownership code
    (core.ownership.ownership_form) asked for every login that has a grant; and what
    sender-login-maps answer for it, asked as ``check`` asks them."""
    text = ctx.query.get("address", "").strip()
    try:
        address = parse_address(text)
    except AddressError as exc:
        return _show(ctx, 400, f"bad address {text!r}: {exc}")
    snapshot = ctx.console.store.load_snapshot()
    settings = snapshot.settings_for(address.domain)
    owners: list[tuple[str, str]] = []
    if settings is not None:
        candidates = sorted({text.lower(), *snapshot.grants})
        for login in candidates:
            form = ownership_form(snapshot, settings, login, address)
            if form is not None:
                owners.append((login, form.value))
    return ctx.render(
        "whomay.html",
        address=text,
        local=settings is not None,
        owners=owners,
        maps=_map_answer(snapshot.global_settings, address) if settings is not None else None,
    )


def _map_answer(settings: Settings, address: Address) -> MapAnswer | None:
    """What sender-login-maps answer for ``address``, asked as ``check`` asks them
    (on this thread, same deadlines); None when no map is set."""
    maps = OwnershipMaps(probe=False)
    try:
        ownership = maps.for_settings(settings)
        return None if ownership is None else ownership.answer_now(address)
    finally:
        maps.stop()
