"""Policy corners: the scope of bad-header-from, recipients the MTA routes elsewhere,
role senders with a delimiter inside their name, and guessing a broken From:'s domains."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpauth_milter.core.addresses import header_domains
from smtpauth_milter.core.policy import Action, Rule, decide, decide_header
from smtpauth_milter.core.snapshot import Snapshot

from .test_policy import COM, ORG, make_snapshot, request
from .test_properties import ANY_TEXT, ENVELOPE_TEXT, PROPERTY, snapshots

HF_MISMATCH = "550 5.7.1 From header not owned by authenticated user"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
NET = "example.net"  # a third local domain, with its own reply
NET_REPLY = "554 5.7.1 One From on example.net"
C, R, WR = Action.CONTINUE, Action.REJECT, Action.WOULD_REJECT

# --- 4. bad-header-from applies only to a domain with the rule in effect ----------------------
#
# example.com has require-header-from-match on, example.org (local) has it off,
# remote.test is not local.  Expected: whether the header rule refuses, written
# out per kind of From:, for an envelope sender in example.com ("checked") and
# for every other envelope sender ("unchecked").

BAD, NOT_CHECKED, AUTH = (
    Rule.BAD_HEADER_FROM,
    Rule.HEADER_FROM_NOT_CHECKED,
    Rule.HEADER_FROM_AUTH_REQUIRED,
)

#            kind:                 (From: values,                                   checked envelope,  other envelope)
FROMS: dict[str, tuple[list[str], tuple[Rule, str | None], tuple[Rule, str | None]]] = {
    "missing":                     ([],                                              (BAD, COM),        (NOT_CHECKED, None)),
    "empty-group":                 (["Undisclosed recipients:;"],                    (BAD, COM),        (NOT_CHECKED, None)),
    "two-remote":                  (["a@remote.test, b@remote.test"],                (BAD, COM),        (NOT_CHECKED, None)),
    "two-remote-fields":           (["a@remote.test", "b@remote.test"],              (BAD, COM),        (NOT_CHECKED, None)),
    "two-with-rule-off":           (["a@remote.test, o@example.org"],                (BAD, COM),        (NOT_CHECKED, None)),
    "two-with-rule-on":            (["a@remote.test, alice@example.com"],            (BAD, COM),        (BAD, COM)),
    "two-fields-rule-on":          (["alice@example.com", "alice@example.com"],      (BAD, COM),        (BAD, COM)),
    "group-with-rule-on":          (["Team: x@remote.test, alice@example.com;"],     (BAD, COM),        (BAD, COM)),
    "unparseable-remote":          (["x@remote.test <evil@remote.test>"],            (BAD, COM),        (NOT_CHECKED, None)),
    "unparseable-rule-off":        (["o@example.org <evil@remote.test>"],            (BAD, COM),        (NOT_CHECKED, None)),
    "unparseable-rule-on":         (["alice@example.com <evil@remote.test>"],        (BAD, COM),        (BAD, COM)),
    "unparseable-rule-on-quoted":  (['"Alice" <alice@Example.COM'],                  (BAD, COM),        (BAD, COM)),
    "encoded-address-rule-on":     (["=?utf-8?q?alice=40example.com?="],             (BAD, COM),        (BAD, COM)),
    "comment-in-domain-rule-on":   (["alice@exam(x)ple.com"],                        (BAD, COM),        (BAD, COM)),
    "unparseable-no-domain":       (["garbage"],                                     (BAD, COM),        (NOT_CHECKED, None)),
    "one-remote":                  (["x@remote.test"],                               (NOT_CHECKED, "remote.test"), (NOT_CHECKED, "remote.test")),
    "one-rule-off":                (["o@example.org"],                               (NOT_CHECKED, ORG), (NOT_CHECKED, ORG)),
    "one-rule-on":                 (["Alice <alice@example.com>"],                   (AUTH, COM),       (AUTH, COM)),
}  # fmt: skip

ENVELOPES = {
    "checked": "<alice+x@Example.COM>",
    "checked-batv": "<prvs=1234abcd=alice@example.com>",
    "rule-off": "<o@example.org>",
    "remote": "<x@remote.test>",
    "null": "<>",
    "unparseable": "<postmaster>",
}


@pytest.mark.parametrize(
    "domain_dry_run", [False, True], ids=["domain-enforcing", "domain-dry-run"]
)
@pytest.mark.parametrize("envelope", list(ENVELOPES))
@pytest.mark.parametrize("kind", list(FROMS))
def test_bad_header_from_scope_and_dry_run(kind: str, envelope: str, domain_dry_run: bool) -> None:
    """example.com's own dry-run decides, whatever the global one (set to the opposite) says."""
    froms, when_checked, otherwise = FROMS[kind]
    rule, domain = when_checked if envelope.startswith("checked") else otherwise
    snapshot = make_snapshot(
        {"dry-run": "off" if domain_dry_run else "on"},
        {
            COM: {"require-header-from-match": "on", "dry-run": "on" if domain_dry_run else "off"},
            ORG: {},
        },
    )
    verdict = decide_header(snapshot, request(ENVELOPES[envelope]), froms, [])
    refused = rule in (BAD, AUTH)
    expected_action = (WR if domain_dry_run else R) if refused else C
    assert (verdict.action, verdict.rule, verdict.domain) == (expected_action, rule, domain)
    expected_reply = {BAD: HF_MISMATCH, AUTH: AUTH_REQUIRED}.get(rule)
    assert (str(verdict.reply) if verdict.reply else None) == expected_reply


def _three_domains() -> dict[str, dict[str, str]]:
    on = {"require-header-from-match": "on"}
    return {
        COM: {**on, "header-from-mismatch-reply": "550 5.7.1 One From on example.com"},
        NET: {**on, "header-from-mismatch-reply": NET_REPLY, "dry-run": "on"},
        ORG: {},
    }


@pytest.mark.parametrize(
    ("froms", "envelope", "action", "domain", "reply"),
    [
        pytest.param(["x@remote.test, n@example.net, alice@example.com"], "<>", WR, NET, NET_REPLY, id="first-from-domain-with-rule-on"),
        pytest.param(["o@example.org, alice@example.com, n@example.net"], "<>", R, COM, "550 5.7.1 One From on example.com", id="rule-off-domain-skipped"),
        pytest.param(["x@remote.test, n@example.net"], "<alice@example.com>", WR, NET, NET_REPLY, id="from-domain-before-envelope"),
        pytest.param([], "<n@example.net>", WR, NET, NET_REPLY, id="envelope-domain-dry-run"),
        pytest.param([], "<alice@example.com>", R, COM, "550 5.7.1 One From on example.com", id="envelope-domain-enforcing"),
    ],
)  # fmt: skip
def test_bad_header_from_uses_the_settings_of_that_domain(
    froms: Sequence[str], envelope: str, action: Action, domain: str, reply: str
) -> None:
    snapshot = make_snapshot({}, _three_domains())
    verdict = decide_header(snapshot, request(envelope), froms, [])
    assert (verdict.action, verdict.rule) == (action, BAD)
    assert (verdict.domain, str(verdict.reply)) == (domain, reply)


def test_global_rule_on_a_domain_turned_off_is_not_checked() -> None:
    snapshot = make_snapshot(
        {"require-header-from-match": "on"},
        {COM: {"require-header-from-match": "off"}, ORG: {}},
    )
    for envelope in ("<alice@example.com>", "<x@remote.test>"):
        verdict = decide_header(snapshot, request(envelope), ["a@x.test, b@y.test"], [])
        assert (verdict.action, verdict.rule) == (C, NOT_CHECKED)
    verdict = decide_header(snapshot, request("<o@example.org>"), [], [])
    assert (verdict.action, verdict.rule, verdict.domain) == (R, BAD, ORG)


@pytest.mark.parametrize(
    ("value", "domains"),
    [
        pytest.param("a@remote.test, Alice <alice@Example.COM>", ["remote.test", "example.com"], id="parsed"),
        pytest.param("alice@example.com <evil@remote.test>", ["example.com", "remote.test"], id="address-then-angle"),
        pytest.param('"x" <alice@example.com', ["example.com"], id="unclosed-angle"),
        pytest.param("=?utf-8?q?alice=40example.com?=", ["example.com"], id="encoded-word"),
        pytest.param("=?utf-8?b?YWxpY2VAZXhhbXBsZS5jb20=?=", ["example.com"], id="encoded-word-base64"),
        pytest.param("alice@exam(x)ple.com", ["exam", "example.com"], id="comment-in-domain"),
        pytest.param("Bob <b@remote.test> <alice @ example.com>", ["remote.test", "example.com"], id="spaces-around-at"),
        pytest.param("alice@example.com\u200b", ["example.com"], id="invisible-character"),
        pytest.param("alice@exämple.com <x", ["xn--exmple-cua.com", "ex"], id="idn"),
        pytest.param("garbage", [], id="no-at"),
        pytest.param("alice@", [], id="empty-domain"),
    ],
)  # fmt: skip
def test_header_domains_finds_every_domain_a_reader_might_show(
    value: str, domains: list[str]
) -> None:
    assert header_domains([value]) == domains


def test_header_domains_of_several_fields_in_order_once() -> None:
    assert header_domains(["b@y.test, a@x.test", "c@x.test", "junk <d@y.test"]) == [
        "y.test",
        "x.test",
    ]


# --- 5. a recipient the MTA may route elsewhere is not local ---------------------------------

EXEMPT = {"require-auth-local": "on", "exempt-local-recipients": "on"}


@pytest.mark.parametrize(
    ("rcpt", "rule"),
    [
        pytest.param("<bob@example.com>", Rule.LOCAL_RECIPIENT, id="plain-local"),
        pytest.param("<bob+news@example.org>", Rule.LOCAL_RECIPIENT, id="sub-addressed-local"),
        pytest.param("<victim%gmail.com@example.com>", Rule.AUTH_REQUIRED, id="percent-hack"),
        pytest.param("<gmail.com!victim@example.com>", Rule.AUTH_REQUIRED, id="bang-path"),
        pytest.param('<"victim%gmail.com"@example.com>', Rule.AUTH_REQUIRED, id="quoted-percent"),
        pytest.param('<"gmail.com!victim"@example.com>', Rule.AUTH_REQUIRED, id="quoted-bang"),
        pytest.param('<"victim@gmail.com"@example.com>', Rule.AUTH_REQUIRED, id="quoted-at"),
        pytest.param("<a%b%gmail.com@example.org>", Rule.AUTH_REQUIRED, id="percent-twice"),
        pytest.param("<@example.com:victim@gmail.com>", Rule.AUTH_REQUIRED, id="source-route"),
    ],
)
def test_routed_recipients_are_not_local(rcpt: str, rule: Rule) -> None:
    verdict = decide(make_snapshot(EXEMPT), request("<alice@example.com>"), rcpt)
    assert verdict.rule is rule
    assert verdict.action is (C if rule is Rule.LOCAL_RECIPIENT else R)


# --- 6. role senders match as written --------------------------------------------------------

ROLES = {"role-senders": "no-reply, mailer-daemon, postmaster, abuse"}


@pytest.mark.parametrize(
    ("sender", "delimiter", "role"),
    [
        pytest.param("no-reply", "+-", True, id="dash-in-role-dash-delimiter"),
        pytest.param("Mailer-Daemon", "+-", True, id="mailer-daemon-mixed-case"),
        pytest.param("no-reply+bounces", "+-", True, id="role-then-sub-address"),
        pytest.param("no-reply-x", "+-", True, id="role-then-dash-sub-address"),
        pytest.param("postmaster-x", "+-", True, id="cut-at-dash"),
        pytest.param("postmaster+x", "+-", True, id="cut-at-plus"),
        pytest.param("no-replyx", "+-", False, id="longer-word"),
        pytest.param("no", "+-", False, id="prefix-of-role"),
        pytest.param("abuse-desk", "+", False, id="dash-not-a-delimiter"),
        pytest.param("abuse+x", "", False, id="delimiters-off"),
        pytest.param("no-reply", "", True, id="delimiters-off-whole"),
        pytest.param("-abuse", "-", False, id="leading-delimiter-is-no-cut"),
    ],
)
def test_role_senders_match_whole_or_cut(sender: str, delimiter: str, role: bool) -> None:
    snapshot = make_snapshot({**ROLES, "recipient-delimiter": delimiter})
    verdict = decide(snapshot, request(f"<{sender}@example.com>"), "<x@remote.test>")
    expected = (R, Rule.ROLE_AUTH_REQUIRED) if role else (C, Rule.AUTH_NOT_REQUIRED)
    assert (verdict.action, verdict.rule) == expected


# --- no input makes the header decision raise, and a checked domain is never missed ----------

HEADERY = st.one_of(
    ANY_TEXT,
    st.builds(
        "{}{}@{}{}".format,
        ANY_TEXT,
        st.sampled_from(["alice", '"a b"', "=?utf-8?q?x=40", "(c)"]),
        st.sampled_from(["example.com", "Example.COM.", "ex(x)ample.com", "remote.test"]),
        ANY_TEXT,
    ),
)


@PROPERTY
@given(snapshot=snapshots(), froms=st.lists(HEADERY, max_size=3), sender=ENVELOPE_TEXT)
def test_decide_header_never_raises(snapshot: Snapshot, froms: list[str], sender: str) -> None:
    verdict = decide_header(snapshot, request(sender), froms, froms[:1])
    assert verdict.rule in set(Rule)
    domains = header_domains(froms)
    assert all(isinstance(d, str) and d == d.lower() for d in domains)
    checked = snapshot.domains[COM].require_header_from_match
    if checked and "alice@example.com" in " ".join(froms):
        # a From: naming a checked domain is judged, unless it parses as one other address
        assert not (verdict.rule is Rule.HEADER_FROM_NOT_CHECKED and verdict.domain is None)
