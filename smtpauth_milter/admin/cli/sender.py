"""Send-as grants."""

from __future__ import annotations

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.store import editing


@click.group()
def sender() -> None:
    """Send-as grants: which login may use which sender."""


@sender.command("allow")
@click.argument("login")
@click.argument("target", metavar="ADDRESS|@DOMAIN")
@pass_context
def sender_allow(obj: Context, login: str, target: str) -> None:
    """Let LOGIN send as ADDRESS, or as anyone @DOMAIN."""
    with obj.write() as session:
        pair = editing.allow(session, login, target)
    click.echo(f"{pair[0]} may send as {pair[1]}")


@sender.command("revoke")
@click.argument("login")
@click.argument("target", metavar="ADDRESS|@DOMAIN")
@pass_context
def sender_revoke(obj: Context, login: str, target: str) -> None:
    """Remove a send-as grant."""
    with obj.write() as session:
        editing.revoke(session, login, target)


@sender.command("list")
@click.option("--login", metavar="L", help="Only the grants of login L.")
@pass_context
def sender_list(obj: Context, login: str | None) -> None:
    """List send-as grants."""
    for grant_login, target in obj.read(lambda s: editing.list_grants(s, login)):
        click.echo(f"{grant_login}  {target}")
