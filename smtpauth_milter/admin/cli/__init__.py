"""The ``smtpauth-milter`` command line. Thin: parse, call, print.

One module per command group; this one holds the root group and the entry
point.  Every error a user can cause prints one line on stderr and exits 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import click

from smtpauth_milter import __version__
from smtpauth_milter.admin.cli import (
    admins,
    check,
    console,
    db,
    doctor,
    domain,
    history,
    login,
    network,
    run,
    sender,
    settings,
    transfer,
)
from smtpauth_milter.admin.cli.context import EXIT_ERROR, Context
from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.daemon.config import choose_store


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--db",
    metavar="URL",
    envvar="SMTPAUTH_MILTER_DB",
    show_envvar=True,
    help="Store URL: sqlite:///PATH or postgresql+psycopg://USER:PASS@HOST/DB.",
)
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    envvar="SMTPAUTH_MILTER_CONFIG",
    show_envvar=True,
    help="TOML config file (keys: db, socket, max-stale, ...).  [default: "
    "/etc/smtpauth-milter/smtpauth-milter.toml when it exists]",
)
@click.version_option(__version__, prog_name="smtpauth-milter")
@click.pass_context
def cli(ctx: click.Context, db: str | None, config_file: str | None) -> None:
    """Refuse mail sent as a local user by anyone not logged in as that user."""
    choice = choose_store(db, config_file, os.environ)
    ctx.obj = Context(
        db=choice.db,
        file=dict(choice.file),
        file_path=choice.file_path,
        db_flag=db,
        config_file=config_file,
    )
    ctx.call_on_close(lambda: ctx.obj._store.dispose() if ctx.obj._store else None)


cli.add_command(run.run)
cli.add_command(db.db)
cli.add_command(domain.domain)
cli.add_command(settings.settings)
cli.add_command(sender.sender)
cli.add_command(network.network)
cli.add_command(check.check)
cli.add_command(doctor.doctor)
cli.add_command(transfer.export_cmd)
cli.add_command(transfer.import_cmd)
cli.add_command(history.history_cmd)
cli.add_command(admins.admin)
cli.add_command(console.console)
cli.add_command(login.login)


def run_cli(args: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status; errors become one line on stderr."""
    try:
        result = cli.main(args=args, prog_name="smtpauth-milter", standalone_mode=False)
    except SmtpauthError as exc:
        _error(str(exc))
        return EXIT_ERROR
    except click.ClickException as exc:
        _error(exc.format_message())
        return EXIT_ERROR if exc.exit_code == 1 else exc.exit_code
    except click.exceptions.Abort:
        click.echo("smtpauth-milter: aborted", err=True)
        return EXIT_ERROR
    except OSError as exc:
        _error(str(exc))
        return EXIT_ERROR
    return result if isinstance(result, int) else 0


def _error(message: str) -> None:
    """One line, whatever the message quotes (a file name with a newline, an escape)."""
    click.echo(f"smtpauth-milter: error: {logfmt.printable(message)}", err=True)


def main(args: Sequence[str] | None = None) -> None:
    sys.exit(run_cli(args))
