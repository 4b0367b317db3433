"""Migrations: every revision down and back up, no drift between models and schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect, text

from smtpauth_milter.store import editing
from smtpauth_milter.store.engine import Store

LOGIN_TABLES = {"login_count", "login_client", "login_frozen", "login_exempt"}  # 0005
TABLES = {
    "domain",
    "global_setting",
    "domain_setting",
    "trusted_network",
    "send_as_grant",
    "store_state",
    "audit_entry",
    "schema_compat",
    *LOGIN_TABLES,
    "console_admin",
    "console_admin_domain",
    "decision_count",
    "refused_count",
}
CONSOLE = {"console_admin", "console_admin_domain"}  # migrations/versions/0006_console_admins.py
DASHBOARD = {"decision_count", "refused_count"}  # migrations/versions/0007_decision_counts.py


BEFORE_ALIASES = "0003"  # migrations/versions/0004_alias_domains.py comes next


def _tables(store: Store) -> set[str]:
    return set(inspect(store.engine).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade_and_no_drift(db_url: str) -> None:
    store = Store(db_url)
    try:
        store.upgrade()
        assert store.current() == store.head()
        assert _tables(store) == TABLES
        assert store.drift() is None
        store.downgrade("base")
        assert store.current() is None
        assert _tables(store) == set()
        store.upgrade()
        assert store.current() == store.head()
        assert store.drift() is None
        # 0001 creates the row with serial 1; the upgrade itself is a change milters see
        assert store.serial() == 2
    finally:
        store.dispose()


def test_the_installed_command_finds_its_migrations_from_any_directory(tmp_path: Path) -> None:
    command = Path(sys.executable).with_name("smtpauth-milter")
    executable = str(command) if command.exists() else shutil.which("smtpauth-milter")
    assert executable, "the smtpauth-milter console script must be installed"
    url = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    for command, out in (
        (["db", "init"], f"store {url} created, at schema {Store(url).head()}"),
        (["domain", "add", "example.com"], "added example.com"),
    ):
        result = subprocess.run(
            [executable, "--db", url, *command],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == out


def test_the_audit_trail_migration_goes_down_to_0001_and_back_keeping_the_settings(
    db_url: str,
) -> None:
    store = Store(db_url)
    try:
        store.upgrade()
        with store.write() as session:
            editing.add_domains(session, ["example.com"])
        store.downgrade("0001")
        assert store.current() == "0001"
        assert (
            _tables(store)
            == TABLES - {"audit_entry", "schema_compat"} - LOGIN_TABLES - CONSOLE - DASHBOARD
        )
        store.upgrade()
        assert store.current() == store.head()
        assert store.drift() is None
        assert set(store.load_snapshot().domains) == {"example.com"}
    finally:
        store.dispose()


def test_the_alias_domain_migration_goes_down_and_back_keeping_domains_and_overrides(
    db_url: str,
) -> None:
    """Down drops the relation (the alias stays, standalone); no override is lost either way.

    On SQLite the migration rebuilds the domain table: with foreign keys on, that
    would cascade into domain_setting, so this also proves they are off meanwhile.
    """
    store = Store(db_url)
    try:
        store.upgrade(BEFORE_ALIASES)
        with store.engine.begin() as conn:  # the old schema: no ORM model matches it any more
            conn.execute(text("INSERT INTO domain (name) VALUES ('example.com'), ('example.org')"))
            conn.execute(
                text(
                    "INSERT INTO domain_setting SELECT id, 'dry-run', 'on' FROM domain "
                    "WHERE name = 'example.com'"
                )
            )
        store.upgrade()
        assert store.drift() is None
        before = store.load_snapshot()
        assert before.domains["example.com"].dry_run and before.aliases == {}
        with store.write() as session:
            editing.add_alias_domains(session, ["example.net"], "example.com")
            editing.set_setting(session, "bare-login-match", "on", domain="example.net")
        assert store.load_snapshot().aliases == {"example.net": "example.com"}
        store.downgrade(BEFORE_ALIASES)
        assert "alias_of_id" not in {c["name"] for c in inspect(store.engine).get_columns("domain")}
        store.upgrade()
        after = store.load_snapshot()
        assert set(after.domains) == {"example.com", "example.net", "example.org"}
        assert after.aliases == {}, "going down dropped the relation"
        assert after.domains["example.com"].dry_run, "the target kept its override"
        net = after.domains["example.net"]
        assert net.bare_login_match and not net.dry_run, "the ex-alias kept only its own"
        assert store.drift() is None
    finally:
        store.dispose()


READ_PATH = """
import sys
from smtpauth_milter.daemon import server
from smtpauth_milter.store.engine import Store
store = Store(sys.argv[1], serving=True)
store.check_schema()
store.load_snapshot()
if sys.argv[2:] == ["upgrade"]:
    store.upgrade()
if sys.argv[2:] == ["spf"]:
    from ipaddress import ip_address
    from smtpauth_milter.lookups.spf import SpfChecks
    # no sender domain: no DNS query, so the check returns once the pool has imported
    # pyspf, well within the deadline
    print(SpfChecks().check("127.0.0.1:9", 5.0, ip_address("192.0.2.1"), "nobody").result.value, end=" ")
print(" ".join(sorted({name.split(".")[0] for name in sys.modules} & {"alembic", "dns", "spf"})))
"""


def modules_used(db_url: str, *then: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", READ_PATH, db_url, *then],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_milters_start_and_polls_import_neither_alembic_nor_pyspf(db_url: str) -> None:
    """0.15 s of every start (docs/internals.md#the-schema-check-without-alembic)."""
    assert modules_used(db_url) == ""
    assert modules_used(db_url, "upgrade") == "alembic"  # what only a migration needs
    assert modules_used(db_url, "spf") == "none dns spf"  # and what only an SPF check needs
