"""A newer release upgrades the store under our running milter, seen by a real Postfix
client (swaks), on SQLite and a real PostgreSQL.

On a revision marked readable by this version the SMTP replies do not change;
on one marked unreadable every checked recipient gets ``tempfail-reply`` at
once (the milter's own fault: never a 5xx, never an accept), and the
replies come back when the store is on a readable revision again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from smtpauth_milter.store.engine import Store
from tests.harness.logfile import LogFile
from tests.harness.mta import Sandbox
from tests.harness.waiting import wait_until
from tests.upgrades import newer_migrations

from .milter_fixture import OurMilter, StoreCli, field_of

pytestmark = pytest.mark.mta

ALICE = "alice@example.com"
REMOTE = "x@remote.test"
AUTH = (530, "5.7.0 Authentication required")
ACCEPTED = (250, "2.1.5 Ok")
TEMPFAIL = (451, "4.3.0 Temporary policy failure, try again later")
COMPATIBLE, INCOMPATIBLE = "t9001", "t9002"


@dataclass
class AnyStoreCli(StoreCli):
    """StoreCli on any store URL (a PostgreSQL one too)."""

    db_url: str = ""

    @property
    def url(self) -> str:
        return self.db_url


@pytest.fixture
def milter(db_url: str, tmp_path: Path, mta_sandbox: Sandbox) -> Iterator[OurMilter]:
    store = AnyStoreCli(tmp_path / "unused", db_url=db_url)
    store.run("domain", "add", "example.com", "example.net")
    store.run("settings", "set", "require-auth-local", "on")
    ours = OurMilter(store, mta_sandbox.inet_milter_socket(), LogFile(tmp_path / "milter.log"))
    ours.start()
    mta_sandbox.postfix.use_milter(ours.socket)
    try:
        yield ours
    finally:
        mta_sandbox.postfix.use_milter(None)
        ours.stop()


def replies(sandbox: Sandbox) -> tuple[tuple[int, str] | None, tuple[int, str] | None]:
    """The first RCPT's (code, text) without and with AUTH as alice."""
    seen = []
    for user in (None, ALICE):
        result = sandbox.smtp(ALICE, [REMOTE], user=user)
        seen.append((result.rcpts[0].code, result.rcpts[0].text) if result.rcpts else None)
    return seen[0], seen[1]


def test_swaks_sees_no_change_on_a_readable_newer_schema_and_a_tempfail_on_an_unreadable_one(
    milter: OurMilter, mta_sandbox: Sandbox, tmp_path: Path
) -> None:
    milter.wait_loaded()
    assert replies(mta_sandbox) == (AUTH, ACCEPTED)
    location = newer_migrations(tmp_path, [(COMPATIBLE, "0.1.0"), (INCOMPATIBLE, "99.0")])
    newer = Store(milter.store.url, migrations=str(location))
    try:
        newer.upgrade(COMPATIBLE)
        milter.wait_loaded()
        assert replies(mta_sandbox) == (AUTH, ACCEPTED)

        since = milter.log.mark()
        newer.upgrade(INCOMPATIBLE)
        upgraded_at = time.monotonic()
        wait_until(lambda: replies(mta_sandbox) == (TEMPFAIL, TEMPFAIL), 15.0, "tempfail")
        took = time.monotonic() - upgraded_at
        assert took < 10.0, "at once (the next poll), far from --max-stale's default 300 s"
        refused = milter.log.wait_for(r"event=store-unreadable", since)
        assert "schema not readable by this version" in refused
        assert f"is at schema {INCOMPATIBLE}, which needs smtpauth-milter 99.0" in refused
        milter.log.wait_for(rf"action=tempfail .* rcpt=<{REMOTE}>", since)
        decided = milter.log.find(rf"action=tempfail .* rcpt=<{REMOTE}>", since)
        assert decided and all(field_of(d, "rule") == "no-settings" for d in decided), decided

        newer.downgrade(COMPATIBLE)
        wait_until(lambda: replies(mta_sandbox) == (AUTH, ACCEPTED), 5.0, "decides again")
    finally:
        newer.dispose()
