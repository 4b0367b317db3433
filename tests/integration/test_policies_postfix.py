"""Every envelope policy (docs/policy.md) through a real Postfix + Dovecot SASL and our real milter.

One ``smtpauth-milter run`` per socket kind serves the whole module; between
cases the store is reset to its baseline (``import``), changed with the CLI, and
the test waits until the milter logged the new store serial. Each case then
drives real SMTP sessions with swaks (AUTH PLAIN or LOGIN) and asserts, for
every RCPT, the reply the client got (code and text) and the milter's decision
line (action and rule).

The whole matrix runs over an inet socket; a representative subset over a unix
socket that Postfix (user postfix) writes to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.harness.logfile import LogFile
from tests.harness.mta import Sandbox

from .milter_fixture import OurMilter, StoreCli, decision_for, field_of

pytestmark = pytest.mark.mta

LOCAL_DOMAINS = ("example.com", "example.net")
LOCAL = "bob@example.net"  # local recipient
LOCAL_MIXED = "carol@Example.COM"  # local recipient, domain in mixed case
REMOTE = "x@remote.test"  # not a local domain
REMOTE2 = "y@other.test"
ALICE = "alice@example.com"
CAROL = "carol"  # a login without a domain


@dataclass(frozen=True)
class Expect:
    code: int
    text: str
    action: str
    rule: str
    reply: str | None = None  # the reply in the milter's log line


def ok(rule: str) -> Expect:
    return Expect(250, "2.1.5 Ok", "continue", rule)


def refused(reply: str, rule: str, action: str = "reject") -> Expect:
    code, _, text = reply.partition(" ")
    return Expect(int(code), text, action, rule, reply)


def would(reply: str, rule: str) -> Expect:
    """dry-run: the client gets 250, the log says what would have been refused."""
    return Expect(250, "2.1.5 Ok", "would-reject", rule, reply)


AUTH_REPLY = "530 5.7.0 Authentication required"
MISMATCH_REPLY = "553 5.7.1 Sender address rejected: not owned by authenticated user"
BAD_REPLY = "553 5.1.7 Bad sender address syntax"
CUSTOM = "550 5.7.1 Custom text"

AUTH = refused(AUTH_REPLY, "auth-required")
ROLE = refused(AUTH_REPLY, "role-auth-required")
MISMATCH = refused(MISMATCH_REPLY, "sender-mismatch")
BAD = refused(BAD_REPLY, "bad-sender")
OWNED = ok("sender-owned")
AUTHED = ok("authenticated")
NOT_REQUIRED = ok("auth-not-required")


@dataclass(frozen=True)
class Session:
    """One SMTP session: MAIL FROM, optional AUTH, and the expected outcome per RCPT."""

    mail_from: str
    expect: dict[str, Expect]
    user: str | None = None
    mech: str = "PLAIN"


@dataclass(frozen=True)
class Case:
    id: str
    setup: tuple[tuple[str, ...], ...]
    sessions: tuple[Session, ...]
    unix: bool = False  # also in the unix-socket subset
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())


def s(*argv: str) -> tuple[str, ...]:
    return argv


def setting(key: str, value: str, domain: str | None = None) -> tuple[str, ...]:
    scope = ("--domain", domain) if domain else ()
    return ("settings", "set", *scope, key, value)


def unset(key: str, domain: str | None = None) -> tuple[str, ...]:
    scope = ("--domain", domain) if domain else ()
    return ("settings", "unset", *scope, key)


RAL_ON = setting("require-auth-local", "on")
RSM_ON = setting("require-sender-match", "on")


def unauth(mail_from: str, **expect: Expect) -> Session:
    return Session(mail_from, _rcpts(expect))


def login(user: str, mail_from: str, mech: str = "PLAIN", **expect: Expect) -> Session:
    return Session(mail_from, _rcpts(expect), user=user, mech=mech)


_RCPT_NAMES = {"local": LOCAL, "local_mixed": LOCAL_MIXED, "remote": REMOTE, "remote2": REMOTE2}


def _rcpts(expect: dict[str, Expect]) -> dict[str, Expect]:
    return {_RCPT_NAMES[name]: value for name, value in expect.items()}


# --------------------------------------------------------------------------- the matrix

CASES: list[Case] = [
    # --- rule 2: trusted networks, as Postfix reports the client (127.0.0.1)
    Case(
        "trusted-network-exempts-everything",
        (s("network", "add", "127.0.0.1/32", "--comment", "test client"), RAL_ON, RSM_ON),
        (
            unauth("postmaster@example.com", local=ok("trusted-network"), remote=ok("trusted-network")),
            unauth("postmaster", local=ok("trusted-network")),  # even before the parse check
            login(ALICE, "bob@example.com", remote=ok("trusted-network")),
        ),
        unix=True,
    ),
    Case(
        "untrusted-network-is-checked",
        (s("network", "add", "192.0.2.0/24"), s("network", "add", "2001:db8::/32"), RAL_ON),
        (unauth("postmaster@example.com", local=ROLE, remote=ROLE),),
    ),
    # --- rule 3: an unparseable sender
    Case(
        "bad-sender-unqualified",
        (),
        (unauth("postmaster", local=BAD, remote=BAD), login(ALICE, "alice", remote=BAD)),
    ),
    Case(
        "bad-sender-custom-reply",
        (setting("bad-sender-reply", "550 5.1.7 Custom bad sender"),),
        (unauth("postmaster", remote=refused("550 5.1.7 Custom bad sender", "bad-sender")),),
    ),
    # --- rule 4: null and non-local senders
    Case(
        "null-sender-continues",
        (RAL_ON,),
        (unauth("<>", local=ok("null-sender"), remote=ok("null-sender")),),
        unix=True,
    ),
    Case(
        "non-local-sender-continues",
        (RAL_ON, RSM_ON),
        (
            unauth("someone@remote.test", local=ok("non-local-sender"), remote=ok("non-local-sender")),
            unauth("postmaster@remote.test", local=ok("non-local-sender")),
            unauth("postmaster@mail.example.com", local=ok("non-local-sender")),
            login(ALICE, "someone@remote.test", remote=ok("non-local-sender")),
        ),
    ),
    # --- rule 6: authenticated sessions
    Case(
        "authenticated-default-any-local-sender",
        (),
        (
            login(ALICE, "bob@example.com", local=AUTHED, remote=AUTHED),
            login(ALICE, "postmaster@example.net", remote=AUTHED),
            login(CAROL, "alice@example.com", mech="LOGIN", remote=AUTHED),
        ),
        unix=True,
    ),
    Case(
        "require-sender-match-on",
        (RSM_ON,),
        (
            login(ALICE, "bob@example.com", local=MISMATCH, remote=MISMATCH),
            login(ALICE, "alice@example.com", local=OWNED, remote=OWNED),
            login(ALICE, "Alice+Lists@EXAMPLE.com", remote=OWNED),
            login(ALICE, "alice@example.com", mech="LOGIN", remote=OWNED),
            login(CAROL, "carol@example.com", mech="LOGIN", remote=MISMATCH),
        ),
        unix=True,
    ),
    Case(
        "require-sender-match-domain-on",
        (setting("require-sender-match", "on", "example.com"),),
        (
            login(ALICE, "bob@example.com", remote=MISMATCH),
            login(ALICE, "bob@example.net", remote=AUTHED),
        ),
    ),
    Case(
        "require-sender-match-domain-off",
        (RSM_ON, setting("require-sender-match", "off", "example.net")),
        (
            login(ALICE, "bob@example.net", remote=AUTHED),
            login(ALICE, "bob@example.com", remote=MISMATCH),
        ),
    ),
    Case(
        "require-sender-match-unset-inherits",
        (
            RSM_ON,
            setting("require-sender-match", "off", "example.com"),
            unset("require-sender-match", "example.com"),
        ),
        (login(ALICE, "bob@example.com", remote=MISMATCH),),
    ),
    Case(
        "require-sender-match-global-unset-default-off",
        (RSM_ON, unset("require-sender-match")),
        (login(ALICE, "bob@example.com", remote=AUTHED),),
    ),
    Case(
        "send-as-grant-exact-address",
        (RSM_ON, s("sender", "allow", ALICE, "bob@example.com")),
        (
            login(ALICE, "bob@example.com", local=OWNED, remote=OWNED),
            login(ALICE, "Bob+x@Example.com", remote=OWNED),
            login(ALICE, "postmaster@example.com", remote=MISMATCH),
            login("bob@example.com", "bob@example.com", remote=OWNED),
        ),
    ),
    Case(
        "send-as-grant-whole-domain",
        (RSM_ON, s("sender", "allow", ALICE, "@example.net")),
        (
            login(ALICE, "anyone@example.net", local=OWNED, remote=OWNED),
            login(ALICE, "bob@example.com", remote=MISMATCH),
            login("bob@example.com", "anyone@example.net", remote=MISMATCH),
        ),
        unix=True,
    ),
    Case(
        "send-as-grant-to-bare-login",
        (RSM_ON, s("sender", "allow", CAROL, "sales@example.com")),
        (
            login(CAROL, "sales@example.com", mech="LOGIN", remote=OWNED),
            login(CAROL, "carol@example.com", mech="LOGIN", remote=MISMATCH),
        ),
    ),
    Case(
        "bare-login-match-on",
        (RSM_ON, setting("bare-login-match", "on")),
        (
            login(CAROL, "carol@example.com", mech="LOGIN", remote=OWNED),
            login(CAROL, "Carol+x@example.net", remote=OWNED),
            login(CAROL, "alice@example.com", mech="LOGIN", remote=MISMATCH),
        ),
    ),
    Case(
        "bare-login-match-domain-on",
        (RSM_ON, setting("bare-login-match", "on", "example.net")),
        (
            login(CAROL, "carol@example.net", mech="LOGIN", remote=OWNED),
            login(CAROL, "carol@example.com", mech="LOGIN", remote=MISMATCH),
        ),
    ),
    Case(
        "bare-login-match-domain-off",
        (RSM_ON, setting("bare-login-match", "on"), setting("bare-login-match", "off", "example.com")),
        (
            login(CAROL, "carol@example.com", mech="LOGIN", remote=MISMATCH),
            login(CAROL, "carol@example.net", mech="LOGIN", remote=OWNED),
        ),
    ),
    Case(
        "sender-mismatch-custom-reply",
        (RSM_ON, setting("sender-mismatch-reply", CUSTOM)),
        (login(ALICE, "bob@example.com", local=refused(CUSTOM, "sender-mismatch")),),
        unix=True,
    ),
    Case(
        "sender-mismatch-custom-reply-per-domain",
        (RSM_ON, setting("sender-mismatch-reply", "554 5.7.1 Not yours on example.net", "example.net")),
        (
            login(ALICE, "bob@example.net", remote=refused("554 5.7.1 Not yours on example.net", "sender-mismatch")),
            login(ALICE, "bob@example.com", remote=MISMATCH),
        ),
    ),
    Case(
        "recipient-delimiter-default-plus",
        (RSM_ON,),
        (login(ALICE, "alice-lists@example.com", remote=MISMATCH),),
    ),
    Case(
        "recipient-delimiter-custom",
        (RSM_ON, setting("recipient-delimiter", "-")),
        (
            login(ALICE, "alice-lists@example.com", remote=OWNED),
            login(ALICE, "alice+lists@example.com", remote=MISMATCH),
        ),
    ),
    Case(
        "recipient-delimiter-empty-turns-sub-addresses-off",
        (RSM_ON, setting("recipient-delimiter", "")),
        (login(ALICE, "alice+lists@example.com", remote=MISMATCH),),
    ),
    # --- rule 7: unauthenticated, role senders
    Case(
        "role-sender-default-needs-login",
        (),
        (
            unauth("postmaster@example.com", local=ROLE, remote=ROLE),
            unauth("PostMaster@Example.COM", local=ROLE),
            unauth("abuse+reports@example.net", remote=ROLE),
            unauth("WEBMASTER+x@EXAMPLE.NET", remote=ROLE),
            unauth("alice@example.com", local=NOT_REQUIRED, remote=NOT_REQUIRED),
        ),
        unix=True,
    ),
    Case(
        "role-sender-off",
        (setting("require-auth-role", "off"),),
        (unauth("postmaster@example.com", local=NOT_REQUIRED, remote=NOT_REQUIRED),),
    ),
    Case(
        "role-sender-domain-off",
        (setting("require-auth-role", "off", "example.net"),),
        (
            unauth("postmaster@example.net", remote=NOT_REQUIRED),
            unauth("postmaster@example.com", remote=ROLE),
        ),
    ),
    Case(
        "role-sender-domain-on",
        (setting("require-auth-role", "off"), setting("require-auth-role", "on", "example.com")),
        (
            unauth("Postmaster@example.com", remote=ROLE),
            unauth("postmaster@example.net", remote=NOT_REQUIRED),
        ),
    ),
    Case(
        "role-sender-unset-inherits",
        (
            setting("require-auth-role", "off"),
            setting("require-auth-role", "on", "example.com"),
            unset("require-auth-role", "example.com"),
        ),
        (unauth("postmaster@example.com", remote=NOT_REQUIRED),),
    ),
    Case(
        "role-sender-global-unset-default-on",
        (setting("require-auth-role", "off"), unset("require-auth-role")),
        (unauth("postmaster@example.com", remote=ROLE),),
    ),
    Case(
        "role-senders-custom-list",
        (setting("role-senders", "billing, hostmaster"),),
        (
            unauth("HostMaster@example.com", remote=ROLE),
            unauth("billing+x@example.net", remote=ROLE),
            unauth("postmaster@example.com", remote=NOT_REQUIRED),
        ),
    ),
    Case(
        "role-senders-per-domain",
        (setting("role-senders", "billing", "example.net"),),
        (
            unauth("billing@example.net", remote=ROLE),
            unauth("postmaster@example.net", remote=NOT_REQUIRED),
            unauth("billing@example.com", remote=NOT_REQUIRED),
            unauth("postmaster@example.com", remote=ROLE),
        ),
    ),
    Case(
        "role-sender-authenticated-continues",
        (),
        (login(ALICE, "postmaster@example.com", local=AUTHED, remote=AUTHED),),
    ),
    # --- rule 7: require-auth-local and exempt-local-recipients
    Case(
        "require-auth-local-default-off",
        (),
        (unauth("alice@example.com", local=NOT_REQUIRED, remote=NOT_REQUIRED),),
    ),
    Case(
        "require-auth-local-on",
        (RAL_ON,),
        (
            unauth("alice@example.com", local=AUTH, remote=AUTH, local_mixed=AUTH),
            unauth("Alice+x@Example.NET", remote=AUTH),
            login(ALICE, "alice@example.com", local=AUTHED, remote=AUTHED),
        ),
        unix=True,
    ),
    Case(
        "require-auth-local-domain-on",
        (setting("require-auth-local", "on", "example.com"),),
        (
            unauth("alice@example.com", remote=AUTH),
            unauth("someone@example.net", remote=NOT_REQUIRED),
        ),
    ),
    Case(
        "require-auth-local-domain-off",
        (RAL_ON, setting("require-auth-local", "off", "example.net")),
        (
            unauth("someone@example.net", remote=NOT_REQUIRED),
            unauth("alice@example.com", remote=AUTH),
        ),
    ),
    Case(
        "require-auth-local-unset-inherits",
        (
            RAL_ON,
            setting("require-auth-local", "off", "example.com"),
            unset("require-auth-local", "example.com"),
        ),
        (unauth("alice@example.com", remote=AUTH),),
    ),
    Case(
        "exempt-local-recipients-mixed-message",
        (RAL_ON, setting("exempt-local-recipients", "on")),
        (
            unauth(
                "alice@example.com",
                local=ok("local-recipient"),
                remote=AUTH,
                local_mixed=ok("local-recipient"),
                remote2=AUTH,
            ),
            unauth("postmaster@example.com", local=ROLE, remote=ROLE),
        ),
        unix=True,
    ),
    Case(
        "exempt-local-recipients-default-off",
        (RAL_ON, setting("exempt-local-recipients", "on"), unset("exempt-local-recipients")),
        (unauth("alice@example.com", local=AUTH, remote=AUTH),),
    ),
    Case(
        "exempt-local-recipients-domain-on",
        (RAL_ON, setting("exempt-local-recipients", "on", "example.com")),
        (
            unauth("alice@example.com", local=ok("local-recipient"), remote=AUTH),
            unauth("someone@example.net", local=AUTH, remote=AUTH),
        ),
    ),
    Case(
        "exempt-local-recipients-domain-off",
        (RAL_ON, setting("exempt-local-recipients", "on"), setting("exempt-local-recipients", "off", "example.net")),
        (
            unauth("someone@example.net", local=AUTH, local_mixed=AUTH),
            unauth("alice@example.com", local=ok("local-recipient"), remote=AUTH),
        ),
    ),
    # --- dry-run
    Case(
        "dry-run-accepts-and-logs-would-reject",
        (RAL_ON, RSM_ON, setting("dry-run", "on")),
        (
            unauth(
                "alice@example.com",
                local=would(AUTH_REPLY, "auth-required"),
                remote=would(AUTH_REPLY, "auth-required"),
            ),
            unauth("postmaster@example.com", local=would(AUTH_REPLY, "role-auth-required")),
            login(ALICE, "bob@example.com", remote=would(MISMATCH_REPLY, "sender-mismatch")),
            unauth("postmaster", local=would(BAD_REPLY, "bad-sender")),
        ),
        unix=True,
    ),
    Case(
        "dry-run-domain-on",
        (RAL_ON, setting("dry-run", "on", "example.net")),
        (
            unauth("someone@example.net", remote=would(AUTH_REPLY, "auth-required")),
            unauth("alice@example.com", remote=AUTH),
        ),
    ),
    Case(
        "dry-run-domain-off",
        (RAL_ON, setting("dry-run", "on"), setting("dry-run", "off", "example.com")),
        (
            unauth("alice@example.com", remote=AUTH),
            unauth("someone@example.net", remote=would(AUTH_REPLY, "auth-required")),
        ),
    ),
    # --- custom replies reach the client exactly as configured
    Case(
        "auth-required-custom-reply",
        (RAL_ON, setting("auth-required-reply", CUSTOM)),
        (
            unauth("alice@example.com", local=refused(CUSTOM, "auth-required"), remote=refused(CUSTOM, "auth-required")),
            unauth("postmaster@example.com", remote=refused(CUSTOM, "role-auth-required")),
        ),
        unix=True,
    ),
    Case(
        "auth-required-custom-reply-with-percent",
        (RAL_ON, setting("auth-required-reply", "550 5.7.1 100% sure: log in first")),
        (unauth("alice@example.com", remote=refused("550 5.7.1 100% sure: log in first", "auth-required")),),
    ),
    Case(
        "auth-required-custom-reply-per-domain",
        (RAL_ON, setting("auth-required-reply", "554 5.7.1 Log in to send as example.net", "example.net")),
        (
            unauth("someone@example.net", remote=refused("554 5.7.1 Log in to send as example.net", "auth-required")),
            unauth("alice@example.com", remote=AUTH),
        ),
    ),
    Case(
        "auth-required-custom-4xx-reply-tempfails",
        (RAL_ON, setting("auth-required-reply", "450 4.7.1 Log in first, then retry")),
        (
            unauth(
                "alice@example.com",
                remote=refused("450 4.7.1 Log in first, then retry", "auth-required", "tempfail"),
            ),
        ),
    ),
]  # fmt: skip

UNIX_CASES = [case for case in CASES if case.unix]


def _params(cases: list[Case]) -> list[object]:
    return [pytest.param(case, id=case.id, marks=case.marks) for case in cases]


# --------------------------------------------------------------------------- fixtures


def _start(
    tmp_path_factory: pytest.TempPathFactory, sandbox: Sandbox, name: str, socket: str
) -> OurMilter:
    root = tmp_path_factory.mktemp(f"policy-{name}")
    store = StoreCli(root / "store.sqlite")
    store.run("domain", "add", *LOCAL_DOMAINS)
    store.save_baseline()
    milter = OurMilter(store, socket, LogFile(sandbox.root / f"policy-{name}.log"))
    return milter.start()


@pytest.fixture(scope="module")
def inet_milter(
    tmp_path_factory: pytest.TempPathFactory, mta_sandbox: Sandbox
) -> Iterator[OurMilter]:
    milter = _start(tmp_path_factory, mta_sandbox, "inet", mta_sandbox.inet_milter_socket())
    try:
        yield milter
    finally:
        mta_sandbox.postfix.use_milter(None)
        milter.stop()


@pytest.fixture(scope="module")
def unix_milter(
    tmp_path_factory: pytest.TempPathFactory, mta_sandbox: Sandbox
) -> Iterator[OurMilter]:
    socket = mta_sandbox.unix_milter_socket("smtpauth-policy")
    milter = _start(tmp_path_factory, mta_sandbox, "unix", socket)
    try:
        yield milter
    finally:
        mta_sandbox.postfix.use_milter(None)
        milter.stop()


# --------------------------------------------------------------------------- the checks


def run_case(sandbox: Sandbox, milter: OurMilter, case: Case) -> None:
    sandbox.postfix.use_milter(milter.socket)
    milter.sync(case.setup)
    for session in case.sessions:
        since = milter.log.mark()
        rcpts = list(session.expect)
        result = sandbox.smtp(session.mail_from, rcpts, user=session.user, mech=session.mech)
        context = f"{case.id}: {session}\n{result.transcript}"
        if session.user is not None:
            assert result.auth is not None and result.auth.code == 235, context
        assert result.mail is not None and result.mail.code == 250, context
        assert [r.rcpt for r in result.rcpts] == rcpts, context
        for rcpt, expect in session.expect.items():
            got = result.rcpt(rcpt)
            assert (got.code, got.text) == (expect.code, expect.text), context
            line = decision_for(milter.log, rcpt, since)
            assert (field_of(line, "action"), field_of(line, "rule")) == (
                expect.action,
                expect.rule,
            ), line
            if expect.reply is not None:
                assert f'reply="{expect.reply}"' in line, line
            assert field_of(line, "login") == (session.user or "-"), line


@pytest.mark.parametrize("case", _params(CASES))
def test_policy_over_inet_socket(mta_sandbox: Sandbox, inet_milter: OurMilter, case: Case) -> None:
    run_case(mta_sandbox, inet_milter, case)


@pytest.mark.parametrize("case", _params(UNIX_CASES))
def test_policy_over_unix_socket(mta_sandbox: Sandbox, unix_milter: OurMilter, case: Case) -> None:
    assert unix_milter.socket_mode == 0o660  # as the milter created it, before chgrp
    run_case(mta_sandbox, unix_milter, case)


def test_queue_id_logged_from_second_rcpt(mta_sandbox: Sandbox, inet_milter: OurMilter) -> None:
    """Postfix sends ``i`` from the 2nd RCPT on; it is Postfix's queue id for the message."""
    mta_sandbox.postfix.use_milter(inet_milter.socket)
    inet_milter.sync((RAL_ON, setting("exempt-local-recipients", "on")))
    since, maillog_since = inet_milter.log.mark(), mta_sandbox.maillog.mark()

    result = mta_sandbox.smtp("alice@example.com", [LOCAL, REMOTE, LOCAL_MIXED])

    assert [r.code for r in result.rcpts] == [250, 530, 250], result.transcript
    first, second, third = (
        field_of(decision_for(inet_milter.log, rcpt, since), "queue")
        for rcpt in (LOCAL, REMOTE, LOCAL_MIXED)
    )
    assert first == "-"
    assert re.fullmatch(r"[0-9A-Za-z]{6,}", second), second
    assert third == second
    mta_sandbox.maillog.wait_for(rf"\b{second}: client=", maillog_since)


def test_client_address_is_what_postfix_reports(
    mta_sandbox: Sandbox, inet_milter: OurMilter
) -> None:
    mta_sandbox.postfix.use_milter(inet_milter.socket)
    inet_milter.sync(())
    since = inet_milter.log.mark()
    mta_sandbox.smtp("postmaster@example.com", [REMOTE])
    line = decision_for(inet_milter.log, REMOTE, since)
    assert field_of(line, "client") == "127.0.0.1", line
    assert field_of(line, "from") == "<postmaster@example.com>", line


def test_every_case_has_distinct_id() -> None:
    assert len({case.id for case in CASES}) == len(CASES)
