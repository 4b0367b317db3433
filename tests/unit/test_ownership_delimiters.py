"""A recipient-delimiter character never passes ownership between two people.

docs/policy.md#sub-addresses: the login and a grant's target are never cut
at a delimiter; the sender's own sub-address is cut (as Postfix cuts it) only
after its full address found no owner anywhere: the built-in forms, an address
a grant or login names, the maps.  On main, the login and grant targets were
cut: ``bob-smith@`` owned ``bob@`` with ``recipient-delimiter +-``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smtpauth_milter.admin.explain import explain
from smtpauth_milter.core.addresses import Address
from smtpauth_milter.core.networks import NetworkSet, parse_ip
from smtpauth_milter.core.ownermaps import NOT_FOUND, MapAnswer, failed, found
from smtpauth_milter.core.ownership import Ownership, map_lookup_sender
from smtpauth_milter.core.policy import Action, Request, Rule, Verdict, decide, decide_header
from smtpauth_milter.core.snapshot import Snapshot, grant_login, grant_target
from smtpauth_milter.core.subaddress import split_local
from smtpauth_milter.lookups.spf import SpfChecks

COM, NET = "example.com", "example.net"  # example.net: an alias domain of example.com
MAPS = "texthash:/etc/postfix/owners"
RCPT = "<x@remote.test>"


def snapshot(
    delimiter: str = "+-",
    grants: Sequence[tuple[str, str]] = (),
    maps: str = "",
    extra: Mapping[str, str] | None = None,
) -> Snapshot:
    values = {"require-sender-match": "on", "recipient-delimiter": delimiter}
    if maps:
        values["sender-login-maps"] = maps
    return Snapshot.build(
        {**values, **(extra or {})},
        {COM: {}, NET: {}},
        NetworkSet.of(()),
        [(grant_login(login), grant_target(target)) for login, target in grants],
        1,
        {NET: COM},
    )


def verdict(
    snap: Snapshot, login: str, sender: str, owners: MapAnswer | None = None
) -> tuple[Action, Rule, str | None]:
    got: Verdict = decide(
        snap, Request(parse_ip("203.0.113.9"), login, f"<{sender}>"), RCPT, owners
    )
    return got.action, got.rule, got.owned_by


MISMATCH = (Action.REJECT, Rule.SENDER_MISMATCH, None)


def owned(form: str) -> tuple[Action, Rule, str]:
    return (Action.CONTINUE, Rule.SENDER_OWNED, form)


@pytest.mark.parametrize(
    ("login", "sender"),
    [
        ("bob-smith@example.com", "bob@example.com"),
        ("jean-pierre@example.com", "jean@example.com"),
        ("Jean-Pierre@Example.com", "JEAN@example.com"),
        ("jean.pierre@example.com", "jean@example.com"),
        ("bob+work@example.com", "bob@example.com"),
        ("bob-smith@example.com", "bob+news@example.com"),  # cut: bob@, not bob-smith@
        ("bob-smith@example.com", "bob@example.net"),  # nor through an alias domain
    ],
)
@pytest.mark.parametrize("delimiter", ["+-", "+", "-", ""])
def test_a_login_is_never_cut(login: str, sender: str, delimiter: str) -> None:
    assert verdict(snapshot(delimiter), login, sender) == MISMATCH


@pytest.mark.parametrize(
    ("sender", "owner"),
    [
        ("sales-team@example.com", "grant"),
        ("Sales-Team@EXAMPLE.com", "grant"),
        ("sales-team@example.net", "alias-domain"),
        ("sales@example.com", None),
        ("sales-x@example.com", None),
        ("sales-team-x@example.com", None),  # Postfix's cut gives sales@, not sales-team@
        ("sales+team@example.com", None),
        ("sales@example.net", None),
    ],
)
@pytest.mark.parametrize("delimiter", ["+-", "+", "-", ""])
def test_a_grant_is_exactly_its_address_whatever_the_delimiter(
    sender: str, owner: str | None, delimiter: str
) -> None:
    snap = snapshot(delimiter, grants=[("alice@example.com", "sales-team@example.com")])
    assert snap.grants["alice@example.com"] == frozenset({"sales-team@example.com"})
    expected = MISMATCH if owner is None else owned(owner)
    assert verdict(snap, "alice@example.com", sender) == expected


def test_a_grant_covers_its_own_sub_addresses_as_postfix_cuts_them() -> None:
    grants = [("alice@example.com", "sales-team@example.com")]
    assert verdict(snapshot("+", grants), "alice@example.com", "sales-team+x@example.com") == owned(
        "grant"
    )
    # with '-' a delimiter Postfix cuts sales-team+x at the '-': it is sales@'s sub-address
    assert verdict(snapshot("+-", grants), "alice@example.com", "sales-team+x@example.com") == (
        MISMATCH
    )


@pytest.mark.parametrize(
    ("login", "sender", "form"),
    [
        ("bob@example.com", "bob+news@example.com", "login"),
        ("bob@example.com", "Bob-Smith@example.com", "login"),  # no one else named it
        ("bob@example.com", "bob+news@example.net", "alias-domain"),
        ("carol", "carol-x@example.com", "bare-login"),
    ],
)
def test_the_senders_own_sub_address_is_cut_when_nothing_names_its_full_address(
    login: str, sender: str, form: str
) -> None:
    snap = snapshot(extra={"bare-login-match": "on"})
    assert verdict(snap, login, sender) == owned(form)


@pytest.mark.parametrize(
    ("grants", "sender"),
    [
        ([("carol", "bob-smith@example.com")], "bob-smith@example.com"),
        ([("carol", "bob-smith@example.com")], "bob-smith@example.net"),  # via the target
        ([("carol", "bob+news@example.com")], "bob+news@example.com"),
        ([("bob-smith@example.com", "@example.org")], "bob-smith@example.com"),  # a known login
    ],
)
def test_a_full_address_someone_else_was_given_is_never_cut(
    grants: Sequence[tuple[str, str]], sender: str
) -> None:
    snap = snapshot(grants=grants)
    assert verdict(snap, "bob@example.com", sender) == MISMATCH


def test_postfix_never_cuts_owner_and_request_and_postmaster() -> None:
    snap = snapshot("+-")
    assert verdict(snap, "owner@example.com", "owner-list@example.com") == MISMATCH
    assert verdict(snap, "list@example.com", "list-request@example.com") == MISMATCH
    assert verdict(snapshot("+"), "owner@example.com", "owner-list@example.com") == MISMATCH
    assert verdict(snapshot("+"), "owner-list@example.com", "owner-list+x@example.com") == owned(
        "login"
    )


def test_a_map_that_names_the_full_address_keeps_it_from_being_cut() -> None:
    """Postfix's first match wins: ``bob-smith@example.com bob-smith@example.com``
    keeps login bob@ from sending as bob-smith@ under recipient_delimiter = +-."""
    snap = snapshot(maps=MAPS)
    request = Request(None, "bob@example.com", "<bob-smith@example.com>")
    sender = map_lookup_sender(snap, request)
    assert sender == Address("bob-smith", COM)  # asked before anything is cut
    full = found(MAPS, "bob-smith@example.com", "bob-smith@example.com")
    assert verdict(snap, "bob@example.com", "bob-smith@example.com", full) == MISMATCH
    assert verdict(snap, "bob-smith@example.com", "bob-smith@example.com", full) == owned("login")
    # the map knows only bob@ (the cut key), or nothing: the sub-address is bob's
    cut = found(MAPS, "bob@example.com", "bob@example.com")
    assert verdict(snap, "bob@example.com", "bob-smith@example.com", cut) == owned("login")
    assert verdict(snap, "bob@example.com", "bob-smith@example.com", NOT_FOUND) == owned("login")
    # a catch-all answer says nothing about the full address either
    catch_all = found(MAPS, "@example.com", "postmaster@example.com")
    assert verdict(snap, "bob@example.com", "bob+x@example.com", catch_all) == owned("login")


def test_a_map_that_cannot_be_read_leaves_a_sub_address_unowned() -> None:
    snap = snapshot(maps=MAPS)
    got = verdict(snap, "bob@example.com", "bob+news@example.com", failed("timeout"))
    assert got == (Action.TEMPFAIL, Rule.SENDER_MAP_FAILED, None)
    # its full address needs no map: owned by the login itself
    assert verdict(snap, "bob@example.com", "bob@example.com", None) == owned("login")


@pytest.mark.parametrize(
    ("key", "names"),
    [
        ("bob-smith@example.com", True),
        ("BOB-SMITH@Example.COM.", True),
        ('"bob-smith"@example.com', True),
        ("bob@example.com", False),
        ("bob-smith", False),
        ("@example.com", False),
        ("bob-smith@example.net", False),
        ("bob-smith@", False),
    ],
)
def test_which_map_keys_name_the_full_address(key: str, names: bool) -> None:
    assert found(MAPS, key, "x").names(Address("Bob-Smith", COM)) is names
    assert not NOT_FOUND.names(Address("bob-smith", COM))


def test_quoted_and_idn_keys_name_the_full_address() -> None:
    quoted = found(MAPS, '"john \\"doe"@example.com', "x")
    assert quoted.names(Address('john "doe', COM))
    idn = found(MAPS, "jörg@bücher.test", "x")
    assert idn.names(Address("Jörg", "xn--bcher-kva.test"))


def test_header_from_is_judged_the_same_way() -> None:
    snap = snapshot(
        grants=[("carol", "bob-smith@example.com")],
        extra={"require-header-from-match": "on"},
    )

    def header(login: str, value: str) -> tuple[Rule, str | None]:
        got = decide_header(snap, Request(None, login, "<b@remote.test>"), [value], [])
        return got.rule, got.owned_by

    assert header("bob@example.com", "Bob <bob+news@example.com>") == (
        Rule.HEADER_FROM_OWNED,
        Ownership.LOGIN,
    )
    assert header("bob@example.com", "<bob-smith@example.com>") == (
        Rule.HEADER_FROM_MISMATCH,
        None,
    )
    assert header("jean-pierre@example.com", "<jean@example.com>") == (
        Rule.HEADER_FROM_MISMATCH,
        None,
    )


def test_check_answers_a_mismatch_for_the_reported_pairs() -> None:
    spf = SpfChecks()  # spf-exempt is off: never asked
    try:
        snap = snapshot(grants=[("alice@example.com", "sales-team@example.com")])
        for login, sender in (
            ("bob-smith@example.com", "bob@example.com"),
            ("jean-pierre@example.com", "jean@example.com"),
            ("alice@example.com", "sales@example.com"),
            ("alice@example.com", "sales-anything@example.com"),
        ):
            report = explain(snap, None, login, sender, ["x@remote.test"], spf)
            assert report.lines()[0].startswith(
                "rcpt=x@remote.test action=reject rule=sender-mismatch"
            ), (login, sender, report.lines())
    finally:
        spf.stop()


# --- the rule as a property: no grants, no maps -------------------------------------

LOCAL = st.from_regex(r"[a-c](?:[a-c.+-]{0,5}[a-c])?", fullmatch=True)
DELIMITERS = st.sampled_from(["+", "-", "+-", "-.", ""])


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(login=LOCAL, sender=LOCAL, delimiter=DELIMITERS, upper=st.booleans())
def test_a_login_owns_its_address_and_its_postfix_sub_addresses_only(
    login: str, sender: str, delimiter: str, upper: bool
) -> None:
    """Owned exactly when the sender is the login, or the login is what Postfix cuts
    the sender to: never the other way round, never at a later delimiter."""
    shown = sender.upper() if upper else sender
    got = verdict(snapshot(delimiter), f"{login}@example.com", f"{shown}@example.com")
    owner = login == sender or login == split_local(sender, delimiter)
    assert got == (owned("login") if owner else MISMATCH)


def test_owned_addresses_are_the_exact_targets_and_the_address_logins() -> None:
    snap = snapshot(
        grants=[
            ("Bob-Smith@Example.COM", "@example.org"),
            ("carol", "Sales-Team@example.com"),
            ("jörg@bücher.example", "x@example.com"),
            ("o'neil@example.com", '"john doe"@example.com'),
            ("relay", "*"),
        ]
    )
    assert snap.owned_addresses == {
        "bob-smith@example.com",
        "sales-team@example.com",
        "jörg@xn--bcher-kva.example",
        "x@example.com",
        "o'neil@example.com",
        '"john doe"@example.com',
    }
