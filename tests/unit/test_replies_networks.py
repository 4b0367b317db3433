"""SMTP replies (docs/policy.md#replies) and trusted networks."""

from __future__ import annotations

import ipaddress

import pytest

from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.networks import NetworkSet, parse_cidr, parse_ip
from smtpauth_milter.core.replies import Reply

# --- replies -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code", "status", "message"),
    [
        pytest.param(
            "530 5.7.0 Authentication required",
            530,
            "5.7.0",
            "Authentication required",
            id="default-auth-required",
        ),
        pytest.param(
            "451 4.3.0 Temporary policy failure, try again later",
            451,
            "4.3.0",
            "Temporary policy failure, try again later",
            id="tempfail",
        ),
        pytest.param("553 5.1.7 x", 553, "5.1.7", "x", id="one-char-text"),
        pytest.param("  550 5.7.1 go away  ", 550, "5.7.1", "go away", id="padded"),
        pytest.param(
            "554 5.7.123 three digit detail",
            554,
            "5.7.123",
            "three digit detail",
            id="3-digit-detail",
        ),
        pytest.param("421 4.7.0 closing", 421, "4.7.0", "closing", id="421"),
        pytest.param("550 5.7.1 100% sure", 550, "5.7.1", "100% sure", id="percent"),
    ],
)
def test_valid_reply(text: str, code: int, status: str, message: str) -> None:
    reply = Reply.parse(text)
    assert (reply.code, reply.status, reply.text) == (code, status, message)
    assert str(reply) == f"{code} {status} {message}"
    assert reply.temporary is (code < 500)
    assert Reply.parse(str(reply)) == reply


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("530 4.7.0 Authentication required", id="class-mismatch-5xx-4"),
        pytest.param("451 5.3.0 try later", id="class-mismatch-4xx-5"),
        pytest.param("250 2.0.0 OK", id="success-code"),
        pytest.param("354 3.0.0 go ahead", id="intermediate-code"),
        pytest.param("650 6.0.0 nonsense", id="6xx"),
        pytest.param("530 Authentication required", id="missing-status"),
        pytest.param("530 5.7.0", id="missing-text"),
        pytest.param("530 5.7.0 ", id="blank-text"),
        pytest.param("530", id="code-only"),
        pytest.param("", id="empty"),
        pytest.param("53 5.7.0 short code", id="two-digit-code"),
        pytest.param("5300 5.7.0 long code", id="four-digit-code"),
        pytest.param("530 5.7 two-part status", id="two-part-status"),
        pytest.param("530 5.7.1234 long detail", id="four-digit-detail"),
        pytest.param("530-5.7.0 continuation", id="continuation-dash"),
        pytest.param("530 5.7.0 line\r\n250 OK", id="crlf-injection"),
        pytest.param("530 5.7.0 line\nmore", id="lf"),
        pytest.param("530 5.7.0 nul\x00", id="nul"),
        pytest.param("530 5.7.0 bell\x07", id="bel"),
        pytest.param("530 5.7.0 tab\there", id="tab"),
        pytest.param("530 5.7.0 " + "x" * 5000, id="too-long"),
        pytest.param("abc 5.7.0 letters", id="letters-code"),
    ],
)
def test_invalid_reply_is_refused(text: str) -> None:
    with pytest.raises(SettingError):
        Reply.parse(text)


def test_reply_text_length_limit_is_a_boundary() -> None:
    longest = "x" * 400
    assert Reply.parse(f"550 5.7.1 {longest}").text == longest
    with pytest.raises(SettingError):
        Reply.parse(f"550 5.7.1 {longest}x")


# --- CIDRs and client addresses ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("192.0.2.0/24", "192.0.2.0/24", id="v4"),
        pytest.param(" 10.0.0.0/8 ", "10.0.0.0/8", id="v4-padded"),
        pytest.param("192.0.2.7", "192.0.2.7/32", id="v4-bare-host"),
        pytest.param("0.0.0.0/0", "0.0.0.0/0", id="v4-everything"),
        pytest.param("2001:db8::/32", "2001:db8::/32", id="v6"),
        pytest.param("2001:DB8::/48", "2001:db8::/48", id="v6-upper"),
        pytest.param("2001:db8::1", "2001:db8::1/128", id="v6-bare-host"),
        pytest.param("::/0", "::/0", id="v6-everything"),
        pytest.param("::ffff:192.0.2.0/120", "192.0.2.0/24", id="v4-mapped-folds-to-v4"),
        pytest.param("::ffff:192.0.2.9", "192.0.2.9/32", id="v4-mapped-host"),
        pytest.param("::ffff:0:0/96", "0.0.0.0/0", id="all-v4-mapped-is-all-v4"),
    ],
)
def test_parse_cidr(text: str, expected: str) -> None:
    assert str(parse_cidr(text)) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("192.0.2.1/24", id="v4-host-bits"),
        pytest.param("2001:db8::1/32", id="v6-host-bits"),
        pytest.param("192.0.2.0/33", id="v4-prefix-too-long"),
        pytest.param("2001:db8::/129", id="v6-prefix-too-long"),
        pytest.param("256.0.0.0/8", id="v4-octet"),
        pytest.param("example.com", id="hostname"),
        pytest.param("", id="empty"),
        pytest.param("192.0.2.0/", id="empty-prefix"),
        pytest.param("192.0.2.0/-1", id="negative-prefix"),
        pytest.param("2001:db8:::/48", id="v6-triple-colon"),
    ],
)
def test_bad_cidr_is_refused(text: str) -> None:
    with pytest.raises(SettingError):
        parse_cidr(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("192.0.2.1", "192.0.2.1", id="v4"),
        pytest.param("2001:db8::1", "2001:db8::1", id="v6"),
        pytest.param("::ffff:192.0.2.1", "192.0.2.1", id="v4-mapped-folds"),
        pytest.param("::FFFF:192.0.2.1", "192.0.2.1", id="v4-mapped-upper"),
        pytest.param("IPv6:2001:db8::1", "2001:db8::1", id="sendmail-ipv6-prefix"),
        pytest.param("[192.0.2.1]", "192.0.2.1", id="bracketed"),
        pytest.param("fe80::1%eth0", "fe80::1", id="zone-id"),
        pytest.param("unknown", None, id="postfix-unknown"),
        pytest.param("", None, id="empty"),
        pytest.param("localhost", None, id="hostname"),
    ],
)
def test_parse_ip(text: str, expected: str | None) -> None:
    got = parse_ip(text)
    assert (None if got is None else str(got)) == expected


def test_mapped_client_is_ipv4_for_matching() -> None:
    client = parse_ip("::ffff:10.1.2.3")
    assert isinstance(client, ipaddress.IPv4Address)
    assert NetworkSet.of([parse_cidr("10.0.0.0/8")]).contains(client)
    assert not NetworkSet.of([parse_cidr("10.0.0.0/16")]).contains(client)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


MIXED = ["192.0.2.0/24", "198.51.100.7/32", "2001:db8::/32", "2001:db8:ffff::1/128"]


@pytest.mark.parametrize(
    ("cidrs", "client", "expected"),
    [
        pytest.param([], "192.0.2.1", False, id="empty-set-v4"),
        pytest.param([], "::1", False, id="empty-set-v6"),
        pytest.param(["0.0.0.0/0"], "203.0.113.9", True, id="v4-slash0-any-v4"),
        pytest.param(["0.0.0.0/0"], "255.255.255.255", True, id="v4-slash0-broadcast"),
        pytest.param(["0.0.0.0/0"], "2001:db8::1", False, id="v4-slash0-not-v6"),
        pytest.param(["::/0"], "2001:db8::1", True, id="v6-slash0-any-v6"),
        pytest.param(["::/0"], "192.0.2.1", False, id="v6-slash0-not-v4"),
        pytest.param(["192.0.2.7/32"], "192.0.2.7", True, id="slash32-hit"),
        pytest.param(["192.0.2.7/32"], "192.0.2.6", False, id="slash32-below"),
        pytest.param(["192.0.2.7/32"], "192.0.2.8", False, id="slash32-above"),
        pytest.param(["2001:db8::7/128"], "2001:db8::7", True, id="slash128-hit"),
        pytest.param(["2001:db8::7/128"], "2001:db8::8", False, id="slash128-miss"),
        pytest.param(["192.0.2.0/24"], "192.0.2.0", True, id="v4-first"),
        pytest.param(["192.0.2.0/24"], "192.0.2.255", True, id="v4-last"),
        pytest.param(["192.0.2.0/24"], "192.0.3.0", False, id="v4-next"),
        pytest.param(["192.0.2.0/24"], "192.0.1.255", False, id="v4-previous"),
        pytest.param(["10.0.0.0/9"], "10.127.255.255", True, id="odd-prefix-in"),
        pytest.param(["10.0.0.0/9"], "10.128.0.0", False, id="odd-prefix-out"),
        pytest.param(MIXED, "192.0.2.200", True, id="mixed-v4-net"),
        pytest.param(MIXED, "198.51.100.7", True, id="mixed-v4-host"),
        pytest.param(MIXED, "198.51.100.8", False, id="mixed-v4-miss"),
        pytest.param(MIXED, "2001:db8:1234::5", True, id="mixed-v6-net"),
        pytest.param(MIXED, "2001:db9::1", False, id="mixed-v6-miss"),
        pytest.param(MIXED, "2001:db8:ffff::1", True, id="mixed-v6-host-inside-net"),
        pytest.param(["192.0.2.0/24"], "::c000:201", False, id="v4-compatible-v6-not-v4"),
        pytest.param(["::/96"], "192.0.2.1", False, id="v6-zero-net-not-v4"),
    ],
)
def test_network_set_contains(cidrs: list[str], client: str, expected: bool) -> None:
    networks = NetworkSet.of(parse_cidr(c) for c in cidrs)
    assert networks.contains(ip(client)) is expected


def test_network_set_deduplicates_and_keeps_networks() -> None:
    nets = NetworkSet.of([parse_cidr("192.0.2.0/24"), parse_cidr("192.0.2.0/24")])
    assert [str(n) for n in nets.networks] == ["192.0.2.0/24"]
