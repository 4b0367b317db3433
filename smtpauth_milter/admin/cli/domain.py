"""Local domains."""

from __future__ import annotations

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.store import editing


@click.group()
def domain() -> None:
    """Local domains."""


@domain.command("add")
@click.argument("names", nargs=-1, required=True)
@pass_context
def domain_add(obj: Context, names: tuple[str, ...]) -> None:
    """Add local domains (IDN accepted in either form)."""
    with obj.write() as session:
        added = editing.add_domains(session, names)
    for name in added:
        click.echo(f"added {name}")


@domain.command("remove")
@click.argument("names", nargs=-1, required=True)
@pass_context
def domain_remove(obj: Context, names: tuple[str, ...]) -> None:
    """Remove local domains and their overrides."""
    with obj.write() as session:
        editing.remove_domains(session, names)


@domain.command("list")
@pass_context
def domain_list(obj: Context) -> None:
    """List local domains."""
    for name in obj.read(editing.list_domains):
        click.echo(name)
