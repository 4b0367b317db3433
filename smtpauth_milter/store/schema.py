"""Which schema revisions this version may read, and which it may write.

Every migration declares ``readable_by``: the oldest smtpauth-milter version
whose decisions stay correct, or only get stricter, on a store at that
revision.  ``db upgrade`` (and ``downgrade``) records the rule of the revision
it leaves the store at in the ``schema_compat`` table, in the same
transaction, so a version that does not know a newer revision can still tell
whether it may read it:

- at this version's head: read and write;
- behind it, or no schema: refused, ``db upgrade`` first;
- newer, and the store says this version can read it: read only (the milter
  keeps deciding; ``check``, ``list``, ``show`` and ``history`` work);
  changes, and ``export`` (it would leave out what this version does not
  know), need the newer smtpauth-milter;
- newer otherwise (no rule, a rule for another revision, a newer version
  needed): refused, fail closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from sqlalchemy import Connection, delete, insert, inspect, select

from smtpauth_milter import __version__
from smtpauth_milter.core.errors import SchemaError, StoreError
from smtpauth_milter.core.versions import Version
from smtpauth_milter.store.models import SchemaCompat

UPGRADE_HINT = "run `smtpauth-milter db upgrade`"
NEWER_HINT = "upgrade smtpauth-milter"
RULE_ROW = 1


@dataclass(frozen=True)
class Rule:
    """What the store says about its own revision."""

    revision: str
    readable_by: str


@dataclass(frozen=True)
class Migrations:
    """The revisions this version ships, read once from its migrations directory."""

    location: str
    head: str
    rules: Mapping[str, str]  # revision -> readable_by

    @classmethod
    def load(cls, location: str) -> Migrations:
        script = ScriptDirectory(location)
        head = script.get_current_head()
        if head is None:
            raise StoreError(f"no schema migrations in {location}")
        rules = {rev.revision: _readable_by(rev) for rev in script.walk_revisions()}
        return cls(location, head, MappingProxyType(rules))


def _readable_by(script: Script) -> str:
    value = getattr(script.module, "readable_by", None)
    if not isinstance(value, str):
        raise StoreError(f"migration {script.revision} declares no readable_by version")
    try:
        return str(Version.parse(value))
    except ValueError as exc:
        raise StoreError(f"migration {script.revision}: readable_by: {exc}") from exc


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _has_rule_table(connection: Connection) -> bool:
    return inspect(connection).has_table(SchemaCompat.__tablename__)


def record_rule(connection: Connection, migrations: Migrations) -> Rule | None:
    """After migrating, in the same transaction: the rule of the revision the store is at."""
    revision = current_revision(connection)
    if revision is None or not _has_rule_table(connection):
        return None
    rule = Rule(revision, migrations.rules[revision])
    connection.execute(delete(SchemaCompat))
    connection.execute(
        insert(SchemaCompat).values(
            id=RULE_ROW, revision=rule.revision, readable_by=rule.readable_by
        )
    )
    return rule


def read_rule(connection: Connection) -> Rule | None:
    if not _has_rule_table(connection):
        return None
    row = connection.execute(
        select(SchemaCompat.revision, SchemaCompat.readable_by).where(SchemaCompat.id == RULE_ROW)
    ).first()
    return None if row is None else Rule(row.revision, row.readable_by)


def check(connection: Connection, migrations: Migrations, display: str, *, exact: bool) -> None:
    """Raise SchemaError unless this version may read the store (``exact``: unless it is at
    this version's head, as changes and a complete export need)."""
    current = current_revision(connection)
    if current == migrations.head:
        return
    rule = None if current is None or current in migrations.rules else read_rule(connection)
    problem = judge(current, rule, migrations, Version.parse(__version__), exact=exact)
    if problem is not None:
        raise SchemaError(f"the store {display} {problem}")


def judge(
    current: str | None,
    rule: Rule | None,
    migrations: Migrations,
    version: Version,
    *,
    exact: bool,
) -> str | None:
    """None when allowed, else why not (completing "the store X ...")."""
    if current == migrations.head:
        return None
    if current is None:
        return f"has no schema yet: {UPGRADE_HINT}"
    if current in migrations.rules:
        return f"is at schema {current}, this version needs {migrations.head}: {UPGRADE_HINT}"
    newer = f"is at schema {current}, newer than smtpauth-milter {version} knows"
    if rule is None or rule.revision != current:
        return f"{newer}, and it records no rule on which versions can read it: {NEWER_HINT}"
    try:
        needed = Version.parse(rule.readable_by)
    except ValueError:
        return f"{newer}, and its rule {rule.readable_by!r} is not a version: {NEWER_HINT}"
    if version < needed:
        return (
            f"is at schema {current}, which needs smtpauth-milter {needed} or later "
            f"(this is {version}): {NEWER_HINT}"
        )
    if exact:
        return (
            f"{newer}; this version may read it to decide (readable by {needed} and later), "
            f"but this command needs the newer version: {NEWER_HINT}"
        )
    return None
