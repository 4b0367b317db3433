"""Check the whole installation."""

from __future__ import annotations

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.daemon.config import pick


@click.command()
@click.option(
    "--postfix-config",
    metavar="DIR",
    help="Postfix's configuration directory.  [default: the postfix-config-dir setting, "
    "else postconf -h config_directory]",
)
@click.option(
    "--socket",
    metavar="SPEC",
    envvar="SMTPAUTH_MILTER_SOCKET",
    help="The milter's socket, as given to run --socket.  [default: as for run]",
)
@pass_context
def doctor(obj: Context, postfix_config: str | None, socket: str | None) -> None:
    """Check Postfix, the socket and the store. Exit 0 fine, 1 warnings, 2 errors."""
    from smtpauth_milter.admin.doctor import diagnose
    from smtpauth_milter.admin.doctor.checks import exit_status
    from smtpauth_milter.daemon.config import DEFAULT_SOCKET, check_socket

    spec = check_socket(str(pick(socket, obj.file, "socket", DEFAULT_SOCKET)))
    findings = diagnose(obj.db, spec, postfix_config)
    for finding in findings:
        click.echo(finding.line())
    click.get_current_context().exit(exit_status(findings))
