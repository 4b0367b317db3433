"""Alias domains and send-as-anyone through a real Postfix + Dovecot SASL and our real milter.

The store has example.com and example.net (Postfix's local domains) and
example.org, an alias domain of example.com.  Each session is real SMTP
(swaks, AUTH with a Dovecot login); each RCPT's reply and the milter's
decision line (action, rule, owned_by) are checked.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.harness.logfile import LogFile
from tests.harness.mta import Sandbox

from .milter_fixture import OurMilter, StoreCli, decision_for, field_of

pytestmark = pytest.mark.mta

RCPT = "x@remote.test"
MISMATCH = "553 5.7.1 Sender address rejected: not owned by authenticated user"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
RSM_ON = ("settings", "set", "require-sender-match", "on")


@dataclass(frozen=True)
class Try:
    """One session: login (None: no AUTH), MAIL FROM, and what must happen to RCPT TO."""

    user: str | None
    mail_from: str
    reply: str  # "250" or the full refusal
    rule: str
    owned_by: str = "-"


def owned(user: str, mail_from: str, form: str) -> Try:
    return Try(user, mail_from, "250", "sender-owned", form)


def mismatch(user: str, mail_from: str) -> Try:
    return Try(user, mail_from, MISMATCH, "sender-mismatch")


CASES = [
    pytest.param(
        (RSM_ON,),
        [
            owned("alice@example.com", "alice@example.org", "alias-domain"),
            owned("alice@example.com", "Alice+lists@EXAMPLE.org", "alias-domain"),
            owned("alice@example.com", "alice@example.com", "login"),
            mismatch("bob@example.com", "alice@example.org"),
            mismatch("alice@example.com", "bob@example.org"),
        ],
        id="alias-domain-owned-by-the-targets-login-only",
    ),
    pytest.param(
        (RSM_ON, ("sender", "allow", "carol", "@example.com")),
        [
            owned("carol", "anyone@example.org", "alias-domain"),
            owned("carol", "anyone@example.com", "grant-domain"),
            mismatch("carol", "anyone@example.net"),
        ],
        id="alias-domain-covered-by-a-grant-of-the-target",
    ),
    pytest.param(
        (("settings", "set", "--domain", "example.com", "require-auth-local", "on"),),
        [
            Try(None, "alice@example.org", AUTH_REQUIRED, "auth-required"),
            Try(None, "alice@example.net", "250", "auth-not-required"),
        ],
        id="alias-domain-uses-the-targets-settings",
    ),
    pytest.param(
        (RSM_ON, ("sender", "allow", "carol", "*")),
        [
            owned("carol", "postmaster@example.com", "send-as-anyone"),
            owned("carol", "bob@example.net", "send-as-anyone"),
            owned("carol", "someone@example.org", "send-as-anyone"),
            mismatch("alice@example.com", "bob@example.com"),
        ],
        id="send-as-anyone",
    ),
]


@pytest.fixture(scope="module")
def milter(tmp_path_factory: pytest.TempPathFactory, mta_sandbox: Sandbox) -> Iterator[OurMilter]:
    root = tmp_path_factory.mktemp("ownership")
    store = StoreCli(root / "store.sqlite")
    store.run("domain", "add", "example.com", "example.net")
    store.run("domain", "add", "example.org", "--alias-of", "example.com")
    store.save_baseline()
    log = LogFile(mta_sandbox.root / "ownership.log")
    ours = OurMilter(store, mta_sandbox.inet_milter_socket(), log).start()
    try:
        yield ours
    finally:
        mta_sandbox.postfix.use_milter(None)
        ours.stop()


@pytest.mark.parametrize(("setup", "tries"), CASES)
def test_ownership_through_postfix(
    mta_sandbox: Sandbox,
    milter: OurMilter,
    setup: tuple[tuple[str, ...], ...],
    tries: list[Try],
) -> None:
    mta_sandbox.postfix.use_milter(milter.socket)
    milter.sync(setup)
    for attempt in tries:
        since = milter.log.mark()
        mech = "PLAIN" if attempt.user is None or "@" in attempt.user else "LOGIN"
        result = mta_sandbox.smtp(attempt.mail_from, [RCPT], user=attempt.user, mech=mech)
        context = f"{attempt}\n{result.transcript}"
        if attempt.user is not None:
            assert result.auth is not None and result.auth.code == 235, context
        assert result.mail is not None and result.mail.code == 250, context
        got = result.rcpt(RCPT)
        if attempt.reply == "250":
            assert got.code == 250, context
        else:
            assert f"{got.code} {got.text}" == attempt.reply, context
        line = decision_for(milter.log, RCPT, since)
        assert field_of(line, "rule") == attempt.rule, line
        assert field_of(line, "login") == (attempt.user or "-"), line
        if attempt.owned_by == "-":
            assert " owned_by=" not in line, line
        else:
            assert line.endswith(f" owned_by={attempt.owned_by}"), line
