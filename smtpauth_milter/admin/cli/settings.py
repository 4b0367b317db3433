"""Settings and overrides."""

from __future__ import annotations

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.core import logfmt
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.lookups.mapfiles import MAPS, probe_sql_maps
from smtpauth_milter.store import editing


@click.group()
def settings() -> None:
    """Global settings and per-domain overrides."""


@settings.command("show")
@click.option("--domain", "domain_name", metavar="D", help="Show what is in force for domain D.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def settings_show(obj: Context, domain_name: str | None, as_json: bool) -> None:
    """Print every effective value and where it comes from."""
    shown = obj.read(lambda s: editing.show_settings(s, domain_name))
    if as_json:
        rows = {row.key: {"value": row.value, "source": row.source.value} for row in shown}
        click.echo(logfmt.json_text({"domain": domain_name, "settings": rows}))
        return
    width = max(len(row.key) for row in shown)
    for row in shown:
        click.echo(logfmt.printable(f"{row.key:<{width}}  {row.source.value:<7}  {row.value}"))


@settings.command("set")
@click.option("--domain", "domain_name", metavar="D", help="Override for domain D only.")
@click.argument("key")
@click.argument("value")
@pass_context
def settings_set(obj: Context, domain_name: str | None, key: str, value: str) -> None:
    """Set KEY to VALUE, globally or for one domain."""
    if key == MAPS and domain_name is None:  # asked before the write lock is taken
        timeout = Settings.resolve(obj.read(editing.global_values)).sender_login_maps_timeout
        probe_sql_maps(value, timeout)
    with obj.write() as session:
        stored = editing.set_setting(session, key, value, domain_name)
    click.echo(f"{key} = {stored}" + (f" for {domain_name}" if domain_name else ""))


@settings.command("unset")
@click.option("--domain", "domain_name", metavar="D", help="Remove domain D's override.")
@click.argument("key")
@pass_context
def settings_unset(obj: Context, domain_name: str | None, key: str) -> None:
    """Return KEY to its default (or, with --domain, to the global value)."""
    with obj.write() as session:
        editing.unset_setting(session, key, domain_name)
