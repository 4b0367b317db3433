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

import ast
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from sqlalchemy import Connection, column, delete, insert, inspect, select, table

from smtpauth_milter import __version__
from smtpauth_milter.core.errors import SchemaError, StoreError
from smtpauth_milter.core.versions import Version
from smtpauth_milter.store.models import SchemaCompat

UPGRADE_HINT = "run `smtpauth-milter db upgrade`"
NEWER_HINT = "upgrade smtpauth-milter"
RULE_ROW = 1
# Where alembic records the revision a store is at (its default name, which
# migrations/env.py keeps): one row while the history has one head.
VERSION_TABLE = table("alembic_version", column("version_num"))


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
        """The revisions in ``location``/versions, read as text: the milter and the
        read commands never import alembic (a tenth of a second of every start,
        docs/internals.md#the-schema-check-without-alembic); ``db upgrade`` runs
        the same files through alembic, and a test holds both readings equal."""
        revisions = [_revision_file(path) for path in _revision_paths(Path(location))]
        parents = {parent for revision in revisions for parent in revision.parents}
        known = {revision.revision for revision in revisions}
        if parents - known:
            raise StoreError(f"migrations in {location} revise unknown {sorted(parents - known)}")
        heads = sorted(known - parents)
        if not heads:
            raise StoreError(f"no schema migrations in {location}")
        if len(heads) > 1:
            raise StoreError(f"migrations in {location} have several heads: {heads}")
        rules = {revision.revision: _readable_by(revision) for revision in revisions}
        return cls(location, heads[0], MappingProxyType(rules))


@dataclass(frozen=True)
class _RevisionFile:
    """What a migration file declares at its top level (literal values only)."""

    path: Path
    revision: str
    parents: tuple[str, ...]
    readable_by: object


def _revision_paths(location: Path) -> list[Path]:
    """The files alembic reads as revisions: every ``.py`` in versions/ but
    ``__init__.py`` and editors' lock files."""
    versions = location / "versions"
    return sorted(
        path
        for path in versions.glob("*.py")
        if path.name != "__init__.py" and not path.name.startswith(".#")
    )


def _revision_file(path: Path) -> _RevisionFile:
    try:
        values = _top_level_values(ast.parse(path.read_bytes(), str(path)))
    except (OSError, SyntaxError, ValueError) as exc:
        raise StoreError(f"cannot read the migration {path}: {exc}") from exc
    revision = values.get("revision")
    if not isinstance(revision, str):
        raise StoreError(f"the migration {path} declares no revision")
    down = values.get("down_revision")
    if down is None:
        parents: tuple[str, ...] = ()
    elif isinstance(down, str):
        parents = (down,)
    elif isinstance(down, tuple | list) and down and all(isinstance(p, str) for p in down):
        parents = tuple(down)
    else:
        raise StoreError(f"the migration {path}: down_revision is not a revision")
    return _RevisionFile(path, revision, parents, values.get("readable_by"))


def _top_level_values(module: ast.Module) -> dict[str, object]:
    """``NAME = literal`` (annotated or not) at a module's top level; any other
    value is kept as its node, which no caller accepts."""
    values: dict[str, object] = {}
    for node in module.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name):
            try:
                values[target.id] = ast.literal_eval(value)
            except (ValueError, TypeError, SyntaxError, RecursionError):
                values[target.id] = value
    return values


def _readable_by(revision: _RevisionFile) -> str:
    value = revision.readable_by
    if not isinstance(value, str):
        raise StoreError(f"migration {revision.revision} declares no readable_by version")
    try:
        return str(Version.parse(value))
    except ValueError as exc:
        raise StoreError(f"migration {revision.revision}: readable_by: {exc}") from exc


def current_revision(connection: Connection) -> str | None:
    """The revision the store is at (None: no schema yet), as alembic reads it."""
    if not inspect(connection).has_table(VERSION_TABLE.name):
        return None
    rows = connection.execute(select(VERSION_TABLE.c.version_num)).scalars().all()
    if len(rows) > 1:
        raise StoreError(f"the store is at several schema revisions at once: {sorted(rows)}")
    return str(rows[0]) if rows else None


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
