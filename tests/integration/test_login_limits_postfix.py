"""Per-login limits (stolen logins) through a real Postfix + Dovecot SASL and our real milter
(docs/policy.md#stolen-logins).

Each test uses its own login (the counts and freezes live in the store, beside
the settings the module resets between tests): alice past login-max-messages
is tempfailed; bob past it with action freeze is frozen, refused on a new
connection and from a new client address, and sends again within 2 s of
`login unfreeze`; carol trying an eleventh sender she does not own with
login-max-mismatches 10/10m is frozen; an exempt login and a trusted network
are never held.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.harness.logfile import LogFile
from tests.harness.mta import Sandbox
from tests.harness.mta.common import LOOPBACK
from tests.harness.mta.swaks import SwaksResult, parse_swaks
from tests.harness.waiting import wait_until

from .milter_fixture import OurMilter, StoreCli

pytestmark = pytest.mark.mta

RCPT = "x@remote.test"
LIMIT_REPLY = "452 4.7.1 Too much mail from this login, try again later"
FROZEN_REPLY = "550 5.7.1 Sending is suspended for this login: contact your mail administrator"
MISMATCH_REPLY = "553 5.7.1 Sender address rejected: not owned by authenticated user"


@pytest.fixture(scope="module")
def milter(tmp_path_factory: pytest.TempPathFactory, mta_sandbox: Sandbox) -> Iterator[OurMilter]:
    root = tmp_path_factory.mktemp("login-limits")
    store = StoreCli(root / "store.sqlite")
    store.run("domain", "add", "example.com", "example.net")
    store.save_baseline()
    ours = OurMilter(store, mta_sandbox.inet_milter_socket(), LogFile(root / "milter.log")).start()
    try:
        yield ours
    finally:
        mta_sandbox.postfix.use_milter(None)
        ours.stop()


def send(sandbox: Sandbox, user: str, mail_from: str | None = None) -> SwaksResult:
    mech = "PLAIN" if "@" in user else "LOGIN"
    result = sandbox.smtp(mail_from or (user if "@" in user else f"{user}@example.com"), [RCPT],
                          user=user, mech=mech)  # fmt: skip
    assert result.auth is not None and result.auth.code == 235, result.transcript
    return result


def wait_frozen(milter: OurMilter, login: str, timeout: float = 3.0) -> str:
    """`login list` once the milter's login-sync thread wrote the freeze (once a second)."""

    def listed() -> str | None:
        text = milter.store.run("login", "list")
        return text if f"{login}  frozen" in text else None

    return wait_until(listed, timeout, f"{login} frozen in the store")


def send_from(sandbox: Sandbox, user: str, source: str) -> SwaksResult:
    """One session from another client address (any 127/8 address is this host's)."""
    argv = [
        "swaks", "--server", f"{LOOPBACK}:{sandbox.port}", "--local-interface", source,
        "--helo", "client.sandbox.test", "--from", user, "--to", RCPT,
        "--quit-after", "RCPT", "--timeout", "15",
        "--auth", "PLAIN", "--auth-user", user, "--auth-password", sandbox.users[user],
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    transcript = done.stdout + done.stderr
    return SwaksResult(transcript, done.returncode, parse_swaks(transcript))


def reply(result: SwaksResult) -> str:
    got = result.rcpt(RCPT)
    return "250" if got.code == 250 else f"{got.code} {got.text}"


def test_a_login_past_login_max_messages_is_tempfailed(
    mta_sandbox: Sandbox, milter: OurMilter
) -> None:
    mta_sandbox.postfix.use_milter(milter.socket)
    milter.sync([("settings", "set", "login-max-messages", "3/1h")])
    since = milter.log.mark()
    for _ in range(3):
        assert reply(send(mta_sandbox, "alice@example.com")) == "250"
    result = send(mta_sandbox, "alice@example.com")
    assert reply(result) == LIMIT_REPLY, result.transcript
    milter.log.wait_for(
        r"action=tempfail rule=login-max-messages client=\S+ login=alice@example.com ", since
    )
    assert reply(send(mta_sandbox, "carol", "carol@example.com")) == "250", "not another login"


def test_freeze_refuses_a_new_connection_and_unfreeze_lets_it_send_within_2_s(
    mta_sandbox: Sandbox, milter: OurMilter
) -> None:
    mta_sandbox.postfix.use_milter(milter.socket)
    milter.sync(
        [
            ("settings", "set", "--domain", "example.com", "login-max-messages", "2/1h"),
            ("settings", "set", "login-limit-action", "freeze"),
        ]
    )
    for _ in range(2):
        assert reply(send(mta_sandbox, "bob@example.com")) == "250"
    since = milter.log.mark()
    assert reply(send(mta_sandbox, "bob@example.com")) == FROZEN_REPLY
    milter.log.wait_for(
        r"event=login-frozen login=bob@example.com limit=login-max-messages count=3", since
    )
    refused = send(mta_sandbox, "bob@example.com", "bob@example.net")  # a new connection
    assert reply(refused) == FROZEN_REPLY, refused.transcript
    milter.log.wait_for(r"action=reject rule=login-frozen client=\S+ login=bob@example.com ", since)
    elsewhere = send_from(mta_sandbox, "bob@example.com", "127.0.0.5")  # a new client address
    assert reply(elsewhere) == FROZEN_REPLY, elsewhere.transcript
    milter.log.wait_for(r"rule=login-frozen client=127.0.0.5 login=bob@example.com ", since)
    assert "bob@example.com  frozen  login-max-messages 3" in wait_frozen(milter, "bob@example.com")
    milter.store.run("login", "unfreeze", "bob@example.com")
    unfrozen_at = time.monotonic()
    deadline = unfrozen_at + 2.0
    while reply(send(mta_sandbox, "bob@example.com")) != "250":
        assert time.monotonic() < deadline, "login unfreeze took effect within 2 s"
    milter.log.wait_for(r"event=login-unfrozen login=bob@example.com by=\S+", since)


def test_eleven_senders_not_owned_freeze_the_login(mta_sandbox: Sandbox, milter: OurMilter) -> None:
    mta_sandbox.postfix.use_milter(milter.socket)
    milter.sync(
        [
            ("settings", "set", "require-sender-match", "on"),
            ("settings", "set", "login-max-mismatches", "10/10m"),
            ("settings", "set", "login-limit-action", "freeze"),
        ]
    )
    for n in range(10):
        assert reply(send(mta_sandbox, "carol", f"boss{n}@example.com")) == MISMATCH_REPLY
    assert reply(send(mta_sandbox, "carol", "boss10@example.com")) == FROZEN_REPLY
    assert reply(send(mta_sandbox, "carol", "carol@example.com")) == FROZEN_REPLY
    assert "carol  frozen  login-max-mismatches 11" in wait_frozen(milter, "carol")
    milter.store.run("login", "unfreeze", "carol")


def test_an_exempt_login_and_a_trusted_network_are_never_held(
    mta_sandbox: Sandbox, milter: OurMilter
) -> None:
    mta_sandbox.postfix.use_milter(milter.socket)
    milter.sync(
        [
            ("settings", "set", "login-max-messages", "1/1h"),
            ("settings", "set", "login-limit-action", "freeze"),
            ("login", "exempt", "alice@example.com", "--comment", "an application"),
        ]
    )
    since = milter.log.mark()
    for _ in range(3):
        assert reply(send(mta_sandbox, "alice@example.com")) == "250"
    milter.sync([("network", "add", "127.0.0.1/32")], reset=False)  # the sandbox's client
    for _ in range(3):
        assert reply(send(mta_sandbox, "bob@example.com")) == "250"
    milter.log.wait_for(r"rule=trusted-network client=127.0.0.1 login=bob@example.com ", since)
    assert "frozen" not in milter.store.run("login", "list")


def test_a_freeze_is_mailed_to_notify_address_through_postfix_once(
    mta_sandbox: Sandbox, milter: OurMilter
) -> None:
    mta_sandbox.postfix.use_milter(milter.socket)
    milter.sync(
        [
            ("settings", "set", "login-max-recipients", "1/1h"),
            ("settings", "set", "login-limit-action", "freeze"),
            ("settings", "set", "notify-address", "postmaster@example.net"),
            ("settings", "set", "notify-relay", f"{LOOPBACK}:{mta_sandbox.port}"),
        ]
    )
    maillog = mta_sandbox.postfix.maillog
    since, log_since = maillog.mark(), milter.log.mark()
    # bob may have a recipient counted by an earlier test on this worker: 1 or 2 sends
    replies = [reply(send(mta_sandbox, "bob@example.com")) for _ in range(2)]
    assert replies[-1] == FROZEN_REPLY and set(replies) <= {"250", FROZEN_REPLY}, replies
    milter.log.wait_for(r"event=login-notified login=bob@example.com to=postmaster@example.net ",
                        log_since)  # fmt: skip
    maillog.wait_for(r"to=<postmaster@example\.net>.*status=sent", since)
    assert reply(send(mta_sandbox, "bob@example.com")) == FROZEN_REPLY
    assert len(milter.log.find(r"event=login-notified ", log_since)) == 1, "one per freeze"
    wait_frozen(milter, "bob@example.com")  # written by the milter's next exchange
    milter.store.run("login", "unfreeze", "bob@example.com")
    # the next test on this module's milter starts from bob unfrozen there, not just stored
    milter.log.wait_for(r"event=login-unfrozen login=bob@example.com by=\S+", log_since)
