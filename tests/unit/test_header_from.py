"""require-header-from-match: header parsing, decide_header() and the milter's header/eoh flow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import Milter
import pytest
from Milter.testctx import TestCtx as MilterTestCtx

from smtpauth_milter.core.addresses import Address, AddressError, parse_header_addresses
from smtpauth_milter.core.policy import Action, Request, Rule, decide_header
from smtpauth_milter.core.settings import SETTINGS, Settings

from .test_milter import Session, mail, session  # noqa: F401
from .test_milter import make_snapshot as milter_snapshot
from .test_policy import COM, IDN, ORG, TEMPFAIL, UNTRUSTED_CLIENT, make_snapshot, request

HF_ON = {"require-header-from-match": "on"}
AUTH_REQUIRED = "530 5.7.0 Authentication required"
HF_MISMATCH = "550 5.7.1 From header not owned by authenticated user"
C, R, T = Action.CONTINUE, Action.REJECT, Action.TEMPFAIL
WR = Action.WOULD_REJECT


# --- parsing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("alice@example.com", ["alice@example.com"], id="bare"),
        pytest.param("Alice <alice@Example.COM>", ["alice@example.com"], id="display-name"),
        pytest.param("alice@example.com (Alice)", ["alice@example.com"], id="comment"),
        pytest.param("alice(x)@example.com", ["alice@example.com"], id="comment-in-local"),
        pytest.param('"Bob, the boss" <bob@example.com>', ["bob@example.com"], id="quoted-name"),
        pytest.param('"alice@example.com" <evil@remote.test>', ["evil@remote.test"], id="name-looks-like-address"),
        pytest.param("=?utf-8?q?J=C3=B6rg?= <jorg@example.com>", ["jorg@example.com"], id="encoded-word-name"),
        pytest.param("Team: a@example.com, b@example.org;", ["a@example.com", "b@example.org"], id="group"),
        pytest.param("Undisclosed:;", [], id="empty-group"),
        pytest.param("a@example.com, b@example.org", ["a@example.com", "b@example.org"], id="two"),
        pytest.param("Alice\r\n <alice@example.com>", ["alice@example.com"], id="folded"),
        pytest.param("Alice\n\t<alice@example.com>", ["alice@example.com"], id="folded-lf"),
        pytest.param("<@relay.test:alice@example.com>", ["alice@example.com"], id="source-route"),
        pytest.param('"a b"@example.com', ['"a b"@example.com'], id="quoted-local"),
        pytest.param("Ålice <ålice@exämple.com>", ["ålice@xn--exmple-cua.com"], id="smtputf8-idn"),
        pytest.param("", [], id="empty"),
    ],
)  # fmt: skip
def test_parse_header_addresses(value: str, expected: list[str]) -> None:
    assert [str(a) for a in parse_header_addresses(value)] == expected


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("garbage", id="no-domain"),
        pytest.param("alice@", id="empty-domain"),
        pytest.param("@example.com", id="empty-local"),
        pytest.param("a@b@example.com", id="two-at"),
        pytest.param("=?utf-8?q?alice=40example.com?=", id="encoded-word-address"),
        pytest.param("alice@example.com <evil@remote.test>", id="address-then-angle"),
        pytest.param("Bob <bob@remote.test> <alice@example.com>", id="two-angles"),
        pytest.param("alice <alice@example.com", id="unclosed-angle"),
        pytest.param("alice@ex(x)ample.com", id="comment-in-domain"),
        pytest.param("alice@example.com\r\nBcc: x@y.test", id="crlf-not-a-fold"),
        pytest.param("alice@example.com\x00", id="nul"),
        pytest.param("alice@exa\udcffmple.com", id="undecodable-byte"),
        pytest.param("alice@-bad-.example.com", id="bad-domain"),
        pytest.param("a@example.com" + " " * 9000, id="too-long"),
    ],
)
def test_unparseable_header_raises(value: str) -> None:
    with pytest.raises(AddressError):
        parse_header_addresses(value)


def test_parse_gives_addresses() -> None:
    assert parse_header_addresses("Alice <Alice+x@Example.com>") == [
        Address("Alice+x", "example.com")
    ]


# --- settings -----------------------------------------------------------------------------


def test_settings_defaults_and_scope() -> None:
    assert SETTINGS["require-header-from-match"].default == "off"
    assert SETTINGS["header-from-mismatch-reply"].default == HF_MISMATCH
    assert {SETTINGS[k].scope.value for k in HF_ON | {"header-from-mismatch-reply": ""}} == {
        "domain"
    }
    s = Settings.resolve({})
    assert s.require_header_from_match is False
    assert s.as_values()["header-from-mismatch-reply"] == HF_MISMATCH


def test_header_checks_flag_follows_global_and_domains() -> None:
    assert not make_snapshot().header_checks
    assert make_snapshot(HF_ON).header_checks
    assert not make_snapshot(HF_ON, domains={}).header_checks  # no local domain, nothing to check
    assert make_snapshot(domains={COM: HF_ON, ORG: {}}).header_checks
    assert not make_snapshot(
        HF_ON, domains={COM: {"require-header-from-match": "off"}}
    ).header_checks


# --- decide_header ------------------------------------------------------------------------


@dataclass(frozen=True)
class HCase:
    froms: Sequence[str]
    action: Action
    rule: Rule
    reply: str | None = None
    login: str | None = None
    senders: Sequence[str] = ()
    client: str | None = UNTRUSTED_CLIENT
    global_values: Mapping[str, str] = field(default_factory=lambda: dict(HF_ON))
    domains: Mapping[str, Mapping[str, str]] | None = None
    grants: Sequence[tuple[str, str]] = ()
    domain: str | None = None
    envelope: str = "<>"


def hcase(
    name: str, froms: Sequence[str], action: Action, rule: Rule, reply: str | None = None, **kw: Any
) -> Any:
    return pytest.param(HCase(froms, action, rule, reply, **kw), id=name)


ALICE = ["Alice <alice@example.com>"]

HCASES = [
    # setting off everywhere: nothing is looked at, not even a missing From:
    hcase("off-everywhere", [], C, Rule.HEADER_CHECKS_OFF, global_values={}),
    hcase("off-everywhere-spoofed", ALICE, C, Rule.HEADER_CHECKS_OFF, login="mallory", global_values={}),
    # trusted networks stay exempt
    hcase("trusted-network", ALICE, C, Rule.TRUSTED_NETWORK, client="192.0.2.7"),
    hcase("trusted-network-no-from", [], C, Rule.TRUSTED_NETWORK, client="192.0.2.7"),
    # the From: address is not local or not checked
    hcase("remote-from", ["x@remote.test"], C, Rule.HEADER_FROM_NOT_CHECKED),
    hcase("remote-from-group", ["List: x@remote.test;"], C, Rule.HEADER_FROM_NOT_CHECKED),
    # unauthenticated, local From:
    hcase("unauth-local", ALICE, R, Rule.HEADER_FROM_AUTH_REQUIRED, AUTH_REQUIRED, domain=COM),
    hcase("unauth-idn", ["=?utf-8?q?J=C3=B6rg?= <jorg@exämple.com>"], R, Rule.HEADER_FROM_AUTH_REQUIRED, AUTH_REQUIRED, domain="xn--exmple-cua.com"),
    hcase("unauth-custom-auth-reply", ALICE, R, Rule.HEADER_FROM_AUTH_REQUIRED, "554 5.7.1 Log in", domains={COM: {"auth-required-reply": "554 5.7.1 Log in"}, ORG: {}}),
    # ownership exactly as docs/policy.md#ownership
    hcase("owned-exact", ALICE, C, Rule.HEADER_FROM_OWNED, login="alice@example.com"),
    hcase("owned-case-and-subaddress", ["ALICE+news@Example.Com"], C, Rule.HEADER_FROM_OWNED, login="alice@example.com"),
    hcase("not-owned", ALICE, R, Rule.HEADER_FROM_MISMATCH, HF_MISMATCH, login="bob@example.com", domain=COM),
    hcase("bare-login-off", ALICE, R, Rule.HEADER_FROM_MISMATCH, HF_MISMATCH, login="alice"),
    hcase("bare-login-on", ALICE, C, Rule.HEADER_FROM_OWNED, login="alice", global_values={**HF_ON, "bare-login-match": "on"}),
    hcase("grant-exact", ALICE, C, Rule.HEADER_FROM_OWNED, login="carol", grants=[("carol", "alice@example.com")]),
    hcase("grant-domain", ALICE, C, Rule.HEADER_FROM_OWNED, login="carol", grants=[("carol", "@example.com")]),
    hcase("grant-other-domain", ALICE, R, Rule.HEADER_FROM_MISMATCH, HF_MISMATCH, login="carol", grants=[("carol", "@example.org")]),
    hcase("display-name-is-not-owned", ['"bob@example.com" <alice@example.com>'], R, Rule.HEADER_FROM_MISMATCH, HF_MISMATCH, login="bob@example.com"),
    # Sender: fallback
    hcase("sender-owned", ALICE, C, Rule.HEADER_SENDER_OWNED, login="sec@example.com", senders=["Sec <sec@example.com>"]),
    hcase("sender-owned-by-grant", ALICE, C, Rule.HEADER_SENDER_OWNED, login="carol", senders=["list@example.org"], grants=[("carol", "@example.org")]),
    hcase("sender-not-owned", ALICE, R, Rule.HEADER_FROM_MISMATCH, HF_MISMATCH, login="sec@example.com", senders=["boss@example.com"]),
    hcase("sender-two-addresses", ALICE, R, Rule.HEADER_FROM_MISMATCH, HF_MISMATCH, login="sec@example.com", senders=["sec@example.com, x@example.com"]),
    hcase("sender-twice", ALICE, R, Rule.HEADER_FROM_MISMATCH, HF_MISMATCH, login="sec@example.com", senders=["sec@example.com", "sec@example.com"]),
    hcase("sender-unparseable", ALICE, R, Rule.HEADER_FROM_MISMATCH, HF_MISMATCH, login="sec@example.com", senders=["sec@"]),
    hcase("sender-bare-login-remote", ALICE, R, Rule.HEADER_FROM_MISMATCH, HF_MISMATCH, login="sec", senders=["sec@remote.test"], global_values={**HF_ON, "bare-login-match": "on"}),
    hcase("sender-unauth", ALICE, R, Rule.HEADER_FROM_AUTH_REQUIRED, AUTH_REQUIRED, senders=["sec@example.com"]),
    # From: missing, unparseable or with several addresses
    # (scope and dry-run of bad-header-from: tests/unit/test_policy_corners.py)
    hcase("no-from", [], R, Rule.BAD_HEADER_FROM, HF_MISMATCH, login="alice@example.com", envelope="<alice@example.com>"),
    hcase("no-from-remote-envelope", [], C, Rule.HEADER_FROM_NOT_CHECKED, login="alice@example.com", envelope="<x@remote.test>"),
    hcase("empty-group-from", ["Undisclosed:;"], R, Rule.BAD_HEADER_FROM, HF_MISMATCH, envelope="<bob@example.org>", domain=ORG),
    hcase("unparseable-from", ["alice@example.com <evil@remote.test>"], R, Rule.BAD_HEADER_FROM, HF_MISMATCH, login="evil@remote.test"),
    hcase("encoded-word-address", ["=?utf-8?q?alice=40example.com?="], R, Rule.BAD_HEADER_FROM, HF_MISMATCH),
    hcase("two-from-addresses", ["alice@example.com, bob@example.com"], R, Rule.BAD_HEADER_FROM, HF_MISMATCH, login="alice@example.com"),
    hcase("two-from-fields", ["alice@example.com", "alice@example.com"], R, Rule.BAD_HEADER_FROM, HF_MISMATCH, login="alice@example.com"),
    hcase("group-two-addresses", ["Team: alice@example.com, x@remote.test;"], R, Rule.BAD_HEADER_FROM, HF_MISMATCH, login="alice@example.com"),
    hcase("two-remote-addresses", ["a@remote.test, b@remote.test"], C, Rule.HEADER_FROM_NOT_CHECKED, domains={COM: HF_ON, ORG: {}}, global_values={}),
    hcase("two-from-domain-reply", ["a@remote.test, alice@example.com"], R, Rule.BAD_HEADER_FROM, "550 5.7.1 One From please", domains={COM: {**HF_ON, "header-from-mismatch-reply": "550 5.7.1 One From please"}, ORG: {}}, global_values={}),
    # per-domain override
    hcase("domain-on-other-off", ["x@example.org"], C, Rule.HEADER_FROM_NOT_CHECKED, domains={COM: HF_ON, ORG: {}}, global_values={}),
    hcase("domain-on", ALICE, R, Rule.HEADER_FROM_AUTH_REQUIRED, AUTH_REQUIRED, domains={COM: HF_ON, ORG: {}}, global_values={}),
    hcase("domain-off-global-on", ALICE, C, Rule.HEADER_FROM_NOT_CHECKED, domains={COM: {"require-header-from-match": "off"}, ORG: {}}),
    hcase("domain-reply", ALICE, R, Rule.HEADER_FROM_MISMATCH, "554 5.7.1 Not yours", login="bob@example.com", domains={COM: {"header-from-mismatch-reply": "554 5.7.1 Not yours"}, ORG: {}}),
    hcase("domain-4xx-reply-tempfails", ALICE, T, Rule.HEADER_FROM_MISMATCH, "450 4.7.1 Later", login="bob@example.com", domains={COM: {"header-from-mismatch-reply": "450 4.7.1 Later"}, ORG: {}}),
    # dry-run
    hcase("dry-run-mismatch", ALICE, WR, Rule.HEADER_FROM_MISMATCH, HF_MISMATCH, login="bob@example.com", global_values={**HF_ON, "dry-run": "on"}),
    hcase("dry-run-auth", ALICE, WR, Rule.HEADER_FROM_AUTH_REQUIRED, AUTH_REQUIRED, domains={COM: {**HF_ON, "dry-run": "on"}, ORG: {}}, global_values={}),
    hcase("dry-run-no-from", [], WR, Rule.BAD_HEADER_FROM, HF_MISMATCH, global_values={**HF_ON, "dry-run": "on"}, envelope="<alice@example.com>"),
]  # fmt: skip


@pytest.mark.parametrize("c", HCASES)
def test_decide_header(c: HCase) -> None:
    domains = c.domains if c.domains is not None else {COM: {}, ORG: {}, IDN: {}}
    snapshot = make_snapshot(c.global_values, domains, grants=c.grants)
    verdict = decide_header(snapshot, request(c.envelope, c.login, c.client), c.froms, c.senders)
    assert (verdict.action, verdict.rule) == (c.action, c.rule)
    assert (str(verdict.reply) if verdict.reply else None) == c.reply
    if c.domain is not None:
        assert verdict.domain == c.domain


def test_every_header_rule_is_covered() -> None:
    covered = {p.values[0].rule for p in HCASES}
    assert covered == {rule for rule in Rule if "header" in rule.value} | {Rule.TRUSTED_NETWORK}


def test_the_envelope_sender_does_not_matter() -> None:
    snapshot = make_snapshot(HF_ON)
    for sender in ("<alice@example.com>", "<>", "<x@remote.test>", "<postmaster>"):
        verdict = decide_header(snapshot, request(sender, "bob@example.com"), ALICE, [])
        assert verdict.rule is Rule.HEADER_FROM_MISMATCH


def test_no_trustworthy_settings_tempfails() -> None:
    from smtpauth_milter.core.snapshot import Snapshot

    verdict = decide_header(Snapshot.unavailable(make_snapshot(HF_ON)), request("<>"), ALICE, [])
    assert (verdict.action, verdict.rule, str(verdict.reply)) == (T, Rule.NO_SETTINGS, TEMPFAIL)


def test_verdict_needs_no_login_strip() -> None:
    snapshot = make_snapshot(HF_ON)
    verdict = decide_header(snapshot, Request(None, "  ", "<>"), ALICE, [])
    assert verdict.rule is Rule.HEADER_FROM_AUTH_REQUIRED


# --- the milter: negotiation, header + eoh ---------------------------------------------------


def test_headers_are_skipped_when_the_setting_is_off(session: Session) -> None:  # noqa: F811
    ctx = session(milter_snapshot())
    assert ctx._protocol & Milter.P_NOHDRS and ctx._protocol & Milter.P_NOEOH
    assert ctx._protocol & Milter.P_NOBODY and not ctx._protocol & Milter.P_NODATA


@pytest.mark.parametrize("where", ["global", "domain"])
def test_headers_are_negotiated_when_the_setting_is_on(session: Session, where: str) -> None:  # noqa: F811
    snapshot = (
        milter_snapshot(require_header_from_match="on")
        if where == "global"
        else make_snapshot(domains={COM: {}, ORG: HF_ON})
    )
    ctx = session(snapshot)
    assert not ctx._protocol & (Milter.P_NOHDRS | Milter.P_NOEOH)
    assert ctx._protocol & Milter.P_NOBODY and ctx._protocol & Milter.P_NOHELO
    assert not ctx._protocol & Milter.P_NODATA
    assert ctx._opts[0] == Milter.SETSYMLIST
    no_reply = Milter.P_NR_HDR | Milter.P_NR_EOH | Milter.P_NR_DATA | Milter.P_NR_CONN
    assert not ctx._protocol & no_reply


def _message(ctx: MilterTestCtx, headers: list[tuple[str, str]]) -> int:
    assert ctx._data() == Milter.CONTINUE
    for name, value in headers:
        assert ctx._header(name, value) == Milter.CONTINUE
    return int(ctx._eoh())


def test_eoh_rejects_a_spoofed_from(session: Session, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    ctx = session(milter_snapshot(require_header_from_match="on"))
    caplog.set_level("INFO", logger="smtpauth_milter")
    mail(ctx, "<bob@example.org>", login="bob@example.org", queue="4Q")
    assert ctx._envrcpt("<x@remote.test>") == Milter.CONTINUE
    headers = [("Subject", "hi"), ("From", "Alice <alice@example.com>"), ("To", "x@remote.test")]
    assert _message(ctx, headers) == Milter.REJECT
    assert ctx._reply == ("550", "5.7.1", "From header not owned by authenticated user")
    line = caplog.records[-1].getMessage()
    assert line == (
        "queue=4Q action=reject rule=header-from-mismatch client=203.0.113.9 "
        'login=bob@example.org from=<bob@example.org> header_from="Alice <alice@example.com>" '
        'domain=example.com reply="550 5.7.1 From header not owned by authenticated user"'
    )


def test_eoh_sender_fallback_and_state_is_per_message(session: Session) -> None:  # noqa: F811
    ctx = session(milter_snapshot(require_header_from_match="on"))
    mail(ctx, "<sec@example.org>", login="sec@example.org")
    ctx._envrcpt("<x@remote.test>")
    headers = [("from", "alice@example.com"), ("SENDER", "sec@example.org")]
    assert _message(ctx, headers) == Milter.CONTINUE
    # next message in the same connection: the Sender: of the last one is forgotten
    mail(ctx, "<sec@example.org>", login="sec@example.org")
    ctx._envrcpt("<x@remote.test>")
    assert _message(ctx, [("From", "alice@example.com")]) == Milter.REJECT


def test_eoh_two_from_fields_and_none(session: Session) -> None:  # noqa: F811
    ctx = session(milter_snapshot(require_header_from_match="on"))
    mail(ctx, "<alice@example.com>", login="alice@example.com")
    ctx._envrcpt("<x@remote.test>")
    headers = [("From", "alice@example.com")] * 5
    assert _message(ctx, headers) == Milter.REJECT
    mail(ctx, "<alice@example.com>", login="alice@example.com")
    ctx._envrcpt("<x@remote.test>")
    assert _message(ctx, [("Subject", "no from")]) == Milter.REJECT
    mail(ctx, "<alice@example.com>", login="alice@example.com")
    ctx._envrcpt("<x@remote.test>")
    assert _message(ctx, [("From", "alice@example.com")]) == Milter.CONTINUE


def test_eoh_unauthenticated_and_trusted(session: Session) -> None:  # noqa: F811
    ctx = session(milter_snapshot(require_header_from_match="on"))
    mail(ctx, "<x@remote.test>")
    ctx._envrcpt("<bob@example.com>")
    assert _message(ctx, [("From", "alice@example.com")]) == Milter.REJECT
    assert ctx._reply == ("530", "5.7.0", "Authentication required")
    trusted = session(milter_snapshot(require_header_from_match="on"), ip="192.0.2.9")
    mail(trusted, "<x@remote.test>")
    trusted._envrcpt("<bob@example.com>")
    assert _message(trusted, [("From", "alice@example.com")]) == Milter.CONTINUE


def test_eoh_dry_run_continues(session: Session, caplog: pytest.LogCaptureFixture) -> None:  # noqa: F811
    ctx = session(milter_snapshot(require_header_from_match="on", dry_run="on"))
    caplog.set_level("INFO", logger="smtpauth_milter")
    mail(ctx, "<x@remote.test>", login="mallory@example.org")
    ctx._envrcpt("<x@remote.test>")
    assert _message(ctx, [("From", "alice@example.com")]) == Milter.CONTINUE
    assert ctx._reply is None
    assert " action=would-reject rule=header-from-mismatch " in caplog.records[-1].getMessage()


def test_eoh_without_mail_is_a_4xx(session: Session) -> None:  # noqa: F811
    ctx = session(milter_snapshot(require_header_from_match="on"))
    assert ctx._eoh() == Milter.TEMPFAIL
    assert ctx._reply is not None and ctx._reply[0] == "451"
