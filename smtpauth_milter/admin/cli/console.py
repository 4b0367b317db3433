"""``smtpauth-milter console``: the web console, its own process on the same store."""

from __future__ import annotations

import socket

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.admin.console import extra
from smtpauth_milter.core.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:8895"


def _listen(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return host, int(port)


@click.command("console")
@click.option(
    "--listen",
    default=DEFAULT_LISTEN,
    show_default=True,
    callback=_listen,
    envvar="SMTPAUTH_MILTER_CONSOLE_LISTEN",
    show_envvar=True,
    metavar="HOST:PORT",
    help="Where the console listens (keep it on loopback behind a reverse proxy).",
)
@click.option(
    "--behind-https",
    is_flag=True,
    envvar="SMTPAUTH_MILTER_CONSOLE_BEHIND_HTTPS",
    show_envvar=True,
    help="Browsers reach it through HTTPS (a reverse proxy): cookies are marked Secure.",
)
@click.option(
    "--idle-timeout",
    default=30,
    show_default=True,
    type=click.IntRange(1, 24 * 60),
    metavar="MINUTES",
    help="A session unused this long ends.",
)
@pass_context
def console(obj: Context, listen: tuple[str, int], behind_https: bool, idle_timeout: int) -> None:
    """Run the web console (needs the console extra)."""
    extra.require("console")
    import uvicorn

    from smtpauth_milter.admin.cli.login import state_store
    from smtpauth_milter.admin.console.app import create_app, make_console

    store = obj.store(exact=True)
    state = state_store(obj)
    app = create_app(
        make_console(
            store,
            secure=behind_https,
            idle_timeout=idle_timeout * 60.0,
            state=None if state is store else state,
        )
    )
    host, port = listen
    listening = _listen_on(host, port)
    click.echo(f"console listening on http://{host}:{port}/", err=True)
    config = uvicorn.Config(app, log_level="info", access_log=False, proxy_headers=True)
    uvicorn.Server(config).run(sockets=[listening])


def _listen_on(host: str, port: int) -> socket.socket:
    """The console's socket, bound here so that a taken port is one line and exit 2."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
        listening.listen(128)
    except OSError as exc:
        listening.close()
        raise ConfigError(f"the console cannot listen on {host}:{port}: {exc.strerror}") from exc
    return listening
