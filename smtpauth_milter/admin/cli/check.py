"""Explain a decision."""

from __future__ import annotations

import json

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.admin.explain import explain
from smtpauth_milter.lookups.ownership import OwnershipMaps


@click.command()
@click.option("--client", metavar="IP", help="The client's IP address.")
@click.option("--login", metavar="LOGIN", help="The SASL login; omit for no login.")
@click.option("--from", "sender", required=True, metavar="ADDR", help="MAIL FROM ('' for <>).")
@click.option(
    "--rcpt", "rcpts", required=True, multiple=True, metavar="ADDR", help="RCPT TO; repeatable."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def check(
    obj: Context,
    client: str | None,
    login: str | None,
    sender: str,
    rcpts: tuple[str, ...],
    as_json: bool,
) -> None:
    """Explain what the milter would answer, per recipient. Exit 0 when all continue."""
    snapshot = obj.store().load_snapshot()
    report = explain(snapshot, client, login, sender, rcpts, OwnershipMaps())
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        for text in report.lines():
            click.echo(text)
    click.get_current_context().exit(0 if report.all_continue else 1)
