"""One peer cannot take mail down: the libmilter crash under real Postfix load.

While several clients send mail through the private Postfix (unauthenticated
as a local user: must be refused; authenticated as that user: must pass), a
local peer sends the packets that crash libmilter (SIGSEGV) straight to the
milter socket, again and again.  Every SMTP session gets its correct verdict
or a 4xx (Postfix's ``milter_default_action = tempfail`` while the milter
connection is lost); none that should be refused is accepted; and after each
crash the supervisor has a new milter deciding within a second.
"""

from __future__ import annotations

import threading
import time

import pytest

from tests.harness.mta import Sandbox, SwaksResult, libmilter_socket
from tests.support.libmilter_crash import crash_milter
from tests.support.milterclient import session

from .test_milter_lifecycle import MakeMilter, make_milter  # noqa: F401 -- the fixture

pytestmark = pytest.mark.mta

ALICE = "alice@example.com"
REMOTE = "x@remote.test"
CRASHES = 6  # the supervisor allows 10 within 60 s
RESTART_LIMIT = 1.0
CLIENTS = 3


def outcome(result: SwaksResult) -> int:
    """The code that decided the session: AUTH's when it failed, else MAIL's, else RCPT's."""
    if result.auth is not None and result.auth.code != 235:
        return result.auth.code
    if result.mail is None:
        raise AssertionError(f"no MAIL FROM reply:\n{result.transcript}")
    if result.mail.code != 250 or not result.rcpts:
        return result.mail.code
    return result.rcpts[0].code


def test_crash_packets_under_load_never_let_a_refused_message_through(
    mta_sandbox: Sandbox,
    make_milter: MakeMilter,  # noqa: F811 -- the imported fixture
) -> None:
    milter = make_milter()
    milter.store.run("settings", "set", "require-auth-local", "on")
    milter.wait_loaded()
    parent = milter.pid
    socket = libmilter_socket(milter.socket)
    stop = threading.Event()
    seen: dict[str, list[int]] = {"unauthenticated": [], "authenticated": []}
    failures: list[BaseException] = []

    def client(number: int) -> None:
        try:
            while not stop.is_set():
                login = number % 2 == 0
                result = mta_sandbox.smtp(ALICE, [REMOTE], user=ALICE if login else None)
                seen["authenticated" if login else "unauthenticated"].append(outcome(result))
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        for crash in range(1, CRASHES + 1):
            crash_milter(socket)
            crashed_at = time.monotonic()
            reply = session(socket, sender=f"<{ALICE}>", rcpts=[f"<{REMOTE}>"]).rcpts[0]
            took = time.monotonic() - crashed_at
            assert (reply.kind, reply.code) == ("replycode", 530)
            assert took < RESTART_LIMIT, f"crash {crash}: decided again after {took:.2f}s"
            # Let the clients run a few sessions against the new milter.
            count = sum(map(len, seen.values()))
            deadline = time.monotonic() + 10.0
            while sum(map(len, seen.values())) < count + CLIENTS and time.monotonic() < deadline:
                time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert failures == []
    # The verdict, or a temporary failure: never "accepted" for a session that must be refused.
    assert set(seen["unauthenticated"]) <= {530} | set(range(400, 500)), seen
    assert set(seen["authenticated"]) <= {250} | set(range(400, 500)), seen
    assert 530 in seen["unauthenticated"] and 250 in seen["authenticated"], seen
    assert milter.pid == parent, "the supervisor itself never restarted"
    assert len(milter.log.find(r"event=child-died .*signal=SIGSEGV action=restart")) == CRASHES
    # And afterwards every session is decided normally again.
    assert outcome(mta_sandbox.smtp(ALICE, [REMOTE])) == 530
    assert outcome(mta_sandbox.smtp(ALICE, [REMOTE], user=ALICE)) == 250
