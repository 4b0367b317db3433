"""Local domains, alias domains, and copying them from Postfix."""

from __future__ import annotations

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.core import logfmt
from smtpauth_milter.store import editing


@click.group()
def domain() -> None:
    """Local domains."""


@domain.command("add")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--alias-of",
    metavar="TARGET",
    help="Make NAMES alias domains of the local domain TARGET: whoever owns x@TARGET "
    "owns x@NAME, and NAME uses TARGET's settings where it has no override of its own. "
    "An existing domain is turned into an alias. One level only: TARGET is no alias.",
)
@pass_context
def domain_add(obj: Context, names: tuple[str, ...], alias_of: str | None) -> None:
    """Add local domains (IDN accepted in either form)."""
    added: list[tuple[str, str | None]]
    with obj.write() as session:
        if alias_of is None:
            added = [(name, None) for name in editing.add_domains(session, names)]
            target = None
        else:
            added = editing.add_alias_domains(session, names, alias_of)
            target = editing.local_domain(alias_of)
    for name, before in added:
        relation = f"  alias of {target}" if target else ""
        click.echo(
            f"added {name}{relation}" if before is None else f"{name}{relation} (was {before})"
        )


@domain.command("remove")
@click.argument("names", nargs=-1, required=True)
@pass_context
def domain_remove(obj: Context, names: tuple[str, ...]) -> None:
    """Remove local domains and their overrides (a target only together with its aliases)."""
    with obj.write() as session:
        editing.remove_domains(session, names)


@domain.command("list")
@pass_context
def domain_list(obj: Context) -> None:
    """List local domains; an alias domain as NAME  alias of TARGET."""
    names, aliases = obj.read(lambda s: (editing.list_domains(s), editing.domain_aliases(s)))
    for name in names:
        shown = f"{name}  alias of {aliases[name]}" if name in aliases else name
        click.echo(logfmt.printable(shown))


@domain.command("sync")
@click.option(
    "--from-postfix",
    is_flag=True,
    help="Read mydestination, virtual_mailbox_domains and virtual_alias_domains "
    "(postconf -x: $name references expanded).",
)
@click.option(
    "--config-dir",
    metavar="DIR",
    help="Postfix's configuration directory, as postconf -c.  "
    "[default: the postfix-config-dir setting, else postconf -h config_directory]",
)
@click.option("--remove", is_flag=True, help="Also remove local domains Postfix no longer has.")
@click.option("--dry-run", is_flag=True, help="Print the difference, change nothing.")
@pass_context
def domain_sync(
    obj: Context, from_postfix: bool, config_dir: str | None, remove: bool, dry_run: bool
) -> None:
    """Add the domains Postfix delivers for; print the difference.

    Literal names and /file lists are read; for a lookup table (hash:, ldap:, ...)
    it says it could not list it. A local domain Postfix does not list is only
    removed with --remove, and kept when a table it could not list may hold it.
    """
    from smtpauth_milter.admin import domainsync

    if not from_postfix:
        raise click.UsageError("say where the domains come from: --from-postfix")
    directory, sync = domainsync.from_postfix(obj.store().load_snapshot(), config_dir)
    if not dry_run and sync.changes(remove):
        with obj.write() as session:
            domainsync.apply(session, sync, remove, f"postfix:{directory}")
    for line in domainsync.report(sync, remove, dry_run):
        click.echo(logfmt.printable(line))
