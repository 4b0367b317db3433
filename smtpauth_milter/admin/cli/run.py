"""Run the milter."""

from __future__ import annotations

import os
from typing import Any

import click
from click.core import ParameterSource

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.daemon.config import RunConfig, choose_store


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
    "readable by NAME. Without it, root keeps serving (a warning is logged).",
)
@click.option(
    "--allow-root",
    is_flag=True,
    default=None,
    help="Let --user name root (uid 0); without it that is refused.",
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
    help="Serve Prometheus metrics at http://HOST:PORT/metrics (':PORT': 127.0.0.1; "
    "'0.0.0.0:PORT': every interface).",
)
@click.option(
    "--log-format",
    type=click.Choice(["logfmt", "json"], case_sensitive=False),
    envvar="SMTPAUTH_MILTER_LOG_FORMAT",
    help="logfmt lines, or one JSON object per line.  [default: logfmt]",
)
@click.option(
    "--auto-restart/--no-auto-restart",
    default=None,
    help="Keep a supervising parent process that restarts the milter within a second "
    "when it crashes (config key auto-restart).  [default: on]",
)
@click.option(
    "--state",
    metavar="URL",
    envvar="SMTPAUTH_MILTER_STATE",
    help="Store URL where the milter writes login counts and freezes, the only tables it "
    "writes (config key state).  [default: the store itself]",
)
@pass_context
def run(obj: Context, /, **flags: Any) -> int:
    """Run the milter in the foreground.

    SIGHUP or SIGUSR1 reloads: re-reads the config file, applies log-level,
    log-format, syslog, max-stale and refresh, and polls the store at once.
    SIGTERM or SIGINT stops.
    """
    from smtpauth_milter.daemon.server import run as serve  # imports pymilter only for this command

    ctx = click.get_current_context()
    origins = {
        param.name: f"environment {param.envvar}"
        for param in ctx.command.params
        if param.name and ctx.get_parameter_source(param.name) is ParameterSource.ENVIRONMENT
    }

    def reread() -> RunConfig:
        """The same rules as at start: the file (default or named) read again."""
        choice = choose_store(obj.db_flag, obj.config_file, os.environ)
        return RunConfig.resolve(
            choice.db, flags, choice.file, origins, f"config file {choice.file_path}"
        )

    first = RunConfig.resolve(obj.db, flags, obj.file, origins, f"config file {obj.file_path}")
    return serve(first, reread)
