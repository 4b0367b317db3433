"""Logins and their limits (stolen logins): list, show, freeze, unfreeze, exempt, unexempt."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import click
from sqlalchemy.orm import Session

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.admin.explain import Report
from smtpauth_milter.core.limits import LimitKind, LoginLimits
from smtpauth_milter.core.loginpolicy import limits_for
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.daemon.config import STATE_ENV, state_url
from smtpauth_milter.daemon.logins import LoginLimiter
from smtpauth_milter.daemon.siteview import STORED_KIND
from smtpauth_milter.store import audit, loginedit, loginstate
from smtpauth_milter.store.engine import Store

NEAR = 0.8  # `login list` shows a login at 80% of a limit or more


def state_store(obj: Context) -> Store:
    """Where the milter writes counts and freezes: ``state`` (SMTPAUTH_MILTER_STATE or the
    config key), else the store itself."""
    url = state_url(os.environ.get(STATE_ENV), obj.file)
    if url is None or url == obj.db:
        return obj.store()
    state = Store(url)
    click.get_current_context().call_on_close(state.dispose)
    state.prepare()
    return state


@contextlib.contextmanager
def _writing(obj: Context) -> Iterator[tuple[Session, Session]]:
    """The settings store's audited transaction and the state store's (the same one when
    the state is in the settings store)."""
    with obj.write() as session:
        state = state_store(obj)
        if state is obj.store():
            yield session, session
        else:
            with loginstate.writing(state) as state_session:
                yield session, state_session


def with_login_limits(obj: Context, snapshot: Snapshot, report: Report) -> Report:
    """``check --login``: each verdict with the login's limits applied as the milter would,
    from the site-wide counts and freezes in the state store (nothing is counted)."""
    now = time.time()
    limiter = LoginLimiter("check", lambda: now)
    with state_store(obj).read() as state:
        limiter.absorb(loginstate.read(state, now), loginstate.Batch(), now)
    verdicts, counted = [], False
    for rcpt, verdict in report.verdicts:
        limited = limiter.apply(snapshot, report.request, verdict, not counted)
        counted = counted or not limited.refuses
        verdicts.append((rcpt, limited))
    return dataclasses.replace(report, verdicts=tuple(verdicts))


def _shown(text: object) -> str:
    """A login or reason as printed: a login the milter counted came from the MTA and may
    hold control or bidi characters; they are escaped, never written to the terminal."""
    shown = str(text)
    return shown if shown.isprintable() else shown.encode("unicode_escape").decode("ascii")


def _utc(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else "-"


def _windows(limits: LoginLimits) -> dict[str, int]:
    return {kind.value: limit.window for kind, limit in limits.limits}


@click.group()
def login() -> None:
    """Per-login limits (stolen logins): frozen, exempt and busy logins."""


@login.command("freeze")
@click.argument("login_name", metavar="LOGIN")
@click.option("--reason", default="", metavar="TEXT", help="Why (shown by list and history).")
@pass_context
def login_freeze(obj: Context, login_name: str, reason: str) -> None:
    """Refuse all mail of LOGIN (login-frozen-reply) until `login unfreeze`.

    Every running milter refuses it within about a second.
    """
    with _writing(obj) as (session, state):
        key = loginedit.checked_login(login_name)
        if not loginedit.freeze(state, key, reason, audit.os_user(), time.time()):
            click.echo(f"{key} is frozen already")
            return
        loginedit.record_freeze(session, key, reason)
    click.echo(f"froze {key}")


@login.command("unfreeze")
@click.argument("login_name", metavar="LOGIN")
@pass_context
def login_unfreeze(obj: Context, login_name: str) -> None:
    """Let LOGIN send again, its counts started afresh (within about a second)."""
    with _writing(obj) as (session, state):
        was = loginedit.unfreeze(state, login_name, audit.os_user(), time.time())
        loginedit.record_unfreeze(session, login_name, was)
    click.echo(f"unfroze {loginedit.checked_login(login_name)}")


@login.command("exempt")
@click.argument("login_name", metavar="LOGIN")
@click.option("--comment", default="", metavar="TEXT", help="Why (a relay, an application...).")
@pass_context
def login_exempt(obj: Context, login_name: str, comment: str) -> None:
    """Never count LOGIN (a relay, application or mailing-list login)."""
    with obj.write() as session:
        loginedit.exempt(session, login_name, comment)
    click.echo(f"exempt {loginedit.checked_login(login_name)}")


@login.command("unexempt")
@click.argument("login_name", metavar="LOGIN")
@pass_context
def login_unexempt(obj: Context, login_name: str) -> None:
    """Count LOGIN again."""
    with obj.write() as session:
        loginedit.unexempt(session, login_name)


def near_limits(snapshot: Snapshot, readback: loginstate.Readback) -> list[dict[str, Any]]:
    """Logins at NEAR of a limit or more, site-wide (`login list` and the console's Logins
    page)."""
    found = []
    for (login, kind, step), n in sorted(readback.totals.items()):
        limits = dict(limits_for(snapshot, login).limits)
        for limit_kind, limit in limits.items():
            stored = STORED_KIND[limit_kind]
            if stored == kind and step == limit.window // 60 and n >= NEAR * limit.count:
                found.append(
                    {"login": login, "limit": limit_kind.value, "count": n, "max": str(limit)}
                )
    for (login, step), clients in sorted(readback.clients.items()):
        ips = dict(limits_for(snapshot, login).limits).get(LimitKind.CLIENT_IPS)
        if ips and step == ips.window // 60 and len(clients) >= NEAR * ips.count:
            found.append(
                {
                    "login": login,
                    "limit": LimitKind.CLIENT_IPS.value,
                    "count": len(clients),
                    "max": str(ips),
                }
            )
    return found


@login.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def login_list(obj: Context, as_json: bool) -> None:
    """Frozen logins, logins near a limit (80% or more, site-wide), exempt logins."""
    now = time.time()
    snapshot = obj.store().load_snapshot()
    exempt = obj.read(loginedit.exempt_logins)
    with state_store(obj).read() as state:
        frozen = [
            {
                "login": row.login,
                "limit": row.cause,
                "count": row.count,
                "by": row.frozen_by,
                "since": _utc(row.frozen_at),
                "until": _utc(row.until),
                "reason": row.reason,
            }
            for row in loginedit.frozen_rows(state, now)
        ]
        near = near_limits(snapshot, loginstate.read(state, now))
    if as_json:
        click.echo(json.dumps({"frozen": frozen, "near": near, "exempt": exempt}, indent=2))
        return
    for row in frozen:
        click.echo(
            f"{_shown(row['login'])}  frozen  {row['limit']} {row['count']}  since "
            f"{row['since']}  until {row['until']}  by {_shown(row['by'])}  "
            f"{_shown(row['reason'])}".rstrip()
        )
    for row in near:
        click.echo(f"{_shown(row['login'])}  near  {row['limit']} {row['count']} of {row['max']}")
    for name, comment in sorted(exempt.items()):
        click.echo(f"{name}  exempt  {comment}".rstrip())


@login.command("show")
@click.argument("login_name", metavar="LOGIN")
@pass_context
def login_show(obj: Context, login_name: str) -> None:
    """LOGIN's state, its count in each limit's window (site-wide), the client addresses."""
    now = time.time()
    key = loginedit.checked_login(login_name)
    snapshot = obj.store().load_snapshot()
    limits = limits_for(snapshot, key)
    exempt = obj.read(loginedit.exempt_logins)
    with state_store(obj).read() as state:
        frozen = {row.login: row for row in loginedit.frozen_rows(state, now)}.get(key)
        counts = loginedit.counts(state, key, _windows(limits), now)
    if frozen is not None:
        state_text = (
            f"frozen ({frozen.cause}, since {_utc(frozen.frozen_at)}, until "
            f"{_utc(frozen.until)}, by {_shown(frozen.frozen_by)})"
        )
    else:
        state_text = "exempt" if key in exempt else "counted"
    click.echo(f"login  {key}")
    click.echo(f"state  {state_text}")
    click.echo(f"action  {limits.action}{' (dry-run)' if limits.dry_run else ''}")
    for kind, limit in limits.limits:
        click.echo(f"{kind.value}  {counts.counts.get(kind.value, 0)} of {limit}")
    click.echo(f"clients  {', '.join(sorted(counts.clients)) or '-'}")
