"""The ``smtpauth-milter`` command line. Thin: parse, call, print.

Every error a user can cause prints one line on stderr and exits 2.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from sqlalchemy.orm import Session

from smtpauth_milter import __version__
from smtpauth_milter.admin.explain import explain
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.daemon.config import RunConfig, default_db_url, pick, read_file
from smtpauth_milter.store import audit, editing, transfer
from smtpauth_milter.store.engine import Store

T = TypeVar("T")
EXIT_ERROR = 2


@dataclass
class Context:
    db: str
    file: dict[str, Any]
    _store: Store | None = None

    def store(self, *, prepare: bool = True) -> Store:
        if self._store is None:
            self._store = Store(self.db)
            if prepare:
                self._store.prepare()
        return self._store

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction, its changes recorded in the audit trail as this command's."""
        store = self.store()
        command = command_line(click.get_current_context())
        password = store.url.password
        if isinstance(password, str) and password:
            command = command.replace(password, "***")
        with store.write() as session:
            audit.begin(session, audit.Actor.now(command))
            yield session

    def read(self, action: Callable[[Session], T]) -> T:
        with self.store().read() as session:
            return action(session)


pass_context = click.make_pass_decorator(Context)


def command_line(ctx: click.Context) -> str:
    """The subcommand as typed, for the audit trail: without the group's --db/--config."""
    words = ctx.command_path.split()[1:]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        values = value if isinstance(value, tuple) else (value,)
        texts = [str(getattr(v, "name", v)) for v in values if v is not None]
        if isinstance(param, click.Option):
            if value is None or value == param.default or value is False:
                continue
            flag = max(param.opts, key=len)
            words += [flag] if value is True else [w for t in texts for w in (flag, t)]
        else:
            words += texts
    return shlex.join(words)


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
    help="TOML config file (keys: db, socket, max-stale, ...).",
)
@click.version_option(__version__, prog_name="smtpauth-milter")
@click.pass_context
def cli(ctx: click.Context, db: str | None, config_file: str | None) -> None:
    """Refuse mail sent as a local user by anyone not logged in as that user."""
    file = read_file(config_file)
    ctx.obj = Context(db=str(pick(db, file, "db", default_db_url())), file=file)
    ctx.call_on_close(lambda: ctx.obj._store.dispose() if ctx.obj._store else None)


# --- run ---------------------------------------------------------------------


@cli.command()
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

    serve(RunConfig.resolve(obj.db, flags, obj.file))


# --- db ----------------------------------------------------------------------


@cli.group()
def db() -> None:
    """Schema migrations of the store."""


@db.command("upgrade")
@pass_context
def db_upgrade(obj: Context) -> None:
    """Migrate the store to this version's schema."""
    store = obj.store(prepare=False)
    store.upgrade()
    click.echo(f"store {store.display} is at schema {store.current()}")


@db.command("current")
@pass_context
def db_current(obj: Context) -> None:
    """Print the store's schema revision and this version's."""
    store = obj.store(prepare=False)
    click.echo(f"store: {store.current() or 'none'}  code: {store.head()}")


@db.command("check")
@pass_context
def db_check(obj: Context) -> None:
    """Check the store is at this version's schema and matches the models."""
    store = obj.store(prepare=False)
    current, head = store.current(), store.head()
    if current != head:
        raise SmtpauthError(
            f"store is at schema {current or 'none'}, code needs {head}: "
            "run `smtpauth-milter db upgrade`"
        )
    drift = store.drift()
    if drift:
        raise SmtpauthError(f"store schema differs from the models: {drift}")
    click.echo(f"store {store.display} is at schema {head} and matches the models")


# --- domain ------------------------------------------------------------------


@cli.group()
def domain() -> None:
    """Local domains."""


@domain.command("add")
@click.argument("names", nargs=-1, required=True)
@pass_context
def domain_add(obj: Context, names: tuple[str, ...]) -> None:
    """Add local domains (IDN accepted in either form)."""
    with obj.write() as session:
        added = editing.add_domains(session, names)
    for name in added:
        click.echo(f"added {name}")


@domain.command("remove")
@click.argument("names", nargs=-1, required=True)
@pass_context
def domain_remove(obj: Context, names: tuple[str, ...]) -> None:
    """Remove local domains and their overrides."""
    with obj.write() as session:
        editing.remove_domains(session, names)


@domain.command("list")
@pass_context
def domain_list(obj: Context) -> None:
    """List local domains."""
    for name in obj.read(editing.list_domains):
        click.echo(name)


# --- settings ----------------------------------------------------------------


@cli.group()
def settings() -> None:
    """Global settings and per-domain overrides."""


@settings.command("show")
@click.option("--domain", "domain_name", metavar="D", help="Show what is in force for domain D.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def settings_show(obj: Context, domain_name: str | None, as_json: bool) -> None:
    """Print every effective value and where it comes from."""
    shown = obj.read(lambda s: editing.show_settings(s, domain_name))
    if as_json:
        rows = {row.key: {"value": row.value, "source": row.source.value} for row in shown}
        click.echo(json.dumps({"domain": domain_name, "settings": rows}, indent=2))
        return
    width = max(len(row.key) for row in shown)
    for row in shown:
        click.echo(f"{row.key:<{width}}  {row.source.value:<7}  {row.value}")


@settings.command("set")
@click.option("--domain", "domain_name", metavar="D", help="Override for domain D only.")
@click.argument("key")
@click.argument("value")
@pass_context
def settings_set(obj: Context, domain_name: str | None, key: str, value: str) -> None:
    """Set KEY to VALUE, globally or for one domain."""
    with obj.write() as session:
        stored = editing.set_setting(session, key, value, domain_name)
    click.echo(f"{key} = {stored}" + (f" for {domain_name}" if domain_name else ""))


@settings.command("unset")
@click.option("--domain", "domain_name", metavar="D", help="Remove domain D's override.")
@click.argument("key")
@pass_context
def settings_unset(obj: Context, domain_name: str | None, key: str) -> None:
    """Return KEY to its default (or, with --domain, to the global value)."""
    with obj.write() as session:
        editing.unset_setting(session, key, domain_name)


# --- sender grants -----------------------------------------------------------


@cli.group()
def sender() -> None:
    """Send-as grants: which login may use which sender."""


@sender.command("allow")
@click.argument("login")
@click.argument("target", metavar="ADDRESS|@DOMAIN")
@pass_context
def sender_allow(obj: Context, login: str, target: str) -> None:
    """Let LOGIN send as ADDRESS, or as anyone @DOMAIN."""
    with obj.write() as session:
        pair = editing.allow(session, login, target)
    click.echo(f"{pair[0]} may send as {pair[1]}")


@sender.command("revoke")
@click.argument("login")
@click.argument("target", metavar="ADDRESS|@DOMAIN")
@pass_context
def sender_revoke(obj: Context, login: str, target: str) -> None:
    """Remove a send-as grant."""
    with obj.write() as session:
        editing.revoke(session, login, target)


@sender.command("list")
@click.option("--login", metavar="L", help="Only the grants of login L.")
@pass_context
def sender_list(obj: Context, login: str | None) -> None:
    """List send-as grants."""
    for grant_login, target in obj.read(lambda s: editing.list_grants(s, login)):
        click.echo(f"{grant_login}  {target}")


# --- networks ----------------------------------------------------------------


@cli.group()
def network() -> None:
    """Trusted networks, exempt from every check."""


@network.command("add")
@click.argument("cidr")
@click.option("--comment", default="", metavar="TEXT", help="Why it is trusted (shown by list).")
@pass_context
def network_add(obj: Context, cidr: str, comment: str) -> None:
    """Trust clients in CIDR (IPv4 or IPv6)."""
    with obj.write() as session:
        click.echo(f"trusted {editing.add_network(session, cidr, comment)}")


@network.command("remove")
@click.argument("cidr")
@pass_context
def network_remove(obj: Context, cidr: str) -> None:
    """Stop trusting CIDR."""
    with obj.write() as session:
        editing.remove_network(session, cidr)


@network.command("list")
@pass_context
def network_list(obj: Context) -> None:
    """List trusted networks."""
    for cidr, comment in obj.read(editing.list_networks):
        click.echo(f"{cidr}  {comment}".rstrip())


# --- check -------------------------------------------------------------------


@cli.command()
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
    report = explain(snapshot, client, login, sender, rcpts)
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=2))
    else:
        for text in report.lines():
            click.echo(text)
    click.get_current_context().exit(0 if report.all_continue else 1)


# --- doctor ------------------------------------------------------------------


@cli.command()
@click.option(
    "--postfix-config",
    metavar="DIR",
    help="Postfix's configuration directory.  [default: postconf -h config_directory]",
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
    from smtpauth_milter.admin import doctor as checks
    from smtpauth_milter.daemon.config import DEFAULT_SOCKET, check_socket

    spec = check_socket(str(pick(socket, obj.file, "socket", DEFAULT_SOCKET)))
    findings = checks.diagnose(obj.db, spec, postfix_config)
    for finding in findings:
        click.echo(finding.line())
    click.get_current_context().exit(checks.exit_status(findings))


# --- export / import ---------------------------------------------------------


@cli.command("export")
@pass_context
def export_cmd(obj: Context) -> None:
    """Print the whole store as JSON."""
    click.echo(json.dumps(obj.read(transfer.export_store), indent=2, ensure_ascii=False))


@cli.command("import")
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


# --- history -----------------------------------------------------------------


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return audit.parse_since(value, datetime.now(UTC))
    except SmtpauthError as exc:
        raise click.BadParameter(str(exc)) from exc


@cli.command("history")
@click.option(
    "--domain",
    "domain_name",
    metavar="D",
    help="Only changes about domain D: the domain itself, its overrides, grants to it.",
)
@click.option(
    "--since",
    callback=_since,
    metavar="T",
    help="Only changes since T: an ISO date or datetime (UTC unless it says otherwise), "
    "or an age like 30m, 2h, 7d, 2w.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def history_cmd(
    obj: Context, domain_name: str | None, since: datetime | None, as_json: bool
) -> None:
    """Show the audit trail: when, which OS user, which command, old and new value."""
    wanted = editing.local_domain(domain_name) if domain_name is not None else None
    entries = obj.read(lambda s: audit.history(s, domain=wanted, since=since))
    if as_json:
        rows = [entry.as_json() for entry in entries]
        click.echo(json.dumps({"entries": rows}, indent=2, ensure_ascii=False))
        return
    for entry in entries:
        click.echo(entry.line())


# --- entry point -------------------------------------------------------------


def run_cli(args: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit status; errors become one line on stderr."""
    try:
        result = cli.main(args=args, prog_name="smtpauth-milter", standalone_mode=False)
    except SmtpauthError as exc:
        click.echo(f"smtpauth-milter: error: {exc}", err=True)
        return EXIT_ERROR
    except click.ClickException as exc:
        click.echo(f"smtpauth-milter: error: {exc.format_message()}", err=True)
        return EXIT_ERROR if exc.exit_code == 1 else exc.exit_code
    except click.exceptions.Abort:
        click.echo("smtpauth-milter: aborted", err=True)
        return EXIT_ERROR
    except OSError as exc:
        click.echo(f"smtpauth-milter: error: {exc}", err=True)
        return EXIT_ERROR
    return result if isinstance(result, int) else 0


def main(args: Sequence[str] | None = None) -> None:
    sys.exit(run_cli(args))
