"""Export and import the store."""

from __future__ import annotations

from typing import Any

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.store import transfer


@click.command("export")
@pass_context
def export_cmd(obj: Context) -> None:
    """Print the whole store as JSON (control and bidi characters as \\uXXXX escapes)."""
    # exact: on a newer schema it would leave out what this version does not know
    data = obj.read(transfer.export_store, exact=True)
    click.echo(logfmt.json_text(data))


@click.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@pass_context
def import_cmd(obj: Context, file: Any) -> None:
    """Replace the store's content with an export (one transaction)."""
    name = str(file.name)
    shown = logfmt.printable(name)
    transfer.check_source(name)
    try:
        text = file.read(transfer.MAX_CHARS + 1)  # /dev/zero would fill the memory
    except UnicodeDecodeError as exc:
        raise SmtpauthError(f"import: {shown} is not JSON: {exc}") from exc
    if len(text) > transfer.MAX_CHARS:
        raise SmtpauthError(f"import: {shown} is larger than any export ({transfer.MAX_TEXT})")
    data = transfer.parse(text, name)
    with obj.write() as session:
        transfer.import_store(session, data, source=name)
    click.echo(f"imported {shown}")
