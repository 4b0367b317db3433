"""Our milter's life next to a running Postfix: live settings changes, the milter
going down and coming back, the store becoming unreadable and readable again.

Each test starts its own ``smtpauth-milter run`` (inet socket) behind the shared
Postfix sandbox and stops it afterwards, also when the test fails.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.harness.logfile import LogFile
from tests.harness.mta import RcptReply, Sandbox, SwaksResult
from tests.harness.waiting import wait_until

from .milter_fixture import OurMilter, StoreCli, decision_for, field_of, running

pytestmark = pytest.mark.mta

ALICE = "alice@example.com"
REMOTE = "x@remote.test"
AUTH = (530, "5.7.0 Authentication required")
ACCEPTED = (250, "2.1.5 Ok")
POSTFIX_TEMPFAIL = (451, "4.7.1 Service unavailable - try again later")
STORE_TEMPFAIL = "451 4.3.5 Settings store unavailable, try again later"
PROPAGATION_LIMIT = 2.0  # docs/operations.md#how-a-change-propagates
MAX_STALE = 2.0

MakeMilter = Callable[..., OurMilter]


@pytest.fixture
def make_milter(tmp_path: Path, mta_sandbox: Sandbox) -> Iterator[MakeMilter]:
    """``make(*extra_run_args, refresh=0.2)``: a started milter with its own store, Postfix pointed at it."""
    started: list[OurMilter] = []

    def make(*extra_args: str, refresh: float | None = 0.2) -> OurMilter:
        store = StoreCli(tmp_path / f"store-{len(started)}.sqlite")
        store.run("domain", "add", "example.com", "example.net")
        log = LogFile(tmp_path / f"milter-{len(started)}.log")
        socket = mta_sandbox.inet_milter_socket()
        milter = OurMilter(store, socket, log, tuple(extra_args), refresh=refresh)
        started.append(milter)
        milter.start()
        mta_sandbox.postfix.use_milter(milter.socket)
        return milter

    try:
        yield make
    finally:
        mta_sandbox.postfix.use_milter(None)
        for milter in started:
            milter.stop()


def first_rcpt(result: SwaksResult) -> tuple[int, str] | None:
    """(code, text) of the first RCPT, or of MAIL FROM when that was refused."""
    if result.rcpts:
        reply: RcptReply = result.rcpts[0]
        return reply.code, reply.text
    if result.mail is not None and result.mail.code != 250:
        return result.mail.code, result.mail.text
    return None


def poll_verdict(
    sandbox: Sandbox, wanted: tuple[int, str], timeout: float, mail_from: str
) -> float:
    """Send sessions until the first RCPT gets ``wanted``; seconds from the call until then."""
    start = time.monotonic()
    seen: list[tuple[int, str] | None] = []

    def probe() -> bool:
        got = first_rcpt(sandbox.smtp(mail_from, [REMOTE]))
        seen.append(got)
        return got == wanted

    try:
        wait_until(probe, timeout, f"RCPT reply {wanted}")
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; replies seen: {sorted(set(map(str, seen)))}") from None
    return time.monotonic() - start


def assert_enforced_within_2s(sandbox: Sandbox, milter: OurMilter) -> None:
    milter.wait_loaded()
    pid = milter.pid
    assert first_rcpt(sandbox.smtp(ALICE, [REMOTE])) == ACCEPTED

    milter.store.run("settings", "set", "require-auth-local", "on")
    elapsed = poll_verdict(sandbox, AUTH, timeout=5.0, mail_from=ALICE)
    assert elapsed < PROPAGATION_LIMIT, f"took {elapsed:.2f}s"

    milter.store.run("settings", "set", "--domain", "example.com", "require-auth-local", "off")
    elapsed = poll_verdict(sandbox, ACCEPTED, timeout=5.0, mail_from=ALICE)
    assert elapsed < PROPAGATION_LIMIT, f"took {elapsed:.2f}s"

    assert milter.process is not None and milter.process.alive
    assert milter.pid == pid, "the milter must not restart"


def test_cli_change_is_enforced_within_2s_without_restart(
    mta_sandbox: Sandbox, make_milter: MakeMilter
) -> None:
    assert_enforced_within_2s(mta_sandbox, make_milter())


def test_cli_change_is_enforced_within_2s_with_default_refresh(
    mta_sandbox: Sandbox, make_milter: MakeMilter
) -> None:
    """The same with the shipped default ``--refresh`` (the flag left out)."""
    assert_enforced_within_2s(mta_sandbox, make_milter(refresh=None))


def test_milter_down_tempfails_and_restarted_milter_decides(
    mta_sandbox: Sandbox, make_milter: MakeMilter
) -> None:
    milter = make_milter()
    assert first_rcpt(mta_sandbox.smtp("postmaster@example.com", [REMOTE])) == AUTH

    milter.stop()
    down = mta_sandbox.smtp("postmaster@example.com", [REMOTE])
    assert down.mail is not None and (down.mail.code, down.mail.text) == POSTFIX_TEMPFAIL, (
        down.transcript
    )
    assert down.rcpts == []
    authenticated = mta_sandbox.smtp(ALICE, [REMOTE], user=ALICE)
    assert authenticated.auth is not None and authenticated.auth.code == 454, (
        authenticated.transcript
    )

    milter.start()  # same socket, same store
    since = milter.log.mark()
    result = mta_sandbox.smtp("postmaster@example.com", [REMOTE])
    assert first_rcpt(result) == AUTH, result.transcript
    assert field_of(decision_for(milter.log, REMOTE, since), "rule") == "role-auth-required"
    result = mta_sandbox.smtp("postmaster@example.com", [REMOTE], user=ALICE)
    assert first_rcpt(result) == ACCEPTED, result.transcript


def test_unreadable_store_tempfails_after_max_stale_and_recovers(
    mta_sandbox: Sandbox, make_milter: MakeMilter
) -> None:
    milter = make_milter("--max-stale", str(MAX_STALE))
    milter.store.run("settings", "set", "tempfail-reply", STORE_TEMPFAIL)
    milter.wait_loaded()
    store_file = milter.store.path
    assert first_rcpt(mta_sandbox.smtp("postmaster@example.com", [REMOTE])) == AUTH
    since = milter.log.mark()

    # Replace the store with a file that is not a database; keep the real one aside.
    aside = store_file.with_name("store-aside.sqlite")
    os.replace(store_file, aside)
    store_file.write_bytes(b"this is not an SQLite database\n" * 64)
    broken_at = time.monotonic()
    try:
        milter.log.wait_for(r"event=store-unreadable", since, timeout=5.0)
        # Within --max-stale the last good snapshot still decides.
        assert first_rcpt(mta_sandbox.smtp("postmaster@example.com", [REMOTE])) == AUTH
        code, _, text = STORE_TEMPFAIL.partition(" ")
        poll_verdict(mta_sandbox, (int(code), text), MAX_STALE + 4.0, "postmaster@example.com")
        stale_after = time.monotonic() - broken_at
        assert stale_after >= MAX_STALE - 0.5, f"tempfailed after only {stale_after:.2f}s"
        line = milter.log.wait_for(rf"action=tempfail .* rcpt=<{REMOTE}>", since)
        assert "rule=no-settings" in line, line
        # An authenticated session is refused too: no trustworthy settings at all.
        result = mta_sandbox.smtp(ALICE, [REMOTE], user=ALICE)
        assert first_rcpt(result) == (int(code), text), result.transcript
    finally:
        os.replace(aside, store_file)
    restored_at = time.monotonic()
    poll_verdict(mta_sandbox, AUTH, 5.0, "postmaster@example.com")
    assert time.monotonic() - restored_at < PROPAGATION_LIMIT
    milter.log.wait_for(r"event=store-recovered", since)


def test_a_missing_store_tempfails_until_db_init_creates_it(
    mta_sandbox: Sandbox, tmp_path: Path
) -> None:
    """A mistyped --db path or an unmounted volume is an outage, never an empty store."""
    store = StoreCli(tmp_path / "state" / "store.sqlite")
    store.path.unlink()  # nothing at the path the milter is given
    log = LogFile(tmp_path / "milter.log")
    milter = OurMilter(store, mta_sandbox.inet_milter_socket(), log)
    with running(milter):
        mta_sandbox.postfix.use_milter(milter.socket)
        try:
            line = log.wait_for(r"event=store-unreadable", milter.started_at, timeout=10.0)
            assert 'state="no settings loaded yet: tempfailing"' in line
            assert f"no store at {store.path} (create it with `smtpauth-milter db init`)" in line
            result = mta_sandbox.smtp("postmaster@example.com", [REMOTE])
            assert first_rcpt(result) == (451, "4.3.0 Temporary policy failure, try again later")
            assert "rule=no-settings" in decision_for(log, REMOTE, milter.started_at)
            assert not store.path.exists(), "the milter must not create the store"
            since = log.mark()
            store.run("db", "init")
            log.wait_for(r"event=store-recovered", since, timeout=10.0)
            log.wait_for(r"event=no-local-domains", since, timeout=10.0)
            store.run("domain", "add", "example.com")
            poll_verdict(mta_sandbox, AUTH, 5.0, "postmaster@example.com")
        finally:
            mta_sandbox.postfix.use_milter(None)
