"""Send-as grants."""

from __future__ import annotations

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.core import logfmt
from smtpauth_milter.core.snapshot import ANYONE
from smtpauth_milter.store import editing


@click.group()
def sender() -> None:
    """Send-as grants: which login may use which sender."""


@sender.command("allow")
@click.argument("login")
@click.argument("target", metavar="ADDRESS|@DOMAIN|'*'")
@pass_context
def sender_allow(obj: Context, login: str, target: str) -> None:
    """Let LOGIN send as ADDRESS, as anyone @DOMAIN, or ('*') as anyone at all.

    '*' is for a relay or application login; sender list and doctor warn about it.
    """
    with obj.write() as session:
        pair = editing.allow(session, login, target)
    click.echo(f"{pair[0]} may send as {'anyone' if pair[1] == ANYONE else pair[1]}")


@sender.command("revoke")
@click.argument("login")
@click.argument("target", metavar="ADDRESS|@DOMAIN|'*'")
@pass_context
def sender_revoke(obj: Context, login: str, target: str) -> None:
    """Remove a send-as grant."""
    with obj.write() as session:
        editing.revoke(session, login, target)


@sender.command("list")
@click.option("--login", metavar="L", help="Only the grants of login L.")
@pass_context
def sender_list(obj: Context, login: str | None) -> None:
    """List send-as grants; each '*' grant also as a warning line on stderr."""
    for grant_login, target in obj.read(lambda s: editing.list_grants(s, login)):
        click.echo(logfmt.printable(f"{grant_login}  {target}"))
        if target == ANYONE:
            warning = logfmt.printable(f"login {grant_login} may send as anyone ('*' grant)")
            click.echo(f"smtpauth-milter: warning: {warning}", err=True)
