"""Least privilege for the milter's only writes: on PostgreSQL a role that may write the
login state and nothing else (docs/operations.md#the-milters-state-least-privilege)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql
from sqlalchemy import text

from smtpauth_milter.core.errors import StoreError
from smtpauth_milter.core.policy import Action, Request, Rule, decide
from smtpauth_milter.daemon.logins import LoginLimiter
from smtpauth_milter.daemon.loginsync import LoginSync
from smtpauth_milter.daemon.refresh import SnapshotCache
from smtpauth_milter.store import editing, loginedit
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.loginstate import grants
from tests.conftest import run_captured
from tests.harness.pgserver import PgServer

pytestmark = pytest.mark.postgres
DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


@pytest.fixture
def state_url(
    pg_server: PgServer, pg_store_url: str, capsys: pytest.CaptureFixture[str]
) -> Iterator[str]:
    """A role given its rights as docs/operations.md says: `db grant-state ROLE`."""
    dbname = pg_store_url.rpartition("/")[2]
    role, password = f"{dbname}_state", "state-pw"
    pg_server.create_user(role, password)
    granted = run_captured(capsys, ["--db", pg_store_url, "db", "grant-state", role])
    assert granted.code == 0, granted.err
    assert granted.out.splitlines() == [f"{line};" for line in grants(role, dbname)]
    yield pg_server.url(dbname, user=role, password=password)
    with pg_server.connect(dbname) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    pg_server.drop_user(role)


def test_the_state_role_writes_counts_and_freezes_and_cannot_change_a_setting(
    pg_store_url: str, state_url: str
) -> None:
    admin, state = Store(pg_store_url), Store(state_url)
    try:
        with admin.write() as session:
            editing.add_domains(session, ["example.com"])
            editing.set_setting(session, "login-max-messages", "1/1h")
            editing.set_setting(session, "login-limit-action", "freeze")
        cache = SnapshotCache(state, max_stale=300)
        assert cache.refresh(), "the state role reads the settings"
        limiter = LoginLimiter("milter@test")
        sync = LoginSync(limiter, state)
        request = Request(ipaddress.ip_address("203.0.113.9"), "a@example.com", "<a@example.com>")
        for _ in range(2):
            verdict = decide(cache.current(), request, "<x@remote.test>")
            verdict = limiter.apply(cache.current(), request, verdict, True)
        assert (verdict.action, verdict.rule) == (Action.REJECT, Rule.LOGIN_MAX_MESSAGES)
        assert sync.cycle(), "counts and the freeze are written with the state role"
        with admin.read() as session:
            assert set(loginedit.frozen_logins(session, 2e9)) == {"a@example.com"}
        for change in (
            lambda s: editing.set_setting(s, "login-max-messages", "off"),
            lambda s: editing.add_network(s, "0.0.0.0/0"),
            lambda s: loginedit.exempt(s, "a@example.com"),
        ):
            with pytest.raises(StoreError, match="permission denied"), state.write() as session:
                change(session)
        # nor read the console's accounts (their password hashes)
        with pytest.raises(StoreError, match="permission denied"), state.read() as session:
            session.execute(text("SELECT password_hash FROM console_admin")).all()
        assert admin.load_snapshot().global_values["login-max-messages"] == "1/1h"
    finally:
        admin.dispose()
        state.dispose()


def test_the_documented_grants_are_the_tested_ones() -> None:
    text = DOCS.read_text()
    for statement in grants("milter_state", "smtpauth"):
        assert re.sub(r'"', "", statement) + ";" in text, statement


def test_grant_state_to_a_missing_role_is_one_line_and_changes_nothing(
    pg_store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_captured(capsys, ["--db", pg_store_url, "db", "grant-state", "no_such_role"])
    assert (result.code, result.out) == (2, "")
    assert len(result.err.splitlines()) == 1, result.err
    assert 'role "no_such_role" does not exist' in result.err
