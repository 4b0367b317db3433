"""Alias domains, send-as-anyone and sub-addresses through a real Postfix + Dovecot SASL
and our real milter.

The store has example.com and example.net (Postfix's local domains) and
example.org, an alias domain of example.com.  Each session is real SMTP
(swaks, AUTH with a Dovecot login); each RCPT's reply and the milter's
decision line (action, rule, owned_by) are checked.  The sub-address cases
(docs/policy.md#sub-addresses) run in a sandbox of their own whose Dovecot
knows ``bob-smith@`` and ``jean-pierre@`` and whose Postfix has
``recipient_delimiter = +-``; Postfix's own check decides the map case too.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.logfile import LogFile
from tests.harness.mta import Sandbox, start_sandbox

from .login_maps_harness import COMMON, postfix_decides
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
    run_tries(mta_sandbox, milter, tries)


def run_tries(mta_sandbox: Sandbox, milter: OurMilter, tries: Sequence[Try]) -> None:
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


# --- sub-addresses: recipient-delimiter '+-' (docs/policy.md#sub-addresses) --------------

DELIMITER_USERS = {
    address: "secret-" + address.partition("@")[0]
    for address in (
        "alice@example.com",
        "bob@example.com",
        "bob-smith@example.com",
        "jean@example.com",
        "jean-pierre@example.com",
    )
}
DELIMITER = ("settings", "set", "recipient-delimiter", "+-")


@pytest.fixture(scope="module")
def delimiter_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    overrides = {**COMMON, "recipient_delimiter": "+-"}
    root = tmp_path_factory.mktemp("delimiter")
    sandbox = start_sandbox(root, DELIMITER_USERS, overrides=overrides)
    try:
        yield sandbox
    finally:
        sandbox.stop(wait=False)


@pytest.fixture(scope="module")
def delimiter_milter(delimiter_sandbox: Sandbox) -> Iterator[OurMilter]:
    store = StoreCli(delimiter_sandbox.root / "store.sqlite")
    store.run("domain", "add", "example.com", "example.net")
    config_dir = str(delimiter_sandbox.postfix.config_dir)
    store.run("settings", "set", "postfix-config-dir", config_dir)
    store.save_baseline()
    log = LogFile(delimiter_sandbox.root / "milter.log")
    ours = OurMilter(store, delimiter_sandbox.inet_milter_socket(), log).start()
    try:
        yield ours
    finally:
        delimiter_sandbox.postfix.use_milter(None)
        ours.stop()


@pytest.fixture(scope="module")
def owners_map(delimiter_sandbox: Sandbox) -> str:
    """Postfix's own answer for the mailbox bob-smith@ (and bob@)."""
    table = delimiter_sandbox.root / "owners"
    table.write_text(
        "bob-smith@example.com  bob-smith@example.com\nbob@example.com  bob@example.com\n"
    )
    table.chmod(0o644)
    return f"texthash:{Path(table)}"


def test_a_delimiter_in_a_login_or_grant_gives_nothing_away(
    delimiter_sandbox: Sandbox, delimiter_milter: OurMilter
) -> None:
    delimiter_sandbox.postfix.use_overrides({**COMMON, "recipient_delimiter": "+-"})
    delimiter_sandbox.postfix.use_milter(delimiter_milter.socket)
    grant = ("sender", "allow", "alice@example.com", "sales-team@example.com")
    delimiter_milter.sync([RSM_ON, DELIMITER, grant])
    run_tries(
        delimiter_sandbox,
        delimiter_milter,
        [
            mismatch("bob-smith@example.com", "bob@example.com"),
            mismatch("jean-pierre@example.com", "jean@example.com"),
            owned("alice@example.com", "sales-team@example.com", "grant"),
            mismatch("alice@example.com", "sales@example.com"),
            mismatch("alice@example.com", "sales-x@example.com"),
            mismatch("alice@example.com", "sales-team-x@example.com"),
            owned("bob@example.com", "bob+news@example.com", "login"),
            owned("bob@example.com", "bob-news@example.com", "login"),
        ],
    )


def test_a_map_entry_for_the_full_address_wins_as_in_postfix(
    delimiter_sandbox: Sandbox, delimiter_milter: OurMilter, owners_map: str
) -> None:
    """``bob-smith@example.com bob-smith@example.com`` keeps bob@ from sending as
    bob-smith@ under recipient_delimiter = +-: Postfix's own check and ours agree."""
    tries = [
        mismatch("bob@example.com", "bob-smith@example.com"),
        owned("bob-smith@example.com", "bob-smith@example.com", "login"),
        mismatch("bob-smith@example.com", "bob@example.com"),
        owned("bob@example.com", "bob+news@example.com", "login"),
    ]
    delimiter_sandbox.postfix.use_milter(None)
    delimiter_sandbox.postfix.use_overrides(
        postfix_decides(owners_map) | {"recipient_delimiter": "+-"}
    )
    try:
        for attempt in tries:
            assert attempt.user is not None
            got = delimiter_sandbox.smtp(attempt.mail_from, [RCPT], user=attempt.user).rcpt(RCPT)
            assert (got.code == 250) == (attempt.reply == "250"), (attempt, got)
    finally:
        delimiter_sandbox.postfix.use_overrides({**COMMON, "recipient_delimiter": "+-"})
    delimiter_sandbox.postfix.use_milter(delimiter_milter.socket)
    delimiter_milter.sync([RSM_ON, DELIMITER, ("settings", "set", "sender-login-maps", owners_map)])
    run_tries(delimiter_sandbox, delimiter_milter, tries)
