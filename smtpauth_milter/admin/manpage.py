"""Render the click command tree as the roff man page smtpauth-milter(8).

Regenerate the committed page with::

    python -m smtpauth_milter.admin.manpage > man/smtpauth-milter.8

A test regenerates it and compares, so the page cannot drift from ``--help``.
The output is deterministic: no build date, only the version.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import click

from smtpauth_milter import __version__
from smtpauth_milter.admin.cli import cli

PROG = "smtpauth-milter"

DESCRIPTION = f"""\
{PROG} is a milter for Postfix and Sendmail that refuses mail sent as a local
user by anyone who has not logged in (SMTP AUTH) as that user.

Settings live in a SQLite file or a PostgreSQL database: global values with
per-domain overrides, send-as grants and trusted networks. They are edited with
the commands below, and every running milter picks up a change within seconds,
without a restart. Every change made with the command line or import is
recorded in the store's audit trail; the history command shows it.

The milter answers from an in-memory copy of the settings. When the store
cannot be read it keeps deciding from the last good copy for --max-stale
seconds, then tempfails; it never answers 5xx for its own faults."""

EXIT_STATUS = """\
0 on success; check exits 1 when some recipient would not continue;
2 on bad input or an unreachable store, with one line on standard error."""

FILES = """\
/var/lib/smtpauth-milter/store.sqlite
The default store when run as root; created by db init, mode 0640. The install
command makes it root:smtpauth-milter: the milter reads it, only root writes it.

/var/lib/smtpauth-milter/state/state.sqlite
The milter's counts and freezes (config key state), made by the install command:
smtpauth-milter's own, mode 0640 in a 0750 directory, the one the unit may write.

$XDG_DATA_HOME/smtpauth-milter/store.sqlite
The default store of any other user (~/.local/share/smtpauth-milter/store.sqlite).

/etc/smtpauth-milter/smtpauth-milter.toml
The config file every command reads when it exists, unless --config or
SMTPAUTH_MILTER_CONFIG names another (see contrib/smtpauth-milter.toml).

/opt/smtpauth-milter, /etc/systemd/system/smtpauth-milter.service
The venv and the unit of the production install on Debian 12
(python3 -m smtpauth_milter.admin.install; docs/operations.md)."""

SEE_ALSO = ["journalctl(1)", "postconf(5)", "postfix(1)", "sendmail(8)", "systemd.service(5)"]


def escape(text: str) -> str:
    """Text safe in a roff line: backslashes, and a leading dot or quote, escaped."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines()
    )


def _paragraphs(text: str) -> Iterator[str]:
    for block in inspect.cleandoc(text).replace("\b\n", "").split("\n\n"):
        if block.strip():
            yield ".PP"
            yield escape(" ".join(block.split()))


def _file_entries(text: str) -> Iterator[str]:
    for block in text.split("\n\n"):
        path, _, meaning = block.partition("\n")
        yield ".TP"
        yield f"\\fB{escape(path)}\\fR"
        yield escape(" ".join(meaning.split()))


def _options(ctx: click.Context) -> Iterator[str]:
    for param in ctx.command.get_params(ctx):
        if isinstance(param, click.Argument):
            continue  # named in the usage line
        if ctx.parent is not None and param is ctx.command.get_help_option(ctx):
            continue  # every command has -h/--help; said once, under GLOBAL OPTIONS
        record = param.get_help_record(ctx)
        if record is None:
            continue
        opts, help_text = record
        yield ".TP"
        yield f"\\fB{escape(opts)}\\fR"
        if help_text:
            yield escape(" ".join(help_text.split()))


def _commands(ctx: click.Context) -> Iterator[click.Context]:
    """Every command below ``ctx``, depth first, in click's (alphabetical) order."""
    group = ctx.command
    if not isinstance(group, click.Group):
        return
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub = click.Context(command, info_name=name, parent=ctx)
        yield sub
        yield from _commands(sub)


def _usage(ctx: click.Context) -> str:
    return " ".join([ctx.command_path, *ctx.command.collect_usage_pieces(ctx)])


def _environment(ctx: click.Context) -> Iterator[str]:
    seen: dict[str, str] = {}
    for sub in [ctx, *_commands(ctx)]:
        for param in sub.command.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str) and envvar not in seen:
                flags = ", ".join(o for o in param.opts if o.startswith("--"))
                where = "" if sub is ctx else f" of {sub.command_path.removeprefix(PROG + ' ')}"
                seen[envvar] = f"The default of {flags}{where}."
    for envvar, meaning in seen.items():
        yield ".TP"
        yield f"\\fB{envvar}\\fR"
        yield escape(meaning)


def render() -> str:
    """The whole man page as roff text."""
    root = click.Context(cli, info_name=PROG, **cli.context_settings)
    lines = [
        f'.TH SMTPAUTH\\-MILTER 8 "" "{PROG} {__version__}" "System Administration"',
        ".nh",
        ".ad l",
        ".SH NAME",
        f"{escape(PROG)} \\- {escape(cli.help or '').rstrip('.').lower()}",
        ".SH SYNOPSIS",
        f"\\fB{escape(PROG)}\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
    ]
    for sub in _commands(root):
        if not isinstance(sub.command, click.Group):
            lines += [".br", escape(_usage(sub))]
    lines += [".SH DESCRIPTION", *_paragraphs(DESCRIPTION)]
    lines += [".SH GLOBAL OPTIONS", *_options(root)]
    lines += [".SH COMMANDS"]
    for sub in _commands(root):
        lines += [f'.SS "{escape(_usage(sub))}"', *_paragraphs(sub.command.help or "")]
        lines += _options(sub)
    lines += [".SH EXIT STATUS", *_paragraphs(EXIT_STATUS)]
    lines += [".SH ENVIRONMENT", *_environment(root)]
    lines += [".SH FILES", *_file_entries(FILES)]
    references = [ref.replace("(", "\\fR(") for ref in SEE_ALSO]
    lines += [".SH SEE ALSO", ",\n".join(f"\\fB{ref}" for ref in references)]
    return "\n".join(lines) + "\n"


def main() -> None:
    click.echo(render(), nl=False)


if __name__ == "__main__":
    main()
