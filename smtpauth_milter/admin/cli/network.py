"""Trusted networks."""

from __future__ import annotations

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.core import logfmt
from smtpauth_milter.store import editing


@click.group()
def network() -> None:
    """Trusted networks, exempt from every check."""


@network.command("add")
@click.argument("cidr")
@click.option("--comment", default="", metavar="TEXT", help="Why it is trusted (shown by list).")
@pass_context
def network_add(obj: Context, cidr: str, comment: str) -> None:
    """Trust clients in CIDR (IPv4 or IPv6)."""
    with obj.write() as session:
        click.echo(f"trusted {editing.add_network(session, cidr, comment)}")


@network.command("remove")
@click.argument("cidr")
@pass_context
def network_remove(obj: Context, cidr: str) -> None:
    """Stop trusting CIDR."""
    with obj.write() as session:
        editing.remove_network(session, cidr)


@network.command("list")
@pass_context
def network_list(obj: Context) -> None:
    """List trusted networks."""
    for cidr, comment in obj.read(editing.list_networks):
        click.echo(logfmt.printable(f"{cidr}  {comment}".rstrip()))
