"""The decision per recipient (docs/policy.md#the-envelope-decision), rule by rule, every setting both ways."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from smtpauth_milter.core.addresses import domain_name
from smtpauth_milter.core.networks import NetworkSet, parse_cidr, parse_ip
from smtpauth_milter.core.policy import Action, Request, Rule, Verdict, decide
from smtpauth_milter.core.snapshot import Snapshot, grant_login, grant_target
from smtpauth_milter.core.spf import SpfResult

COM = "example.com"
ORG = "example.org"
IDN = "exämple.com"  # a local domain added in its Unicode form
IDN_A = "xn--exmple-cua.com"

AUTH_REQUIRED = "530 5.7.0 Authentication required"
MISMATCH = "553 5.7.1 Sender address rejected: not owned by authenticated user"
BAD_SENDER = "553 5.1.7 Bad sender address syntax"
TEMPFAIL = "451 4.3.0 Temporary policy failure, try again later"

UNTRUSTED_CLIENT = "203.0.113.9"
TRUSTED_NETS = ("192.0.2.0/24", "2001:db8:1::/48")
REMOTE_RCPT = "<bob@example.net>"


def make_snapshot(
    global_values: Mapping[str, str] | None = None,
    domains: Mapping[str, Mapping[str, str]] | None = None,
    networks: Sequence[str] = TRUSTED_NETS,
    grants: Sequence[tuple[str, str]] = (),
    serial: int = 1,
) -> Snapshot:
    """A snapshot as the store builds it: names, logins and targets normalised."""
    if domains is None:
        domains = {COM: {}, ORG: {}, IDN: {}}
    return Snapshot.build(
        dict(global_values or {}),
        {domain_name(name): dict(overrides) for name, overrides in domains.items()},
        NetworkSet.of(parse_cidr(c) for c in networks),
        [(grant_login(login), grant_target(target)) for login, target in grants],
        serial,
    )


def request(
    sender: str,
    login: str | None = None,
    client: str | None = UNTRUSTED_CLIENT,
    spf: SpfResult | None = None,
) -> Request:
    return Request(None if client is None else parse_ip(client), login, sender, spf)


@dataclass(frozen=True)
class Case:
    sender: str
    action: Action
    rule: Rule
    reply: str | None = None
    login: str | None = None
    rcpt: str = REMOTE_RCPT
    client: str | None = UNTRUSTED_CLIENT
    global_values: Mapping[str, str] = field(default_factory=dict)
    domains: Mapping[str, Mapping[str, str]] | None = None
    grants: Sequence[tuple[str, str]] = ()
    domain: str | None = None  # the verdict's domain, checked when given
    spf: SpfResult | None = None  # the SPF result the milter looked up, if it did


def case(
    name: str, sender: str, action: Action, rule: Rule, reply: str | None = None, **kw: Any
) -> Any:
    """One row of the table: a pytest param named ``name`` wrapping a :class:`Case`."""
    return pytest.param(Case(sender, action, rule, reply, **kw), id=name)


C, R, T = Action.CONTINUE, Action.REJECT, Action.TEMPFAIL
WR, WT = Action.WOULD_REJECT, Action.WOULD_TEMPFAIL
ON = "on"
MATCH = {"require-sender-match": ON}
LOCAL_ON = {"require-auth-local": ON}
EXEMPT = {"require-auth-local": ON, "exempt-local-recipients": ON}
SPF_ON = {"require-auth-local": ON, "spf-exempt": ON}

CASES = [
    # --- 2. trusted networks win over everything below ----------------------
    case("trusted-v4", "<postmaster@example.com>", C, Rule.TRUSTED_NETWORK, client="192.0.2.55"),
    case(
        "trusted-v6",
        "<alice@example.com>",
        C,
        Rule.TRUSTED_NETWORK,
        client="2001:db8:1:ff::9",
        global_values=LOCAL_ON,
    ),
    case(
        "trusted-v4-mapped",
        "<abuse@example.com>",
        C,
        Rule.TRUSTED_NETWORK,
        client="::ffff:192.0.2.1",
    ),
    case("trusted-over-bad-sender", "<postmaster>", C, Rule.TRUSTED_NETWORK, client="192.0.2.1"),
    case("trusted-over-crlf-sender", "<a@b\r\n>", C, Rule.TRUSTED_NETWORK, client="2001:db8:1::1"),
    case(
        "trusted-over-mismatch",
        "<alice@example.com>",
        C,
        Rule.TRUSTED_NETWORK,
        login="mallory",
        client="192.0.2.1",
        global_values=MATCH,
    ),
    case(
        "untrusted-neighbour-v4",
        "<postmaster@example.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        client="192.0.3.1",
    ),
    case(
        "untrusted-neighbour-v6",
        "<postmaster@example.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        client="2001:db8:2::1",
    ),
    case(
        "no-client-address",
        "<postmaster@example.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        client=None,
    ),
    # --- 3. unparseable sender ---------------------------------------------
    case("bad-unqualified", "<postmaster>", R, Rule.BAD_SENDER, BAD_SENDER),
    case("bad-unqualified-bare", "postmaster", R, Rule.BAD_SENDER, BAD_SENDER),
    case("bad-two-at", "<alice@evil.test@example.com>", R, Rule.BAD_SENDER, BAD_SENDER),
    case("bad-unbalanced", "<alice@example.com", R, Rule.BAD_SENDER, BAD_SENDER),
    case(
        "bad-two-addresses",
        "<a@example.net> <postmaster@example.com>",
        R,
        Rule.BAD_SENDER,
        BAD_SENDER,
    ),
    case("bad-nul", "<postmaster@example.com\x00>", R, Rule.BAD_SENDER, BAD_SENDER),
    case("bad-idn", "<alice@☃.com>", R, Rule.BAD_SENDER, BAD_SENDER),
    case("bad-even-when-authenticated", "<a@b@c>", R, Rule.BAD_SENDER, BAD_SENDER, login="alice"),
    case(
        "bad-custom-reply",
        "<postmaster>",
        R,
        Rule.BAD_SENDER,
        "550 5.1.7 Fix your MAIL FROM",
        global_values={"bad-sender-reply": "550 5.1.7 Fix your MAIL FROM"},
    ),
    case(
        "bad-custom-4xx-reply",
        "<postmaster>",
        T,
        Rule.BAD_SENDER,
        "450 4.1.7 Try again",
        global_values={"bad-sender-reply": "450 4.1.7 Try again"},
    ),
    case(
        "bad-global-dry-run",
        "<postmaster>",
        WR,
        Rule.BAD_SENDER,
        BAD_SENDER,
        global_values={"dry-run": ON},
    ),
    # --- 4. null or non-local sender ----------------------------------------
    case("null", "<>", C, Rule.NULL_SENDER, global_values=LOCAL_ON),
    case("null-spaced", "< >", C, Rule.NULL_SENDER, global_values=LOCAL_ON),
    case("non-local", "<alice@example.net>", C, Rule.NON_LOCAL_SENDER, global_values=LOCAL_ON),
    case("non-local-role", "<postmaster@example.net>", C, Rule.NON_LOCAL_SENDER),
    case("non-local-subdomain", "<postmaster@sub.example.com>", C, Rule.NON_LOCAL_SENDER),
    case("non-local-parent", "<postmaster@com>", C, Rule.NON_LOCAL_SENDER),
    case(
        "non-local-with-login",
        "<alice@example.net>",
        C,
        Rule.NON_LOCAL_SENDER,
        login="mallory",
        global_values=MATCH,
    ),
    # local in every spelling: the MTA's form must not open a bypass
    case(
        "local-upper-domain",
        "<postmaster@EXAMPLE.COM>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        domain=COM,
    ),
    case(
        "local-trailing-dot",
        "<postmaster@example.com.>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        domain=COM,
    ),
    case(
        "local-display-name",
        "<The Postmaster <postmaster@example.com>>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
    ),
    case(
        "local-source-route",
        "<@relay.test:postmaster@example.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
    ),
    case("local-unbracketed", "postmaster@example.com", R, Rule.ROLE_AUTH_REQUIRED, AUTH_REQUIRED),
    case("local-quoted", '<"postmaster"@example.com>', R, Rule.ROLE_AUTH_REQUIRED, AUTH_REQUIRED),
    case(
        "local-idn-u-label",
        "<postmaster@exämple.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        domain=IDN_A,
    ),
    case(
        "local-idn-a-label",
        "<postmaster@XN--EXMPLE-CUA.COM>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        domain=IDN_A,
    ),
    case(
        "local-fullwidth",
        "<postmaster@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        domain=COM,
    ),
    # --- 6. authenticated ---------------------------------------------------
    case(
        "auth-no-match-required",
        "<alice@example.com>",
        C,
        Rule.AUTHENTICATED,
        login="mallory",
        domain=COM,
    ),
    case(
        "auth-role-sender-needs-no-more",
        "<postmaster@example.com>",
        C,
        Rule.AUTHENTICATED,
        login="alice",
        global_values=LOCAL_ON,
    ),
    case(
        "auth-exact",
        "<alice@example.com>",
        C,
        Rule.SENDER_OWNED,
        login="alice@example.com",
        global_values=MATCH,
    ),
    case(
        "auth-case",
        "<ALICE@Example.COM>",
        C,
        Rule.SENDER_OWNED,
        login="Alice@EXAMPLE.com",
        global_values=MATCH,
    ),
    case(
        "auth-sub-address",
        "<alice+lists@example.com>",
        C,
        Rule.SENDER_OWNED,
        login="alice@example.com",
        global_values=MATCH,
    ),
    case(
        "auth-login-is-never-cut",
        "<alice@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="alice+x@example.com",
        global_values=MATCH,
    ),
    case(
        "auth-idn",
        "<jöran@exämple.com>",
        C,
        Rule.SENDER_OWNED,
        login=f"jöran@{IDN_A}",
        global_values=MATCH,
    ),
    case(
        "auth-idn-login-u-label",
        f"<jöran@{IDN_A}>",
        C,
        Rule.SENDER_OWNED,
        login="Jöran@Exämple.com",
        global_values=MATCH,
    ),
    case(
        "auth-other-user",
        "<alice@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="bob@example.com",
        global_values=MATCH,
        domain=COM,
    ),
    case(
        "auth-same-local-other-domain",
        "<alice@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="alice@example.org",
        global_values=MATCH,
    ),
    case(
        "auth-prefix-is-not-owner",
        "<alice2@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="alice@example.com",
        global_values=MATCH,
    ),
    case(
        "auth-login-with-route-is-not-owner",
        "<alice@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="x@evil.test@alice@example.com",
        global_values=MATCH,
    ),
    # bare-login-match
    case(
        "bare-off",
        "<alice@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="alice",
        global_values=MATCH,
    ),
    case(
        "bare-on-global",
        "<Alice+x@example.com>",
        C,
        Rule.SENDER_OWNED,
        login="ALICE",
        global_values={**MATCH, "bare-login-match": ON},
    ),
    case(
        "bare-on-this-domain",
        "<alice@example.com>",
        C,
        Rule.SENDER_OWNED,
        login="alice",
        global_values=MATCH,
        domains={COM: {"bare-login-match": ON}, ORG: {}},
    ),
    case(
        "bare-on-other-domain-only",
        "<alice@example.org>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="alice",
        global_values=MATCH,
        domains={COM: {"bare-login-match": ON}, ORG: {}},
    ),
    case(
        "bare-off-this-domain-overrides-global",
        "<alice@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="alice",
        global_values={**MATCH, "bare-login-match": ON},
        domains={COM: {"bare-login-match": "off"}, ORG: {}},
    ),
    case(
        "bare-on-wrong-user",
        "<alice@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="bob",
        global_values={**MATCH, "bare-login-match": ON},
    ),
    case(
        "bare-on-address-login-other-domain",
        "<alice@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="alice@example.org",
        global_values={**MATCH, "bare-login-match": ON},
    ),
    # send-as grants
    case(
        "grant-exact",
        "<alice@example.com>",
        C,
        Rule.SENDER_OWNED,
        login="bob",
        global_values=MATCH,
        grants=[("bob", "alice@example.com")],
    ),
    case(
        "grant-exact-case-and-sub-address",
        "<ALICE+news@Example.com>",
        C,
        Rule.SENDER_OWNED,
        login="BOB",
        global_values=MATCH,
        grants=[("Bob", "Alice@example.com")],
    ),
    case(
        "grant-exact-other-address",
        "<carol@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="bob",
        global_values=MATCH,
        grants=[("bob", "alice@example.com")],
    ),
    case(
        "grant-domain",
        "<anyone@example.com>",
        C,
        Rule.SENDER_OWNED,
        login="bob@example.net",
        global_values=MATCH,
        grants=[("bob@example.net", "@example.com")],
    ),
    case(
        "grant-domain-role",
        "<postmaster@example.com>",
        C,
        Rule.SENDER_OWNED,
        login="bob",
        global_values=MATCH,
        grants=[("bob", "@Example.COM")],
    ),
    case(
        "grant-domain-idn",
        "<jöran@exämple.com>",
        C,
        Rule.SENDER_OWNED,
        login="bob",
        global_values=MATCH,
        grants=[("bob", "@exämple.com")],
    ),
    case(
        "grant-domain-idn-a-label",
        "<jöran@exämple.com>",
        C,
        Rule.SENDER_OWNED,
        login="bob",
        global_values=MATCH,
        grants=[("bob", f"@{IDN_A}")],
    ),
    case(
        "grant-target-is-never-cut",
        "<Alice@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="bob",
        global_values=MATCH,
        grants=[("bob", "alice+news@example.com")],
    ),
    case(
        "grant-target-with-a-delimiter-is-exact",
        "<Alice-News@example.com>",
        C,
        Rule.SENDER_OWNED,
        login="bob",
        global_values={**MATCH, "recipient-delimiter": "-"},
        grants=[("bob", "alice-news@example.com")],
    ),
    case(
        "grant-target-custom-delimiter-covers-no-sibling",
        "<alice-x@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="bob",
        global_values={**MATCH, "recipient-delimiter": "-"},
        grants=[("bob", "alice-news@example.com")],
    ),
    case(
        "grant-odd-quoted-address-is-not-the-plain-one",
        "<bob@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="mallory",
        global_values=MATCH,
        grants=[("mallory", '"\u00a0bob"@example.com')],
    ),
    case(
        "grant-odd-quoted-address-exact",
        '<"\u00a0bob"@example.com>',
        C,
        Rule.SENDER_OWNED,
        login="mallory",
        global_values=MATCH,
        grants=[("mallory", '"\u00a0bob"@example.com')],
    ),
    case(
        "grant-for-another-domain",
        "<alice@example.org>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="bob",
        global_values=MATCH,
        grants=[("bob", "@example.com")],
    ),
    case(
        "grant-for-another-login",
        "<alice@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="mallory",
        global_values=MATCH,
        grants=[("bob", "@example.com"), ("bob", "alice@example.com")],
    ),
    case(
        "grant-address-in-another-domain",
        "<alice@example.org>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="bob",
        global_values=MATCH,
        grants=[("bob", "alice@example.com")],
    ),
    # require-sender-match per domain
    case(
        "match-on-this-domain",
        "<alice@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="mallory",
        domains={COM: MATCH, ORG: {}},
    ),
    case(
        "match-on-other-domain-only",
        "<alice@example.org>",
        C,
        Rule.AUTHENTICATED,
        login="mallory",
        domains={COM: MATCH, ORG: {}},
    ),
    case(
        "match-off-this-domain-overrides-global",
        "<alice@example.org>",
        C,
        Rule.AUTHENTICATED,
        login="mallory",
        global_values=MATCH,
        domains={COM: {}, ORG: {"require-sender-match": "off"}},
    ),
    case(
        "match-unset-inherits-global",
        "<alice@example.org>",
        R,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="mallory",
        global_values=MATCH,
        domains={COM: {"require-sender-match": "off"}, ORG: {"dry-run": "off"}},
    ),
    case(
        "match-custom-reply-per-domain",
        "<alice@example.com>",
        R,
        Rule.SENDER_MISMATCH,
        "550 5.7.60 Use your own address",
        login="mallory",
        global_values=MATCH,
        domains={COM: {"sender-mismatch-reply": "550 5.7.60 Use your own address"}, ORG: {}},
    ),
    case(
        "match-custom-4xx-reply",
        "<alice@example.com>",
        T,
        Rule.SENDER_MISMATCH,
        "450 4.7.1 Not yours",
        login="mallory",
        global_values={**MATCH, "sender-mismatch-reply": "450 4.7.1 Not yours"},
    ),
    # --- 7. unauthenticated: role senders -----------------------------------
    case(
        "role-postmaster",
        "<postmaster@example.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        domain=COM,
    ),
    case(
        "role-abuse", "<abuse@example.org>", R, Rule.ROLE_AUTH_REQUIRED, AUTH_REQUIRED, domain=ORG
    ),
    case("role-webmaster", "<webmaster@exämple.com>", R, Rule.ROLE_AUTH_REQUIRED, AUTH_REQUIRED),
    case("role-mixed-case", "<PostMaster@Example.Com>", R, Rule.ROLE_AUTH_REQUIRED, AUTH_REQUIRED),
    case(
        "role-sub-addressed",
        "<postmaster+bounces@example.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
    ),
    case(
        "role-mixed-case-sub-addressed",
        "<ABUSE+x@example.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
    ),
    case(
        "role-custom-delimiter",
        "<postmaster-x@example.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        global_values={"recipient-delimiter": "+-"},
    ),
    case(
        "role-delimiter-off",
        "<postmaster+x@example.com>",
        C,
        Rule.AUTH_NOT_REQUIRED,
        global_values={"recipient-delimiter": ""},
    ),
    case(
        "role-empty-login",
        "<postmaster@example.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        login="",
    ),
    case("not-role", "<alice@example.com>", C, Rule.AUTH_NOT_REQUIRED, domain=COM),
    case("not-role-prefix", "<postmasters@example.com>", C, Rule.AUTH_NOT_REQUIRED),
    case(
        "role-off-global",
        "<postmaster@example.com>",
        C,
        Rule.AUTH_NOT_REQUIRED,
        global_values={"require-auth-role": "off"},
    ),
    case(
        "role-off-this-domain",
        "<postmaster@example.com>",
        C,
        Rule.AUTH_NOT_REQUIRED,
        domains={COM: {"require-auth-role": "no"}, ORG: {}},
    ),
    case(
        "role-off-other-domain-only",
        "<postmaster@example.org>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        domains={COM: {"require-auth-role": "off"}, ORG: {}},
    ),
    case(
        "role-on-this-domain-overrides-global",
        "<abuse@example.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        global_values={"require-auth-role": "off"},
        domains={COM: {"require-auth-role": "on"}, ORG: {}},
    ),
    case(
        "role-custom-list-member",
        "<NOC@example.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        domains={COM: {"role-senders": "noc, hostmaster"}, ORG: {}},
    ),
    case(
        "role-custom-list-replaces-default",
        "<postmaster@example.com>",
        C,
        Rule.AUTH_NOT_REQUIRED,
        domains={COM: {"role-senders": "noc, hostmaster"}, ORG: {}},
    ),
    case(
        "role-custom-list-other-domain-keeps-default",
        "<postmaster@example.org>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        domains={COM: {"role-senders": "noc"}, ORG: {}},
    ),
    case(
        "role-custom-list-not-in-other-domain",
        "<noc@example.org>",
        C,
        Rule.AUTH_NOT_REQUIRED,
        domains={COM: {"role-senders": "noc"}, ORG: {}},
    ),
    case(
        "role-custom-list-global",
        "<hostmaster@example.org>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        global_values={"role-senders": "hostmaster"},
    ),
    case(
        "role-empty-list",
        "<postmaster@example.com>",
        C,
        Rule.AUTH_NOT_REQUIRED,
        global_values={"role-senders": ""},
    ),
    case(
        "role-wins-over-exempt-local-recipient",
        "<postmaster@example.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        rcpt="<alice@example.com>",
        global_values=EXEMPT,
    ),
    case(
        "role-custom-reply-per-domain",
        "<postmaster@example.com>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        "550 5.7.57 Log in to send as postmaster",
        domains={COM: {"auth-required-reply": "550 5.7.57 Log in to send as postmaster"}, ORG: {}},
    ),
    # --- 7. unauthenticated: require-auth-local -----------------------------
    case("local-off", "<alice@example.com>", C, Rule.AUTH_NOT_REQUIRED),
    case(
        "local-on-remote-rcpt",
        "<alice@example.com>",
        R,
        Rule.AUTH_REQUIRED,
        AUTH_REQUIRED,
        global_values=LOCAL_ON,
        domain=COM,
    ),
    case(
        "local-on-empty-login",
        "<alice@example.com>",
        R,
        Rule.AUTH_REQUIRED,
        AUTH_REQUIRED,
        login="",
        global_values=LOCAL_ON,
    ),
    case(
        "local-on-local-rcpt-not-exempt",
        "<alice@example.com>",
        R,
        Rule.AUTH_REQUIRED,
        AUTH_REQUIRED,
        rcpt="<bob@example.com>",
        global_values=LOCAL_ON,
    ),
    case(
        "exempt-without-require-is-nothing",
        "<alice@example.com>",
        C,
        Rule.AUTH_NOT_REQUIRED,
        global_values={"exempt-local-recipients": ON},
    ),
    case(
        "exempt-local-rcpt",
        "<alice@example.com>",
        C,
        Rule.LOCAL_RECIPIENT,
        rcpt="<bob@example.com>",
        global_values=EXEMPT,
    ),
    case(
        "exempt-other-local-domain",
        "<alice@example.com>",
        C,
        Rule.LOCAL_RECIPIENT,
        rcpt="<bob@example.org>",
        global_values=EXEMPT,
    ),
    case(
        "exempt-rcpt-case-sub-address",
        "<alice@example.com>",
        C,
        Rule.LOCAL_RECIPIENT,
        rcpt="<Bob+x@EXAMPLE.COM.>",
        global_values=EXEMPT,
    ),
    case(
        "exempt-rcpt-idn",
        "<alice@example.com>",
        C,
        Rule.LOCAL_RECIPIENT,
        rcpt="<bob@exämple.com>",
        global_values=EXEMPT,
    ),
    case(
        "exempt-remote-rcpt",
        "<alice@example.com>",
        R,
        Rule.AUTH_REQUIRED,
        AUTH_REQUIRED,
        global_values=EXEMPT,
    ),
    case(
        "exempt-rcpt-subdomain-is-remote",
        "<alice@example.com>",
        R,
        Rule.AUTH_REQUIRED,
        AUTH_REQUIRED,
        rcpt="<bob@mail.example.com>",
        global_values=EXEMPT,
    ),
    case(
        "exempt-unparseable-rcpt-is-not-local",
        "<alice@example.com>",
        R,
        Rule.AUTH_REQUIRED,
        AUTH_REQUIRED,
        rcpt="<bob@example.com",
        global_values=EXEMPT,
    ),
    case(
        "exempt-unqualified-rcpt-is-not-local",
        "<alice@example.com>",
        R,
        Rule.AUTH_REQUIRED,
        AUTH_REQUIRED,
        rcpt="<bob>",
        global_values=EXEMPT,
    ),
    case(
        "exempt-null-rcpt",
        "<alice@example.com>",
        R,
        Rule.AUTH_REQUIRED,
        AUTH_REQUIRED,
        rcpt="<>",
        global_values=EXEMPT,
    ),
    case(
        "local-on-this-domain",
        "<alice@example.com>",
        R,
        Rule.AUTH_REQUIRED,
        AUTH_REQUIRED,
        domains={COM: LOCAL_ON, ORG: {}},
    ),
    case(
        "local-on-other-domain-only",
        "<alice@example.org>",
        C,
        Rule.AUTH_NOT_REQUIRED,
        domains={COM: LOCAL_ON, ORG: {}},
    ),
    case(
        "local-off-this-domain-overrides-global",
        "<alice@example.org>",
        C,
        Rule.AUTH_NOT_REQUIRED,
        global_values=LOCAL_ON,
        domains={COM: {}, ORG: {"require-auth-local": "false"}},
    ),
    case(
        "local-unset-inherits-global",
        "<alice@example.org>",
        R,
        Rule.AUTH_REQUIRED,
        AUTH_REQUIRED,
        global_values=LOCAL_ON,
        domains={COM: {"require-auth-local": "off"}, ORG: {"bare-login-match": ON}},
    ),
    case(
        "exempt-on-this-domain",
        "<alice@example.com>",
        C,
        Rule.LOCAL_RECIPIENT,
        rcpt="<bob@example.org>",
        global_values=LOCAL_ON,
        domains={COM: {"exempt-local-recipients": ON}, ORG: {}},
    ),
    case(
        "exempt-on-recipient-domain-only",
        "<alice@example.com>",
        R,
        Rule.AUTH_REQUIRED,
        AUTH_REQUIRED,
        rcpt="<bob@example.org>",
        global_values=LOCAL_ON,
        domains={COM: {}, ORG: {"exempt-local-recipients": ON}},
    ),
    case(
        "exempt-off-this-domain-overrides-global",
        "<alice@example.com>",
        R,
        Rule.AUTH_REQUIRED,
        AUTH_REQUIRED,
        rcpt="<bob@example.com>",
        global_values=EXEMPT,
        domains={COM: {"exempt-local-recipients": "0"}, ORG: {}},
    ),
    case(
        "local-custom-reply",
        "<alice@example.com>",
        R,
        Rule.AUTH_REQUIRED,
        "554 5.7.0 Submission port only",
        global_values={**LOCAL_ON, "auth-required-reply": "554 5.7.0 Submission port only"},
    ),
    case(
        "local-custom-4xx-reply",
        "<alice@example.com>",
        T,
        Rule.AUTH_REQUIRED,
        "450 4.7.0 Log in first",
        global_values={**LOCAL_ON, "auth-required-reply": "450 4.7.0 Log in first"},
    ),
    # --- dry-run -------------------------------------------------------------
    case(
        "dry-run-role",
        "<postmaster@example.com>",
        WR,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        global_values={"dry-run": ON},
    ),
    case(
        "dry-run-local",
        "<alice@example.com>",
        WR,
        Rule.AUTH_REQUIRED,
        AUTH_REQUIRED,
        global_values={**LOCAL_ON, "dry-run": "yes"},
    ),
    case(
        "dry-run-mismatch",
        "<alice@example.com>",
        WR,
        Rule.SENDER_MISMATCH,
        MISMATCH,
        login="mallory",
        global_values={**MATCH, "dry-run": "true"},
    ),
    case(
        "dry-run-4xx",
        "<alice@example.com>",
        WT,
        Rule.AUTH_REQUIRED,
        "450 4.7.0 Log in first",
        global_values={**LOCAL_ON, "dry-run": ON, "auth-required-reply": "450 4.7.0 Log in first"},
    ),
    case(
        "dry-run-this-domain",
        "<postmaster@example.com>",
        WR,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        domains={COM: {"dry-run": ON}, ORG: {}},
    ),
    case(
        "dry-run-other-domain-only",
        "<postmaster@example.org>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        domains={COM: {"dry-run": ON}, ORG: {}},
    ),
    case(
        "dry-run-off-this-domain-overrides-global",
        "<postmaster@example.org>",
        R,
        Rule.ROLE_AUTH_REQUIRED,
        AUTH_REQUIRED,
        global_values={"dry-run": ON},
        domains={COM: {}, ORG: {"dry-run": "off"}},
    ),
    case(
        "dry-run-continue-stays-continue",
        "<alice@example.com>",
        C,
        Rule.AUTH_NOT_REQUIRED,
        global_values={"dry-run": ON},
    ),
    # --- spf-exempt: SPF pass stands in for the login require-auth-local wants
    case("spf-pass", "<alice@example.com>", C, Rule.SPF_PASS, spf=SpfResult.PASS,
         global_values=SPF_ON, domain=COM),
    *(
        case(f"spf-{result}-keeps-refusal", "<alice@example.com>", R, Rule.AUTH_REQUIRED,
             AUTH_REQUIRED, spf=result, global_values=SPF_ON)
        for result in SpfResult
        if result not in (SpfResult.PASS, SpfResult.TEMPERROR)
    ),
    case("spf-temperror-tempfails", "<alice@example.com>", T, Rule.SPF_TEMPERROR, TEMPFAIL,
         spf=SpfResult.TEMPERROR, global_values=SPF_ON, domain=COM),
    case("spf-temperror-own-tempfail-reply", "<alice@example.com>", T, Rule.SPF_TEMPERROR,
         "421 4.4.3 DNS trouble", spf=SpfResult.TEMPERROR,
         global_values={**SPF_ON, "tempfail-reply": "421 4.4.3 DNS trouble"}),
    case("spf-temperror-dry-run", "<alice@example.com>", WT, Rule.SPF_TEMPERROR, TEMPFAIL,
         spf=SpfResult.TEMPERROR, global_values={**SPF_ON, "dry-run": ON}),
    case("spf-pass-but-setting-off", "<alice@example.com>", R, Rule.AUTH_REQUIRED,
         AUTH_REQUIRED, spf=SpfResult.PASS, global_values=LOCAL_ON),
    case("spf-pass-other-domain-only", "<alice@example.org>", R, Rule.AUTH_REQUIRED,
         AUTH_REQUIRED, spf=SpfResult.PASS, global_values=LOCAL_ON,
         domains={COM: {"spf-exempt": ON}, ORG: {}}),
    case("spf-not-looked-up", "<alice@example.com>", R, Rule.AUTH_REQUIRED, AUTH_REQUIRED,
         global_values=SPF_ON),
    case("spf-local-recipient-first", "<alice@example.com>", C, Rule.LOCAL_RECIPIENT,
         spf=SpfResult.FAIL, rcpt="<bob@example.org>", global_values={**SPF_ON, **EXEMPT}),
    case("spf-pass-role-still-refused", "<postmaster@example.com>", R, Rule.ROLE_AUTH_REQUIRED,
         AUTH_REQUIRED, spf=SpfResult.PASS, global_values=SPF_ON),
    case("spf-temperror-role-still-refused", "<abuse@example.com>", R,
         Rule.ROLE_AUTH_REQUIRED, AUTH_REQUIRED, spf=SpfResult.TEMPERROR, global_values=SPF_ON),
    case("spf-role-pass", "<postmaster@example.com>", C, Rule.SPF_PASS, spf=SpfResult.PASS,
         global_values={"spf-exempt-role": ON}),
    case("spf-role-fail", "<postmaster@example.com>", R, Rule.ROLE_AUTH_REQUIRED,
         AUTH_REQUIRED, spf=SpfResult.FAIL, global_values={"spf-exempt-role": ON}),
    case("spf-role-temperror", "<webmaster@example.com>", T, Rule.SPF_TEMPERROR, TEMPFAIL,
         spf=SpfResult.TEMPERROR, global_values={"spf-exempt-role": ON}),
    case("spf-pass-login-mismatch-still-refused", "<alice@example.com>", R,
         Rule.SENDER_MISMATCH, MISMATCH, login="mallory", spf=SpfResult.PASS,
         global_values={**SPF_ON, **MATCH}),
    case("spf-auth-not-required", "<alice@example.com>", C, Rule.AUTH_NOT_REQUIRED,
         spf=SpfResult.FAIL, global_values={"spf-exempt": ON}),
]  # fmt: skip


@pytest.mark.parametrize("c", CASES)
def test_decide(c: Case) -> None:
    snapshot = make_snapshot(c.global_values, c.domains, grants=c.grants)
    verdict = decide(snapshot, request(c.sender, c.login, c.client, c.spf), c.rcpt)
    assert (verdict.action, verdict.rule) == (c.action, c.rule)
    assert (None if verdict.reply is None else str(verdict.reply)) == c.reply
    if c.domain is not None:
        assert verdict.domain == c.domain
    assert verdict.refuses is (c.action in (Action.REJECT, Action.TEMPFAIL))


def test_every_rule_is_covered_by_the_table() -> None:
    covered = {p.values[0].rule for p in CASES} | {Rule.NO_SETTINGS}
    # sender-login-maps failing: covered by tests/unit/test_map_policy.py
    covered |= {Rule.SENDER_MAP_FAILED}
    # end-of-headers rules: covered by tests/unit/test_header_from.py;
    # per-login limits (login-*): by tests/unit/test_limits.py and test_login_limiter.py
    assert covered == {
        rule for rule in Rule if "header" not in rule.value and not rule.startswith("login-")
    }
    actions = {p.values[0].action for p in CASES}
    assert actions >= {Action.CONTINUE, Action.REJECT, Action.TEMPFAIL, Action.WOULD_REJECT}
    assert Action.WOULD_TEMPFAIL in actions


# --- 1. no trustworthy settings --------------------------------------------


@pytest.mark.parametrize(
    ("last_good", "action", "reply"),
    [
        pytest.param(None, T, TEMPFAIL, id="never-loaded"),
        pytest.param(make_snapshot(), T, TEMPFAIL, id="stale-defaults"),
        pytest.param(
            make_snapshot({"tempfail-reply": "421 4.3.0 Store down"}),
            T,
            "421 4.3.0 Store down",
            id="stale-custom-reply",
        ),
        pytest.param(make_snapshot({"dry-run": ON}), WT, TEMPFAIL, id="stale-global-dry-run"),
    ],
)
@pytest.mark.parametrize(
    ("sender", "client"),
    [
        pytest.param("<alice@example.net>", UNTRUSTED_CLIENT, id="non-local"),
        pytest.param("<>", UNTRUSTED_CLIENT, id="null"),
        pytest.param("<postmaster>", UNTRUSTED_CLIENT, id="bad-sender"),
        pytest.param("<postmaster@example.com>", "192.0.2.1", id="trusted-client"),
    ],
)
def test_no_trustworthy_settings_tempfails_first(
    last_good: Snapshot | None, action: Action, reply: str, sender: str, client: str
) -> None:
    snapshot = Snapshot.unavailable(last_good)
    assert snapshot.trusted is False
    verdict = decide(snapshot, request(sender, "alice", client), REMOTE_RCPT)
    assert (verdict.action, verdict.rule, str(verdict.reply)) == (action, Rule.NO_SETTINGS, reply)


def test_untrusted_settings_win_even_over_a_trusted_network() -> None:
    # Rule 1 comes before rule 2, whatever networks the stale snapshot still holds.
    snapshot = dataclasses.replace(make_snapshot(), trusted=False)
    client = parse_ip("192.0.2.1")
    assert client is not None and snapshot.networks.contains(client)
    verdict = decide(snapshot, request("<alice@example.net>", client="192.0.2.1"), REMOTE_RCPT)
    assert (verdict.action, verdict.rule, str(verdict.reply)) == (T, Rule.NO_SETTINGS, TEMPFAIL)


@pytest.mark.parametrize(
    "target",
    [
        pytest.param('"john doe"@example.com', id="quoted-space"),
        pytest.param('"a\\"b"@example.com', id="quoted-escape"),
        pytest.param('"\u3000"@example.com', id="quoted-ideographic-space-only"),
        pytest.param('"\u00a0"@example.com', id="quoted-nbsp-only"),
    ],
)
def test_every_accepted_grant_can_be_loaded(target: str) -> None:
    # The CLI accepts the target (grant_target), so loading it must never fail:
    # a snapshot that cannot be built leaves every milter on stale settings.
    snapshot = make_snapshot(MATCH, grants=[("mallory", target)])
    sender = f"<{target}>"
    verdict = decide(snapshot, request(sender, "mallory"), REMOTE_RCPT)
    assert (verdict.action, verdict.rule) == (C, Rule.SENDER_OWNED)


# --- one message, several recipients -----------------------------------------


@pytest.mark.parametrize(
    ("global_values", "expected"),
    [
        pytest.param(
            EXEMPT,
            [C, R, C, R, C],
            id="exempt",
        ),
        pytest.param(LOCAL_ON, [R, R, R, R, R], id="not-exempt"),
        pytest.param({}, [C, C, C, C, C], id="no-requirement"),
        pytest.param({**EXEMPT, "dry-run": ON}, [C, WR, C, WR, C], id="exempt-dry-run"),
    ],
)
def test_mixed_recipients_are_decided_one_by_one(
    global_values: Mapping[str, str], expected: list[Action]
) -> None:
    snapshot = make_snapshot(global_values)
    req = request("<alice@example.com>")
    rcpts = [
        "<bob@example.com>",
        "<bob@example.net>",
        "<carol@example.org>",
        "<dave@gmail.test>",
        "<jöran@exämple.com>",
    ]
    assert [decide(snapshot, req, r).action for r in rcpts] == expected


def test_decide_has_no_memory_between_recipients() -> None:
    snapshot = make_snapshot(EXEMPT)
    req = request("<alice@example.com>")
    first = decide(snapshot, req, "<bob@example.com>")
    decide(snapshot, req, "<bob@example.net>")
    assert decide(snapshot, req, "<bob@example.com>") == first


def test_verdict_is_typed() -> None:
    verdict = decide(make_snapshot(), request("<postmaster@example.com>"), REMOTE_RCPT)
    assert isinstance(verdict, Verdict)
    assert verdict.reply is not None
    assert (verdict.reply.code, verdict.reply.status) == (530, "5.7.0")


def test_a_domain_not_in_the_snapshot_is_not_local() -> None:
    snapshot = make_snapshot(LOCAL_ON, domains={ORG: {}})
    verdict = decide(snapshot, request("<alice@example.com>"), REMOTE_RCPT)
    assert (verdict.action, verdict.rule) == (C, Rule.NON_LOCAL_SENDER)


@pytest.mark.parametrize(
    ("sender", "login", "expected"),
    [
        pytest.param(
            "<prvs=1234abcdef=postmaster@example.com>",
            None,
            (Action.REJECT, Rule.ROLE_AUTH_REQUIRED),
            id="batv-role-sender-still-needs-login",
        ),
        pytest.param(
            "<PRVS=0123456789=alice@example.com>",
            "alice@example.com",
            (Action.CONTINUE, Rule.SENDER_OWNED),
            id="batv-owned-by-its-user",
        ),
        pytest.param(
            "<prvs=0123456789=alice@example.com>",
            "bob@example.com",
            (Action.REJECT, Rule.SENDER_MISMATCH),
            id="batv-not-owned-by-another",
        ),
        pytest.param(
            "<prvs=alice@example.com>",
            "alice@example.com",
            (Action.REJECT, Rule.SENDER_MISMATCH),
            id="not-batv-without-a-tag",
        ),
    ],
)
def test_batv_sender_is_judged_as_its_address(
    sender: str, login: str | None, expected: tuple[Action, Rule]
) -> None:
    snapshot = Snapshot.build(
        {"require-sender-match": "on"}, {"example.com": {}}, NetworkSet.of([]), []
    )
    verdict = decide(snapshot, Request(None, login, sender), "<x@remote.test>")
    assert (verdict.action, verdict.rule) == expected
