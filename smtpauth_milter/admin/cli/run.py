"""Run the milter."""

from __future__ import annotations

from typing import Any

import click
from click.core import ParameterSource

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.daemon.config import RunConfig


@click.command()
@click.option(
    "--socket",
    metavar="SPEC",
    envvar="SMTPAUTH_MILTER_SOCKET",
    help="inet:PORT@HOST, inet6:PORT@HOST or unix:/path  [default: inet:8894@127.0.0.1]",
)
@click.option(
    "--max-stale",
    type=float,
    metavar="S",
    envvar="SMTPAUTH_MILTER_MAX_STALE",
    help="Seconds to keep deciding from the last good settings when the store is "
    "unreadable; then tempfail.  [default: 300]",
)
@click.option(
    "--refresh",
    type=float,
    metavar="S",
    envvar="SMTPAUTH_MILTER_REFRESH",
    help="Seconds between checks of the store for changes.  [default: 0.5]",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    envvar="SMTPAUTH_MILTER_LOG_LEVEL",
    help="[default: info]",
)
@click.option("--syslog/--no-syslog", default=None, help="Log to syslog (facility mail).")
@click.option(
    "--user",
    metavar="NAME",
    envvar="SMTPAUTH_MILTER_USER",
    help="Started as root: open the socket, then run as user NAME. The store must be "
    "readable by NAME.",
)
@click.option(
    "--group",
    metavar="NAME",
    envvar="SMTPAUTH_MILTER_GROUP",
    help="With --user: run as group NAME (e.g. the MTA's group); a unix socket is "
    "owned by USER:NAME, mode 0660.  [default: NAME's primary group]",
)
@click.option(
    "--metrics",
    metavar="HOST:PORT",
    envvar="SMTPAUTH_MILTER_METRICS",
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (':PORT': every interface).",
)
@click.option(
    "--log-format",
    type=click.Choice(["logfmt", "json"], case_sensitive=False),
    envvar="SMTPAUTH_MILTER_LOG_FORMAT",
    help="logfmt lines, or one JSON object per line.  [default: logfmt]",
)
@pass_context
def run(obj: Context, /, **flags: Any) -> None:
    """Run the milter in the foreground."""
    from smtpauth_milter.daemon.server import run as serve  # imports pymilter only for this command

    ctx = click.get_current_context()
    origins = {
        param.name: f"environment {param.envvar}"
        for param in ctx.command.params
        if param.name and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT
    }
    file_name = f"config file {obj.file_path}"
    serve(RunConfig.resolve(obj.db, flags, obj.file, origins, file_name))
