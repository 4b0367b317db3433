"""Schema migrations of the store."""

from __future__ import annotations

import click

from smtpauth_milter.admin.cli.context import Context, pass_context
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.store import loginstate

MAX_ROLE = 63  # PostgreSQL's NAMEDATALEN - 1


@click.group()
def db() -> None:
    """Schema migrations of the store."""


@db.command("init")
@pass_context
def db_init(obj: Context) -> None:
    """Create the store (a new SQLite file) with this version's schema; a no-op when it exists."""
    store = obj.store(prepare=False)
    created = store.create()
    current, head = store.current(), store.head()
    state = "created" if created else "exists"
    hint = (
        ""
        if current == head
        else " (a newer version's schema)"
        if store.is_newer(current)
        else " (run `smtpauth-milter db upgrade`)"
    )
    click.echo(f"store {store.display} {state}, at schema {current or 'none'}{hint}")


@db.command("upgrade")
@pass_context
def db_upgrade(obj: Context) -> None:
    """Migrate the store to this version's schema (creating a missing SQLite file)."""
    store = obj.store(prepare=False)
    store.create()
    store.upgrade()
    rule = store.rule()
    readable = f" (readable by smtpauth-milter {rule.readable_by} and later)" if rule else ""
    click.echo(f"store {store.display} is at schema {store.current()}{readable}")


@db.command("current")
@pass_context
def db_current(obj: Context) -> None:
    """Print the store's schema revision and this version's, and who can read the store."""
    store = obj.store(prepare=False)
    click.echo(f"store: {store.current() or 'none'}  code: {store.head()}")
    rule = store.rule()
    if rule is not None:
        click.echo(
            f"readable by: smtpauth-milter {rule.readable_by} and later (schema {rule.revision})"
        )


@db.command("check")
@pass_context
def db_check(obj: Context) -> None:
    """Check the store is at this version's schema and matches the models."""
    store = obj.store(prepare=False)
    store.check_schema(exact=True)
    head = store.head()
    drift = store.drift()
    if drift:
        raise SmtpauthError(f"store schema differs from the models: {drift}")
    click.echo(f"store {store.display} is at schema {head} and matches the models")


@db.command("grant-state")
@click.argument("role")
@click.option("--print", "print_only", is_flag=True, help="Print the statements; run nothing.")
@pass_context
def db_grant_state(obj: Context, role: str, print_only: bool) -> None:
    """Let the PostgreSQL ROLE read the store and write only the milter's state.

    Runs (and prints) the GRANTs that give ROLE SELECT on every table and INSERT, UPDATE,
    DELETE on the login counts and freezes, nothing else; run it with a --db login that
    owns the tables, after `db upgrade` (again after each upgrade: a new table is not
    covered by an older GRANT). The role must exist (CREATE ROLE). --print only prints."""
    if not role or len(role) > MAX_ROLE or not role.isprintable():
        raise click.BadParameter(
            f"a role is 1 to {MAX_ROLE} printable characters", param_hint="ROLE"
        )
    store = obj.store(prepare=False)
    if store.url.get_backend_name() != "postgresql":
        raise SmtpauthError(
            f"{store.display} is not PostgreSQL: SQLite has no roles; give the milter a state "
            "file of its own (docs/operations.md, 'The milter's state: least privilege')"
        )
    statements = loginstate.grants(role, store.url.database or "")
    if not print_only:
        store.check_schema(exact=True)
        with store.errors("grant access on"), store.engine.begin() as connection:
            for statement in statements:
                connection.exec_driver_sql(statement)
    for statement in statements:
        click.echo(f"{statement};")
