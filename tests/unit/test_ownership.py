"""Ownership forms: alias domains and send-as-anyone, table by table, and which form matched."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from smtpauth_milter.admin.explain import explain
from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.networks import NetworkSet, parse_ip
from smtpauth_milter.core.ownership import Ownership
from smtpauth_milter.core.policy import Action, Request, Rule, decide, decide_header
from smtpauth_milter.core.snapshot import ANYONE, Snapshot, grant_login, grant_target
from smtpauth_milter.lookups.spf import SpfChecks

COM, NET, ORG = "example.com", "example.net", "example.org"
RSM = {"require-sender-match": "on"}
MISMATCH = "553 5.7.1 Sender address rejected: not owned by authenticated user"
RCPT = "<x@remote.test>"


def snapshot(
    domains: Mapping[str, Mapping[str, str]] | None = None,
    aliases: Mapping[str, str] | None = None,
    grants: Sequence[tuple[str, str]] = (),
    global_values: Mapping[str, str] = RSM,
) -> Snapshot:
    """example.net is an alias domain of example.com unless told otherwise."""
    return Snapshot.build(
        dict(global_values),
        {name: dict(values) for name, values in (domains or {COM: {}, NET: {}, ORG: {}}).items()},
        NetworkSet.of(()),
        [(grant_login(login), grant_target(target)) for login, target in grants],
        1,
        {NET: COM} if aliases is None else aliases,
    )


def verdict_of(snap: Snapshot, login: str | None, sender: str):  # type: ignore[no-untyped-def]
    return decide(snap, Request(parse_ip("203.0.113.9"), login, f"<{sender}>"), RCPT)


# (login, sender, grants, domain overrides, expected owned_by or None for a mismatch)
ALIAS_TABLE = [
    pytest.param("alice@example.com", "alice@example.net", (), {}, Ownership.ALIAS_DOMAIN, id="login-owns-same-local-part"),
    pytest.param("Alice@Example.com", "ALICE+news@example.NET", (), {}, Ownership.ALIAS_DOMAIN, id="case-and-sub-address"),
    pytest.param("bob@example.com", "alice@example.net", (), {}, None, id="another-login-does-not"),
    pytest.param("alice@example.com", "alice@example.org", (), {}, None, id="not-an-alias-domain"),
    pytest.param("alice@example.net", "alice@example.com", (), {}, None, id="never-the-reverse"),
    pytest.param("alice@example.net", "alice@example.net", (), {}, Ownership.LOGIN, id="the-alias-address-itself"),
    pytest.param("carol", "sales@example.net", [("carol", "sales@example.com")], {}, Ownership.ALIAS_DOMAIN, id="exact-grant-covers-alias"),
    pytest.param("carol", "anyone@example.net", [("carol", "@example.com")], {}, Ownership.ALIAS_DOMAIN, id="domain-grant-covers-alias"),
    pytest.param("carol", "anyone@example.com", [("carol", "@example.net")], {}, None, id="alias-grant-not-the-target"),
    pytest.param("carol", "anyone@example.net", [("carol", "@example.net")], {}, Ownership.GRANT_DOMAIN, id="grant-of-the-alias-itself"),
    pytest.param("carol", "carol@example.net", (), {COM: {"bare-login-match": "on"}}, Ownership.BARE_LOGIN, id="bare-login-inherited-from-the-target"),
    pytest.param("carol", "carol@example.net", (), {COM: {"bare-login-match": "on"}, NET: {"bare-login-match": "off"}}, Ownership.ALIAS_DOMAIN, id="target-bare-login-wins-over-alias-off"),
    pytest.param("carol", "carol@example.net", (), {NET: {"bare-login-match": "on"}}, Ownership.BARE_LOGIN, id="alias-own-bare-login"),
    pytest.param("carol", "carol@example.net", (), {}, None, id="bare-login-off-everywhere"),
]  # fmt: skip


@pytest.mark.parametrize(("login", "sender", "grants", "overrides", "owned"), ALIAS_TABLE)
def test_alias_domain_ownership(
    login: str,
    sender: str,
    grants: Sequence[tuple[str, str]],
    overrides: Mapping[str, Mapping[str, str]],
    owned: Ownership | None,
) -> None:
    domains = {COM: {}, NET: {}, ORG: {}, **overrides}
    verdict = verdict_of(snapshot(domains, grants=grants), login, sender)
    if owned is None:
        assert (verdict.action, verdict.rule, str(verdict.reply)) == (
            Action.REJECT,
            Rule.SENDER_MISMATCH,
            MISMATCH,
        )
        assert verdict.owned_by is None
    else:
        assert (verdict.action, verdict.rule, verdict.owned_by) == (
            Action.CONTINUE,
            Rule.SENDER_OWNED,
            owned,
        )


@pytest.mark.parametrize(
    ("login", "sender", "grants", "owned"),
    [
        ("alice@example.com", "alice@example.com", (), Ownership.LOGIN),
        ("carol", "carol@example.com", (), Ownership.BARE_LOGIN),
        ("carol", "sales@example.com", [("carol", "sales@example.com")], Ownership.GRANT),
        ("carol", "x@example.org", [("carol", "@example.org")], Ownership.GRANT_DOMAIN),
        ("relay", "anyone@example.org", [("relay", "*")], Ownership.SEND_AS_ANYONE),
        # the most specific form is reported: the login itself before its '*' grant
        ("app@example.com", "app@example.com", [("app@example.com", "*")], Ownership.LOGIN),
        ("relay", "x@example.net", [("relay", "*"), ("relay", "@example.com")], Ownership.ALIAS_DOMAIN),
    ],
)  # fmt: skip
def test_each_form_is_named(
    login: str, sender: str, grants: Sequence[tuple[str, str]], owned: Ownership
) -> None:
    snap = snapshot({COM: {"bare-login-match": "on"}, NET: {}, ORG: {}}, grants=grants)
    verdict = verdict_of(snap, login, sender)
    assert (verdict.rule, verdict.owned_by) == (Rule.SENDER_OWNED, owned)


def test_send_as_anyone_owns_every_local_sender_and_only_for_its_login() -> None:
    snap = snapshot(grants=[("Relay", " * ")])
    assert snap.grants == {"relay": frozenset({ANYONE})}
    for sender in ("postmaster@example.com", "a+b@example.net", "anyone@example.org"):
        verdict = verdict_of(snap, "RELAY", sender)
        assert verdict.owned_by is Ownership.SEND_AS_ANYONE, sender
    assert verdict_of(snap, "other", "anyone@example.org").rule is Rule.SENDER_MISMATCH
    headers = decide_header(
        snapshot(grants=[("relay", "*")], global_values={"require-header-from-match": "on"}),
        Request(None, "relay", "<bounce@remote.test>"),
        ["Someone <someone@example.org>"],
        [],
    )
    assert (headers.rule, headers.owned_by) == (Rule.HEADER_FROM_OWNED, Ownership.SEND_AS_ANYONE)


def test_a_star_is_only_a_whole_target() -> None:
    assert grant_target(" * ") == ANYONE
    assert grant_target("*@Example.com") == "*@example.com", "an exact address, no wildcard"
    snap = snapshot(grants=[("carol", "*@example.com")])
    assert verdict_of(snap, "carol", "alice@example.com").rule is Rule.SENDER_MISMATCH
    for bad in ("@*", "a*b", "**"):
        with pytest.raises(SettingError):
            grant_target(bad)


def test_alias_domain_uses_the_target_settings_unless_it_overrides_them() -> None:
    snap = snapshot(
        {COM: {"require-auth-local": "on", "dry-run": "on"}, NET: {"dry-run": "off"}, ORG: {}},
        global_values={},
    )
    com, net, org = (snap.domains[name] for name in (COM, NET, ORG))
    assert com.require_auth_local and net.require_auth_local and not org.require_auth_local
    assert com.dry_run and not net.dry_run
    unauth = verdict_of(snap, None, "alice@example.net")
    assert (unauth.action, unauth.rule, unauth.domain) == (Action.REJECT, Rule.AUTH_REQUIRED, NET)


def test_only_one_level_of_alias_and_only_between_known_domains() -> None:
    """The store refuses chains; should one reach a snapshot, nothing is resolved through it."""
    snap = snapshot(
        {COM: {"dry-run": "on"}, NET: {}, ORG: {}},
        aliases={ORG: NET, NET: COM, "unknown.test": COM, COM: COM},
        grants=[("carol", "@example.com")],
    )
    assert snap.aliases == {ORG: NET, NET: COM}
    assert snap.domains[NET].dry_run and not snap.domains[ORG].dry_run
    assert verdict_of(snap, "carol", "x@example.net").owned_by is Ownership.ALIAS_DOMAIN
    assert verdict_of(snap, "carol", "x@example.org").rule is Rule.SENDER_MISMATCH


def test_the_log_line_names_the_form_only_when_the_sender_is_owned() -> None:
    snap = snapshot()
    request = Request(parse_ip("203.0.113.9"), "alice@example.com", "<alice@example.net>")
    owned = logfmt.decision_line("Q1", request, RCPT, decide(snap, request, RCPT))
    assert owned.endswith(" domain=example.net reply=- owned_by=alias-domain"), owned
    other = Request(parse_ip("203.0.113.9"), "bob@example.com", "<alice@example.net>")
    refused = logfmt.decision_line("Q1", other, RCPT, decide(snap, other, RCPT))
    assert "owned_by" not in refused and refused.endswith(f'reply="{MISMATCH}"'), refused


def test_check_explains_the_form_and_the_alias() -> None:
    spf = SpfChecks()  # no snapshot here has spf-exempt on: never asked
    try:
        report = explain(
            snapshot(), None, "alice@example.com", "alice@example.net", ["x@remote.test"], spf
        )
        assert report.lines() == [
            "rcpt=x@remote.test action=continue rule=sender-owned reply=- owned_by=alias-domain"
        ]
        data = report.as_json()
        assert data["alias_of"] == COM
        assert data["recipients"][0]["owned_by"] == "alias-domain"
        refused = explain(
            snapshot(), None, "bob@example.com", "alice@example.net", ["x@remote.test"], spf
        )
        assert "owned_by" not in refused.lines()[0]
        assert "owned_by" not in refused.as_json()["recipients"][0]
    finally:
        spf.stop()
