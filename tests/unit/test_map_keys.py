"""Postfix's key sequence for smtpd_sender_login_maps (mail_addr_find, Postfix 3.7).

Expected rows come from the research model that replayed live Postfix probes
(docs/mail-system-data.md#the-keys-asked-for).
"""

from __future__ import annotations

import pytest

from smtpauth_milter.core.addresses import Address
from smtpauth_milter.core.ownermaps import MapOutcome, found, split_owners
from smtpauth_milter.lookups.keys import Probe, lookup_keys, split_local

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
