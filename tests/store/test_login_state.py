"""The login tables on SQLite and PostgreSQL: batches from several milters add up, the
window and pruning, freezes, expiry, and the CLI's edits (docs/policy.md#stolen-logins)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import func, select, text

from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.store import audit, loginedit
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.loginstate import EXPIRY, Batch, Freeze, exchange, prune, writing
from smtpauth_milter.store.models import AuditEntry, LoginClient, LoginCount

NOW = 1_800_000_000.0  # a bucket boundary for every width used here
HOUR = 60  # width of a 1h window


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    opened = Store(db_url)
    yield opened
    opened.dispose()


def _batch(login: str, n: int, bucket: int, client: str = "192.0.2.1") -> Batch:
    return Batch(
        counts={(login, "messages", HOUR, bucket): n},
        clients={(login, HOUR, bucket, client)},
    )


def test_batches_of_several_milters_add_up_and_leave_the_window(store: Store) -> None:
    now_bucket = int(NOW) // HOUR
    with writing(store) as session:
        exchange(session, _batch("alice@example.com", 3, now_bucket), NOW)
    with writing(store) as session:  # a second milter, the same bucket, another client
        seen = exchange(session, _batch("alice@example.com", 4, now_bucket, "2001:db8::/64"), NOW)
    assert seen.totals[("alice@example.com", "messages", HOUR)] == 7
    assert seen.clients[("alice@example.com", HOUR)] == {"192.0.2.1", "2001:db8::/64"}
    alice = Batch(reads={"alice@example.com"})  # read back, nothing counted
    with writing(store) as session:  # a window (60 buckets) and one bucket later: gone
        later = exchange(session, alice, NOW + 61 * HOUR)
        assert ("alice@example.com", "messages", HOUR) in exchange(
            session, alice, NOW + 61 * HOUR - 1
        ).totals
    assert later.totals == {} and later.clients == {}
    with writing(store) as session:
        assert prune(session, NOW + 61 * HOUR) == 3  # one count row, two client rows
        assert session.scalar(select(func.count()).select_from(LoginCount)) == 0
        assert session.scalar(select(func.count()).select_from(LoginClient)) == 0


def test_the_readback_holds_only_the_batchs_logins(store: Store) -> None:
    """Each exchange reads back the counts of the logins in its batch (those counted, and
    ``reads``), not the whole site's; every freeze still comes back."""
    bucket = int(NOW) // HOUR
    with writing(store) as session:  # another milter counted three logins; one is frozen
        for login in ("alice", "bob", "carol"):
            exchange(session, _batch(login, 2, bucket), NOW)
        exchange(session, Batch(freezes={"dave": Freeze("dave", "admin", 0, NOW, None, "x")}), NOW)
    with writing(store) as session:
        both = _batch("alice", 1, bucket)
        both.reads.add("carol")
        seen = exchange(session, both, NOW)
    assert seen.logins == {"alice", "carol"}
    assert seen.totals == {("alice", "messages", HOUR): 3, ("carol", "messages", HOUR): 2}
    assert set(seen.clients) == {("alice", HOUR), ("carol", HOUR)}
    assert set(seen.frozen) == {"dave"}
    with writing(store) as session:  # nothing in the batch: no counts, the freezes all the same
        empty = exchange(session, Batch(), NOW)
    assert (empty.totals, empty.clients, set(empty.frozen)) == ({}, {}, {"dave"})


def test_a_freeze_keeps_the_first_and_expires(store: Store) -> None:
    first = Freeze("bob", "login-max-messages", 201, NOW, NOW + 3600, "milter@mx1")
    second = Freeze("bob", "login-max-recipients", 1001, NOW + 5, None, "milter@mx2")
    with writing(store) as session:
        exchange(session, Batch(freezes={"bob": first}), NOW)
        seen = exchange(session, Batch(freezes={"bob": second}), NOW + 5)
    state = seen.frozen["bob"]
    assert (state.cause, state.count, state.until) == ("login-max-messages", 201, NOW + 3600)
    assert state.active(NOW + 3599) and not state.active(NOW + 3600)
    with writing(store) as session:
        exchange(session, _batch("bob", 5, int(NOW) // HOUR), NOW + 10)
        expired = exchange(session, Batch(), NOW + 3600)
    assert expired.frozen["bob"].unfrozen_by == EXPIRY
    assert expired.totals == {}, "an expired freeze starts counting afresh"


def test_admin_freeze_unfreeze_and_exemptions_are_audited(store: Store) -> None:
    with store.write() as session:
        audit.begin(session, audit.Actor.now("login freeze Carol@Example.com"))
        assert loginedit.freeze(session, " Carol@Example.com ", "phished", "root", NOW)
        loginedit.record_freeze(session, "Carol@Example.com", "phished")
        assert not loginedit.freeze(session, "carol@example.com", "", "root", NOW + 1)
        exchange(session, _batch("carol@example.com", 9, int(NOW) // HOUR), NOW)
        assert set(loginedit.frozen_logins(session, NOW)) == {"carol@example.com"}
        was = loginedit.unfreeze(session, "carol@example.com", "root", NOW + 2)
        loginedit.record_unfreeze(session, "carol@example.com", was)
        assert loginedit.frozen_logins(session, NOW + 2) == {}
        windows = {"login-max-messages": 3600}
        assert loginedit.counts(session, "carol@example.com", windows, NOW).counts == {
            "login-max-messages": 0
        }
        with pytest.raises(SettingError, match="is not frozen"):
            loginedit.unfreeze(session, "carol@example.com", "root", NOW + 3)
        assert loginedit.exempt(session, "lists@example.com", "mailing list")
        assert not loginedit.exempt(session, "LISTS@example.com", "mailing list")
        assert loginedit.exempt_logins(session) == {"lists@example.com": "mailing list"}
        loginedit.unexempt(session, "lists@example.com")
        with pytest.raises(SettingError, match="is not exempt"):
            loginedit.unexempt(session, "lists@example.com")
        with pytest.raises(SettingError, match="bad login"):
            loginedit.exempt(session, "two words")
    with store.read() as session:
        entries = session.execute(
            select(AuditEntry.action, AuditEntry.subject).order_by(AuditEntry.id)
        ).all()
    assert [tuple(e) for e in entries] == [
        ("login-freeze", "carol@example.com"),
        ("login-unfreeze", "carol@example.com"),
        ("login-exempt", "lists@example.com"),
        ("login-unexempt", "lists@example.com"),
    ]


@pytest.mark.postgres
def test_postgresql_never_prepares_the_exchange_s_statements(pg_store_url: str) -> None:
    """psycopg prepares a statement after its 5th run, and PostgreSQL may then plan it for
    any parameters: the read-back's `login IN (...)` of 500 logins became a sequential
    scan over 1 s at 100,000 logins, and every exchange hit statement_timeout
    (bench/login_scale.py --pg).  No statement of the store's connections is prepared."""
    store = Store(pg_store_url, serving=True)
    now_bucket = int(NOW) // HOUR
    logins = [f"user{n}@example.com" for n in range(600)]  # two chunks of the read-back
    batch = Batch(
        counts={(login, "messages", HOUR, now_bucket): 1 for login in logins},
        clients={(login, HOUR, now_bucket, "192.0.2.1") for login in logins},
    )
    try:
        with writing(store) as session:
            for _ in range(8):
                seen = exchange(session, batch, NOW)
            prepared = session.execute(text("SELECT count(*) FROM pg_prepared_statements"))
            assert prepared.scalar_one() == 0
        assert seen.totals[logins[0], "messages", HOUR] == 8
    finally:
        store.dispose()
