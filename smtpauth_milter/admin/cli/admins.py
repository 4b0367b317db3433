"""Accounts of the web console (``admin``): passwords from a prompt or stdin, never argv."""

from __future__ import annotations

import sys

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.admin.console import extra
from smtpauth_milter.core import logfmt
from smtpauth_milter.store import accounts


def _password() -> str:
    """A new password: typed twice at a terminal, else the first line of stdin."""
    extra.require("admin")
    from smtpauth_milter.admin.console import passwords  # the extra is there

    if sys.stdin.isatty():
        typed: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        typed = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    return passwords.hash_password(typed)


@click.group()
def admin() -> None:
    """Accounts of the web console: server admins and domain admins."""


@admin.command("add")
@click.argument("name")
@click.option(
    "--domain",
    "domains",
    multiple=True,
    metavar="D",
    help="A domain this admin manages (repeat it); without any: a server admin.",
)
@pass_context
def admin_add(obj: Context, name: str, domains: tuple[str, ...]) -> None:
    """Add console admin NAME; the password is read from the terminal or stdin."""
    accounts.admin_name(name)
    hashed = _password()
    with obj.write() as session:
        account = accounts.add_admin(session, name, hashed, domains)
    click.echo(logfmt.printable(f"added {account.name} ({account.describe()})"))


@admin.command("passwd")
@click.argument("name")
@pass_context
def admin_passwd(obj: Context, name: str) -> None:
    """Set NAME's password (from the terminal or stdin); its sessions end."""
    accounts.admin_name(name)
    hashed = _password()
    with obj.write() as session:
        accounts.set_password(session, name, hashed)


@admin.command("remove")
@click.argument("name")
@pass_context
def admin_remove(obj: Context, name: str) -> None:
    """Remove console admin NAME; its sessions end."""
    with obj.write() as session:
        accounts.remove_admin(session, name)


@admin.command("list")
@pass_context
def admin_list(obj: Context) -> None:
    """List console admins, their roles and domains."""
    for account in obj.read(accounts.list_admins):
        click.echo(logfmt.printable(f"{account.name}  {account.describe()}"))
