"""Explain a decision."""

from __future__ import annotations

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.admin.cli.login import with_login_limits
from smtpauth_milter.admin.explain import Headers, explain
from smtpauth_milter.core import logfmt
from smtpauth_milter.lookups.ownership import OwnershipMaps
from smtpauth_milter.lookups.spf import SpfChecks


@click.command()
@click.option("--client", metavar="IP", help="The client's IP address.")
@click.option("--login", metavar="LOGIN", help="The SASL login; omit for no login.")
@click.option("--from", "sender", required=True, metavar="ADDR", help="MAIL FROM ('' for <>).")
@click.option("--rcpt", "rcpts", multiple=True, metavar="ADDR", help="RCPT TO; repeatable.")
@click.option(
    "--header-from",
    "header_froms",
    multiple=True,
    metavar="VALUE",
    help="The raw value of one From: header field, as the message has it (display name, "
    "several addresses and groups allowed); repeat it for a message with several From: "
    "fields. Adds the end-of-headers decision.",
)
@click.option(
    "--no-header-from",
    is_flag=True,
    help="Add the end-of-headers decision for a message without a From: field.",
)
@click.option(
    "--header-sender",
    "header_senders",
    multiple=True,
    metavar="VALUE",
    help="The raw value of one Sender: header field; repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def check(
    obj: Context,
    client: str | None,
    login: str | None,
    sender: str,
    rcpts: tuple[str, ...],
    header_froms: tuple[str, ...],
    no_header_from: bool,
    header_senders: tuple[str, ...],
    as_json: bool,
) -> None:
    """Explain what the milter would answer, per recipient and at end of headers.

    Exit 0 when all continue (would-reject included), 1 when something is refused.
    When SPF could change a verdict (spf-exempt), it is looked up as the milter
    would, and the result and the sender domain's SPF record are shown.
    """
    headers = _headers(header_froms, no_header_from, header_senders)
    if not rcpts and headers is None:
        raise click.UsageError("give --rcpt, --header-from or --no-header-from")
    snapshot = obj.store().load_snapshot()
    spf, maps = SpfChecks(), OwnershipMaps(probe=False)
    try:
        report = explain(snapshot, client, login, sender, rcpts, spf, headers, maps)
    finally:
        spf.stop()
        maps.stop()
    if login:
        report = with_login_limits(obj, snapshot, report)
    if as_json:
        click.echo(logfmt.json_text(report.as_json()))
    else:
        for text in report.lines():
            click.echo(text)
    click.get_current_context().exit(0 if report.all_continue else 1)


def _headers(froms: tuple[str, ...], no_from: bool, senders: tuple[str, ...]) -> Headers | None:
    if froms and no_from:
        raise click.UsageError("--header-from and --no-header-from exclude each other")
    if senders and not (froms or no_from):
        raise click.UsageError("--header-sender needs --header-from or --no-header-from")
    return Headers(froms, senders) if froms or no_from else None
