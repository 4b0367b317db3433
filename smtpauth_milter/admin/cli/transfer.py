"""Export and import the store."""

from __future__ import annotations

import json
from typing import Any

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.store import transfer


@click.command("export")
@pass_context
def export_cmd(obj: Context) -> None:
    """Print the whole store as JSON."""
    # exact: on a newer schema it would leave out what this version does not know
    data = obj.read(transfer.export_store, exact=True)
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@pass_context
def import_cmd(obj: Context, file: Any) -> None:
    """Replace the store's content with an export (one transaction)."""
    try:
        data = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SmtpauthError(f"import: {file.name} is not JSON: {exc}") from exc
    with obj.write() as session:
        transfer.import_store(session, data, source=file.name)
    click.echo(f"imported {file.name}")
