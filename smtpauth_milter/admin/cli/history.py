"""The audit trail."""

from __future__ import annotations

from datetime import UTC, datetime

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.store import audit, editing


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return audit.parse_since(value, datetime.now(UTC))
    except SmtpauthError as exc:
        raise click.BadParameter(str(exc)) from exc


@click.command("history")
@click.option(
    "--domain",
    "domain_name",
    metavar="D",
    help="Only changes about domain D: the domain itself, its overrides, grants to it.",
)
@click.option(
    "--since",
    callback=_since,
    metavar="T",
    help="Only changes since T: an ISO date or datetime (UTC unless it says otherwise), "
    "or an age like 30m, 2h, 7d, 2w.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def history_cmd(
    obj: Context, domain_name: str | None, since: datetime | None, as_json: bool
) -> None:
    """Show the audit trail: when, which OS user, which command, old and new value.

    Control and bidi characters are escaped (\\uXXXX in JSON)."""
    wanted = editing.local_domain(domain_name) if domain_name is not None else None
    entries = obj.read(lambda s: audit.history(s, domain=wanted, since=since))
    if as_json:
        rows = [entry.as_json() for entry in entries]
        click.echo(logfmt.json_text({"entries": rows}))
        return
    for entry in entries:
        click.echo(entry.line())
