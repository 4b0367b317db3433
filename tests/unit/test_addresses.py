"""Parsing MAIL FROM like the MTA does, and normalising addresses (docs/policy.md#terms)."""

from __future__ import annotations

import pytest

from smtpauth_milter.core.addresses import (
    Address,
    AddressError,
    domain_name,
    normalise,
    normalise_local,
    parse_address,
    parse_path,
    strip_batv,
    unicode_domain,
)

# "exämple.com" in IDNA form (RFC 3492 punycode of "exmple" with U+00E4 inserted).
EXAMPLE_IDN = "xn--exmple-cua.com"


def canonical(raw: str, delimiter: str = "+") -> str | None:
    address = parse_path(raw)
    return None if address is None else normalise(address, delimiter)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("<alice@example.com>", "alice@example.com", id="bracketed"),
        pytest.param("alice@example.com", "alice@example.com", id="unbracketed"),
        pytest.param("  <alice@example.com>  ", "alice@example.com", id="outer-space"),
        pytest.param("< alice@example.com >", "alice@example.com", id="inner-space"),
        pytest.param(
            "<The Postmaster <postmaster@example.com>>",
            "postmaster@example.com",
            id="display-name-innermost",
        ),
        pytest.param(
            "<@relay.test:postmaster@example.com>",
            "postmaster@example.com",
            id="source-route-one-hop",
        ),
        pytest.param("<@a,@b:x@y>", "x@y", id="source-route-two-hops"),
        pytest.param(
            "<@relay.test,@other.test:Alice@Example.COM>",
            "alice@example.com",
            id="source-route-and-case",
        ),
        pytest.param('<"john doe"@example.com>', '"john doe"@example.com', id="quoted-space"),
        pytest.param('<"alice"@example.com>', "alice@example.com", id="quoted-needless"),
        pytest.param('<"a@b"@example.com>', '"a@b"@example.com', id="quoted-at-sign"),
        pytest.param(
            '<"<evil@attacker.test>" <alice@example.com>>',
            "alice@example.com",
            id="brackets-inside-quotes-ignored",
        ),
        pytest.param("<jöran@exämple.com>", f"jöran@{EXAMPLE_IDN}", id="smtputf8-idna"),
        pytest.param(f"<Jöran@{EXAMPLE_IDN.upper()}>", f"jöran@{EXAMPLE_IDN}", id="a-label-upper"),
        pytest.param("<JÖRAN@EXÄMPLE.COM>", f"jöran@{EXAMPLE_IDN}", id="smtputf8-upper"),
        pytest.param("<alice@example.com.>", "alice@example.com", id="trailing-dot"),
        pytest.param("<ALICE@EXAMPLE.COM>", "alice@example.com", id="upper-case"),
        pytest.param("<Alice+Lists@Example.com>", "alice@example.com", id="sub-address"),
        pytest.param("<alice+a+b@example.com>", "alice@example.com", id="first-delimiter"),
        pytest.param("<alice@[192.0.2.1]>", "alice@[192.0.2.1]", id="address-literal"),
        pytest.param(
            "<a@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com>",
            "a@example.com",
            id="fullwidth-domain-folds-to-ascii",
        ),
    ],
)
def test_parse_path_takes_the_address_the_mta_uses(raw: str, expected: str) -> None:
    assert canonical(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("<>", id="null"),
        pytest.param("< >", id="null-with-space"),
        pytest.param(" <> ", id="null-padded"),
    ],
)
def test_null_sender_is_none(raw: str) -> None:
    assert parse_path(raw) is None


def test_quoted_and_unquoted_local_parts_normalise_alike() -> None:
    assert canonical('"alice"@x') == canonical("alice@x") == "alice@x"
    assert canonical('"Alice+tag"@X') == "alice@x"


def test_parse_keeps_local_part_as_sent_and_domain_normalised() -> None:
    address = parse_path("<Alice+Tag@Example.COM.>")
    assert address is not None
    assert address.local == "Alice+Tag"
    assert address.domain == "example.com"


@pytest.mark.parametrize(
    ("local", "delimiter", "expected"),
    [
        pytest.param("alice+lists", "+", "alice", id="plus"),
        pytest.param("Alice+Lists", "+", "alice", id="plus-case"),
        pytest.param("alice-lists", "+", "alice-lists", id="minus-not-a-delimiter"),
        pytest.param("alice-lists", "+-", "alice", id="custom-set-minus"),
        pytest.param("alice+lists", "+-", "alice", id="custom-set-plus"),
        pytest.param("al-ice+x", "+-", "al", id="custom-set-first-of-any"),
        pytest.param("alice+lists", "", "alice+lists", id="empty-delimiter-off"),
        pytest.param("ALICE+LISTS", "", "alice+lists", id="empty-delimiter-still-lowers"),
        pytest.param("alice", "+", "alice", id="no-sub-address"),
        pytest.param("alice+", "+", "alice", id="empty-extension"),
    ],
)
def test_normalise_local(local: str, delimiter: str, expected: str) -> None:
    assert normalise_local(local, delimiter) == expected


@pytest.mark.parametrize(
    ("raw", "delimiter", "expected"),
    [
        pytest.param("<alice-x@example.com>", "+-", "alice@example.com", id="minus-delimiter"),
        pytest.param("<alice+x@example.com>", "", "alice+x@example.com", id="delimiter-off"),
        pytest.param('<"Bob Smith+x"@example.com>', "+", '"bob smith"@example.com', id="quoted"),
    ],
)
def test_normalise_with_delimiters(raw: str, delimiter: str, expected: str) -> None:
    assert canonical(raw, delimiter) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("Alice+x@Example.COM", id="plain"),
        pytest.param('"john doe"@example.com', id="quoted-space"),
        pytest.param('"a\\"b\\\\c"@example.com', id="quoted-escapes"),
        pytest.param('"a..b"@example.com', id="quoted-dots"),
        pytest.param('".alice"@example.com', id="quoted-leading-dot"),
        pytest.param('" bob"@example.com', id="quoted-leading-space"),
        pytest.param('"\u00a0bob"@example.com', id="quoted-leading-nbsp"),
        pytest.param('"bob\u2003"@example.com', id="quoted-trailing-em-space"),
        pytest.param('"\u3000"@example.com', id="quoted-ideographic-space-only"),
        pytest.param("jöran@exämple.com", id="smtputf8"),
    ],
)
def test_normalised_form_reads_back_as_the_same_address(text: str) -> None:
    # The canonical form is stored (grants) and re-read (snapshot, import):
    # reading it back must give the same address, never a different one.
    once = normalise(parse_address(text), "+")
    assert normalise(parse_address(once), "+") == once


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("<alice@example.com\r\n>", id="crlf"),
        pytest.param("<alice@example.com>\rRCPT", id="cr"),
        pytest.param("<alice\n@example.com>", id="lf"),
        pytest.param("<alice\x00@example.com>", id="nul"),
        pytest.param("<alice@exam\x00ple.com>", id="nul-in-domain"),
        pytest.param("<alice\t\x7f@example.com>", id="del"),
        pytest.param("<a@b@example.com>", id="two-at"),
        pytest.param("a@b@example.com", id="two-at-unbracketed"),
        pytest.param("<postmaster>", id="unqualified-bracketed"),
        pytest.param("postmaster", id="unqualified-bare"),
        pytest.param("<@relay.test:postmaster>", id="unqualified-after-route"),
        pytest.param("<alice@>", id="empty-domain"),
        pytest.param("<@example.com>", id="empty-local"),
        pytest.param("<alice@example.com", id="unclosed-bracket"),
        pytest.param("alice@example.com>", id="unopened-bracket"),
        pytest.param("<<alice@example.com>", id="extra-open"),
        pytest.param("<alice@example.com>>", id="extra-close"),
        pytest.param("><alice@example.com>", id="close-first"),
        pytest.param("<alice@example.com> <bob@example.com>", id="two-bracketed"),
        pytest.param("<<alice@example.com> <bob@example.com>>", id="two-nested"),
        pytest.param("<@relay.test postmaster@example.com>", id="route-without-colon"),
        pytest.param("<@relay.test,relay2:postmaster@example.com>", id="route-hop-without-at"),
        pytest.param('<"unterminated@example.com>', id="unterminated-quote"),
        pytest.param('<"a"b@example.com>', id="text-after-quoted"),
        pytest.param("<john doe@example.com>", id="unquoted-space"),
        pytest.param("<a,b@example.com>", id="unquoted-comma"),
        pytest.param("<alice@exa mple.com>", id="space-in-domain"),
        pytest.param("<alice@-example.com>", id="label-leading-hyphen"),
        pytest.param("<alice@example..com>", id="empty-label"),
        pytest.param("<alice@example.com..>", id="two-trailing-dots"),
        pytest.param("<alice@" + "a" * 64 + ".com>", id="label-too-long"),
        pytest.param("<alice@☃.com>", id="bad-idn-disallowed-codepoint"),
        pytest.param("<alice@xn--.com>", id="bad-a-label"),
        pytest.param("<alice@exa\u200bmple.com>", id="zero-width-space"),
        pytest.param("<" + "a" * 10_000 + "@example.com>", id="10kB-local"),
        pytest.param("<alice@" + "a." * 5_000 + "com>", id="10kB-domain"),
        pytest.param("<" * 5_000 + "a@b" + ">" * 5_000, id="10kB-brackets"),
        pytest.param(
            b"<j\xc3@example.com>".decode("utf-8", "surrogateescape"), id="surrogate-local"
        ),
        pytest.param(
            b"<alice@ex\xff.com>".decode("utf-8", "surrogateescape"), id="surrogate-domain"
        ),
    ],
)
def test_unparseable_path_is_an_error(raw: str) -> None:
    with pytest.raises(AddressError):
        parse_path(raw)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("alice", id="no-at"),
        pytest.param("<alice@example.com>", id="brackets-not-allowed"),
        pytest.param("a@b@c", id="two-at"),
        pytest.param("alice@example.com\n", id="newline"),
    ],
)
def test_parse_address_errors(text: str) -> None:
    with pytest.raises(AddressError):
        parse_address(text)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("Example.COM", "example.com", id="lower"),
        pytest.param("example.com.", "example.com", id="trailing-dot"),
        pytest.param("exämple.com", EXAMPLE_IDN, id="u-label"),
        pytest.param("EXÄMPLE.COM", EXAMPLE_IDN, id="u-label-upper"),
        pytest.param(EXAMPLE_IDN, EXAMPLE_IDN, id="a-label"),
        pytest.param(" example.com ", "example.com", id="padded"),
    ],
)
def test_domain_name(name: str, expected: str) -> None:
    assert domain_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param(".", id="dot"),
        pytest.param("exa mple.com", id="space"),
        pytest.param("☃.com", id="snowman"),
        pytest.param("a" * 64 + ".com", id="label-too-long"),
        pytest.param("a." * 127 + "com", id="name-too-long"),
        pytest.param("exam\nple.com", id="newline"),
        pytest.param("example.com\x00", id="nul"),
        pytest.param("-example.com", id="leading-hyphen"),
    ],
)
def test_bad_domain_name(name: str) -> None:
    with pytest.raises(AddressError):
        domain_name(name)


def test_address_error_is_a_value_error() -> None:
    assert issubclass(AddressError, ValueError)


def test_a_unicode_domain_is_kept_as_sent_beside_its_normal_form() -> None:
    sent = parse_path("<prvs=1234abcd=Anna@Bücher.Example.>")
    assert sent is not None
    assert sent == Address("prvs=1234abcd=Anna", "xn--bcher-kva.example")  # not compared
    assert sent.domain_as_sent == "Bücher.Example"
    assert strip_batv(sent).domain_as_sent == "Bücher.Example"
    ascii_sent = parse_path("<anna@XN--BCHER-KVA.example>")
    assert ascii_sent is not None and ascii_sent.domain_as_sent is None
    assert unicode_domain("xn--bcher-kva.example") == "bücher.example"
    assert unicode_domain("example.com") == "example.com"
