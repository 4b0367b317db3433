"""Postfix's key sequence for smtpd_sender_login_maps (mail_addr_find, Postfix 3.7).

Expected rows come from the research model that replayed live Postfix probes
(docs/mail-system-data.md#the-keys-asked-for).
"""

from __future__ import annotations

import pytest

from smtpauth_milter.core.addresses import Address, parse_path
from smtpauth_milter.core.ownermaps import MapOutcome, found, split_owners
from smtpauth_milter.lookups.keys import Probe, domain_spellings, lookup_keys, split_local

LOCAL = frozenset({"example.org", "localhost"})


def keys(local: str, domain: str, delimiters: str = "+-") -> list[tuple[str, bool]]:
    return [(p.key, p.partial) for p in lookup_keys(Address(local, domain), delimiters, LOCAL)]


@pytest.mark.parametrize(
    ("local", "domain", "expected"),
    [
        ("alice", "example.net", [("alice@example.net", False), ("@example.net", True)]),
        ("ALICE", "example.net", [("alice@example.net", False), ("@example.net", True)]),
        (
            "alice-tag+x", "example.net",
            [("alice-tag+x@example.net", False), ("alice@example.net", True), ("@example.net", True)],
        ),
        (
            "luser+x", "example.org",
            [("luser+x@example.org", False), ("luser@example.org", True), ("luser+x", True),
             ("luser", True), ("@example.org", True)],
        ),
        ("owner-list", "example.net", [("owner-list@example.net", False), ("@example.net", True)]),
        ("list-request", "example.net", [("list-request@example.net", False), ("@example.net", True)]),
        ("mailer-daemon", "example.net", [("mailer-daemon@example.net", False), ("@example.net", True)]),
        ("+x", "example.net", [("+x@example.net", False), ("@example.net", True)]),
        ("user+", "example.net", [("user+@example.net", False), ("user@example.net", True), ("@example.net", True)]),
        (
            "john doe", "example.net",
            [('"john doe"@example.net', False), ("john doe@example.net", False), ("@example.net", True)],
        ),
        ("STRASSE", "example.net", [("strasse@example.net", False), ("@example.net", True)]),
        ("straße", "example.net", [("strasse@example.net", False), ("@example.net", True)]),
    ],
)  # fmt: skip
def test_key_sequence(local: str, domain: str, expected: list[tuple[str, bool]]) -> None:
    assert keys(local, domain) == expected


def test_no_delimiter_no_cut() -> None:
    assert keys("a+b", "example.net", "") == [("a+b@example.net", False), ("@example.net", True)]


def test_owner_prefix_is_cut_when_dash_is_no_delimiter() -> None:
    assert split_local("owner-list+x", "+") == "owner-list"
    assert split_local("owner-list+x", "+-") is None


def test_keys_that_cannot_be_a_batch_line_are_never_asked() -> None:
    probes = lookup_keys(Address("a\nb", "example.net"), "+", ())
    assert probes == (Probe("@example.net", True),)


def test_owners_split_on_commas_and_space_and_compare_like_postfix() -> None:
    assert split_owners(" bob, BobAdmin\tcarol,,") == ("bob", "BobAdmin", "carol")
    answer = found("texthash:/x", "k", "TEAM1, straße")
    assert answer.outcome is MapOutcome.FOUND
    assert answer.owned_by("team1") and answer.owned_by("STRASSE")
    assert not answer.owned_by("alice+tag@example.org")
    assert found("texthash:/x", "k", ",").owners == ()  # found, owned by nobody


IDN_A = "xn--bcher-kva.example"
IDN_U = "bücher.example"


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        ("<Info+x@BÜCHER.example.>", [
            ("info+x@bücher.example", False), (f"info+x@{IDN_A}", False),
            ("info@bücher.example", True), (f"info@{IDN_A}", True),
            ("@bücher.example", True), (f"@{IDN_A}", True),
        ]),
        (f"<info+x@{IDN_A.upper()}>", [
            (f"info+x@{IDN_A}", False), ("info+x@bücher.example", False),
            (f"info@{IDN_A}", True), ("info@bücher.example", True),
            (f"@{IDN_A}", True), ("@bücher.example", True),
        ]),
        ('<"john doe"@bücher.example>', [
            ('"john doe"@bücher.example', False), (f'"john doe"@{IDN_A}', False),
            ("john doe@bücher.example", False), (f"john doe@{IDN_A}", False),
            ("@bücher.example", True), (f"@{IDN_A}", True),
        ]),
    ],
)  # fmt: skip
def test_an_idn_domain_is_asked_as_sent_then_in_its_other_spelling(
    sent: str, expected: list[tuple[str, bool]]
) -> None:
    sender = parse_path(sent)
    assert sender is not None
    assert [(p.key, p.partial) for p in lookup_keys(sender, "+", ())] == expected


def test_local_domains_match_either_spelling_and_ascii_domains_have_one() -> None:
    sender = parse_path("<luser@bücher.example>")
    assert sender is not None
    keys = [p.key for p in lookup_keys(sender, "+", {IDN_A})]
    assert keys == [
        "luser@bücher.example",
        f"luser@{IDN_A}",
        "luser",
        "@bücher.example",
        f"@{IDN_A}",
    ]
    assert domain_spellings(Address("a", "example.net")) == ("example.net",)
    assert domain_spellings(Address("a", "xn--zz.example")) == ("xn--zz.example",)  # undecodable


def test_postfix_folding_of_the_sent_domain_is_kept() -> None:
    # Postfix folds the key as sent (ß -> ss); the A-label keeps IDNA 2008's ß.
    sender = parse_path("<a@STRAßE.example>")
    assert sender is not None
    assert domain_spellings(sender) == ("strasse.example", "xn--strae-oqa.example")
