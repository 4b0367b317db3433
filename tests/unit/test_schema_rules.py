"""Which schema a version may read: versions compared, the rules every migration declares."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import MappingProxyType

import pytest
from alembic.script import ScriptDirectory

from smtpauth_milter import __version__
from smtpauth_milter.core.errors import StoreError
from smtpauth_milter.core.versions import Version
from smtpauth_milter.store import schema
from smtpauth_milter.store.engine import Store
from tests.upgrades import newer_migrations

ORDERED = [
    "0.1.0",
    "0.2.0.dev0",
    "0.2.0.dev3",
    "0.2.0a1.dev1",
    "0.2.0a1",
    "0.2.0b2",
    "0.2.0rc1",
    "0.2.0",
    "0.2.1",
    "0.10.0",
    "1.0",
]


def test_versions_order_the_way_releases_come_out() -> None:
    parsed = [Version.parse(text) for text in ORDERED]
    for earlier, later in itertools.pairwise(parsed):
        assert earlier < later, (earlier, later)
        assert not later < earlier and earlier != later
    assert Version.parse("1.0") == Version.parse("1.0.0")
    assert str(Version.parse(" 0.2.0rc1 ")) == "0.2.0rc1"


@pytest.mark.parametrize("text", ["", "FILL IN", "v1.0", "1.0-beta", "1..0", "0.2.0.dev", "1.0\n2"])
def test_what_is_not_a_version(text: str) -> None:
    with pytest.raises(ValueError, match="bad version"):
        Version.parse(text)


def test_every_shipped_migration_declares_who_can_read_it_and_never_lowers_it() -> None:
    migrations = Store("sqlite://").migrations
    chain = [rev.revision for rev in ScriptDirectory(migrations.location).walk_revisions()][::-1]
    assert chain[-1] == migrations.head
    rules = [Version.parse(migrations.rules[revision]) for revision in chain]
    assert rules == sorted(rules), dict(zip(chain, map(str, rules), strict=True))
    assert rules[-1] <= Version.parse(__version__), "this version must read its own schema"


def test_a_migration_without_a_rule_is_refused_when_loaded(tmp_path: Path) -> None:
    location = newer_migrations(tmp_path, [("t9001", "0.1.0")])
    written = location / "versions" / "t9001_test_future.py"
    written.write_text(written.read_text().replace("readable_by = '0.1.0'", ""))
    with pytest.raises(StoreError, match="migration t9001 declares no readable_by version"):
        schema.Migrations.load(str(location))
    written.write_text(written.read_text() + "\nreadable_by = 'FILL IN'\n")
    with pytest.raises(StoreError, match="migration t9001: readable_by: bad version 'FILL IN'"):
        schema.Migrations.load(str(location))


def alembic_reading(location: str) -> tuple[str | None, set[str]]:
    script = ScriptDirectory(location)
    return script.get_current_head(), {rev.revision for rev in script.walk_revisions()}


def test_the_migrations_read_as_text_are_the_ones_alembic_runs(tmp_path: Path) -> None:
    shipped = Store("sqlite://").migrations
    assert alembic_reading(shipped.location) == (shipped.head, set(shipped.rules))
    location = str(newer_migrations(tmp_path, [("t9001", "0.1.0"), ("t9002", "0.2.0")]))
    newer = schema.Migrations.load(location)
    assert alembic_reading(location) == (newer.head, set(newer.rules))
    assert newer.head == "t9002" and set(newer.rules) == {*shipped.rules, "t9001", "t9002"}
    assert newer.rules["t9002"] == "0.2.0" and newer.rules["0001"] == shipped.rules["0001"]


def test_migration_files_that_alembic_would_not_run_are_refused(tmp_path: Path) -> None:
    location = newer_migrations(tmp_path, [("t9001", "0.1.0")])
    written = location / "versions" / "t9001_test_future.py"
    text = written.read_text()
    parent = f"down_revision = {Store('sqlite://').head()!r}"
    first = "down_revision = '0001'"  # a second branch from the first revision
    cases = [
        (text.replace("revision = 't9001'", "revision = make_id()"), "declares no revision"),
        (text.replace("down_revision = ", "down_revision = 'nowhere' or "), "down_revision"),
        (text.replace(parent, "down_revision = 'nowhere'"), "unknown"),
        (text.replace(parent, first), "several heads"),
        (text + "\ndef broken(:\n", "cannot read the migration"),
    ]
    for changed, error in cases:
        written.write_text(changed)
        with pytest.raises(StoreError, match=error):
            schema.Migrations.load(str(location))


MIGRATIONS = schema.Migrations(
    "unused", "0003", MappingProxyType(dict.fromkeys(("0001", "0002", "0003"), "0.1.0"))
)
THIS = Version.parse("0.2.0")


def judge(current: str | None, rule: schema.Rule | None, *, exact: bool = False) -> str | None:
    return schema.judge(current, rule, MIGRATIONS, THIS, exact=exact)


def test_at_the_head_everything_is_allowed() -> None:
    assert judge("0003", None) is None
    assert judge("0003", None, exact=True) is None


def test_behind_or_without_schema_db_upgrade_first() -> None:
    assert judge(None, None) == "has no schema yet: run `smtpauth-milter db upgrade`"
    assert judge("0002", None) == (
        "is at schema 0002, this version needs 0003: run `smtpauth-milter db upgrade`"
    )


@pytest.mark.parametrize("readable_by", ["0.1.0", "0.2.0", "0.2", "0.2.0rc1"])
def test_newer_and_readable_by_this_version_reads_but_does_not_write(readable_by: str) -> None:
    rule = schema.Rule("0004", readable_by)
    assert judge("0004", rule) is None
    assert judge("0004", rule, exact=True) == (
        "is at schema 0004, newer than smtpauth-milter 0.2.0 knows; this version may read it "
        f"to decide (readable by {readable_by} and later), but this command needs the newer "
        "version: upgrade smtpauth-milter"
    )


@pytest.mark.parametrize("readable_by", ["0.2.1", "0.3.0.dev0", "1.0"])
def test_newer_and_not_readable_by_this_version_is_refused(readable_by: str) -> None:
    rule = schema.Rule("0004", readable_by)
    expected = (
        f"is at schema 0004, which needs smtpauth-milter {readable_by} or later "
        "(this is 0.2.0): upgrade smtpauth-milter"
    )
    assert judge("0004", rule) == expected
    assert judge("0004", rule, exact=True) == expected


@pytest.mark.parametrize(
    ("rule", "why"),
    [
        (None, "and it records no rule on which versions can read it"),
        (schema.Rule("0003", "0.1.0"), "and it records no rule on which versions can read it"),
        (schema.Rule("0004", "soon"), "and its rule 'soon' is not a version"),
        (schema.Rule("0004", "0.1.0\nx=1"), "and its rule '0.1.0\\nx=1' is not a version"),
    ],
)
def test_newer_without_a_trustworthy_rule_is_refused(rule: schema.Rule | None, why: str) -> None:
    assert judge("0004", rule) == (
        f"is at schema 0004, newer than smtpauth-milter 0.2.0 knows, {why}: upgrade smtpauth-milter"
    )
