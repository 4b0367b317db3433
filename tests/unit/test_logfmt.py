"""One safe logfmt line per decision (docs/operations.md#reading-a-log-line): never split, never forged."""

from __future__ import annotations

import re

import pytest

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.addresses import domain_name
from smtpauth_milter.core.networks import NetworkSet, parse_ip
from smtpauth_milter.core.policy import Action, Request, Rule, Verdict, decide
from smtpauth_milter.core.replies import Reply
from smtpauth_milter.core.snapshot import Snapshot

DOCUMENTED_KEYS = ["queue", "action", "rule", "client", "login", "from", "rcpt", "domain", "reply"]
DOCUMENTED_EXAMPLE = (
    "queue=4Xyz action=reject rule=auth-required client=203.0.113.9 login=- "
    "from=<alice@example.com> rcpt=<bob@example.net> domain=example.com "
    'reply="530 5.7.0 Authentication required"'
)

_PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)=("(?:[^"\\]|\\.)*"|[^ "]*)(?: |$)')
_ESCAPE = re.compile(r"\\(?:x([0-9a-f]{2})|u([0-9a-f]{4})|U([0-9a-f]{8})|(.))")
_SIMPLE = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}


def parse_line(text: str) -> list[tuple[str, str]]:
    """A strict logfmt reader: the pairs, in order; fails on anything left over."""
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _PAIR.match(text, pos)
        assert match is not None, f"unparseable at {pos}: {text[pos:]!r}"
        pairs.append((match[1], match[2]))
        pos = match.end()
    assert not text.endswith(" ")
    return pairs


def decode(raw: str) -> str | None:
    """The text a logfmt value stands for (None for ``-``)."""
    if raw == "-":
        return None
    if not raw.startswith('"'):
        return raw

    def one(m: re.Match[str]) -> str:
        hexa = m[1] or m[2] or m[3]
        if hexa:
            return chr(int(hexa, 16))
        assert m[4] in _SIMPLE, f"unknown escape \\{m[4]}"
        return _SIMPLE[m[4]]

    return _ESCAPE.sub(one, raw[1:-1])


HOSTILE = [
    pytest.param("plain", id="plain"),
    pytest.param("", id="empty"),
    pytest.param("two words", id="space"),
    pytest.param("<a@b> rule=continue", id="inject-pair"),
    pytest.param("x=y", id="equals"),
    pytest.param('a" action=continue x="', id="inject-quote"),
    pytest.param('a\\" action=continue', id="backslash-quote"),
    pytest.param("a\\", id="trailing-backslash"),
    pytest.param("a\r\nqueue=FAKE action=continue", id="crlf"),
    pytest.param("a\nb", id="lf"),
    pytest.param("a\rb", id="cr"),
    pytest.param("a\x00b", id="nul"),
    pytest.param("a\x1bb[31m", id="ansi-escape"),
    pytest.param("a\x0bb\x0cc", id="vt-ff"),
    pytest.param("a\x1c\x1d\x1eb", id="file-separators"),
    pytest.param("a\x85b", id="nel"),
    pytest.param("a\u2028b\u2029c", id="unicode-line-separators"),
    pytest.param("a\u200eb\ufeff", id="format-chars"),
    pytest.param("a\udcc3b", id="lone-surrogate"),
    pytest.param(b"<j\xc3\xff@x>".decode("utf-8", "surrogateescape"), id="surrogateescape"),
    pytest.param("jöran@exämple.com", id="utf8"),
    pytest.param("a\tb", id="tab"),
    pytest.param("\U0001f600 \U000e0001", id="astral"),
]


@pytest.mark.parametrize("text", HOSTILE)
def test_value_is_one_token_that_decodes_back(text: str) -> None:
    rendered = logfmt.value(text)
    assert len(rendered.splitlines()) == 1
    assert not any(ch in rendered for ch in "\r\n\x00\u2028\u2029\x85")
    assert parse_line(f"k={rendered}") == [("k", rendered)]
    assert decode(rendered) == text


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_value_cannot_add_or_split_pairs(text: str) -> None:
    out = logfmt.line({"queue": "Q1", "login": text, "from": text, "reply": "ok"})
    assert "\n" not in out and "\r" not in out
    pairs = parse_line(out)
    assert [k for k, _ in pairs] == ["queue", "login", "from", "reply"]
    assert [decode(v) for _, v in pairs] == ["Q1", text, text, "ok"]


def test_none_is_a_dash() -> None:
    assert logfmt.value(None) == "-"
    assert logfmt.line({"login": None}) == "login=-"


def test_literal_dash_is_distinguishable_from_absent() -> None:
    # A value from the network that happens to be "-" must not read as "absent".
    assert logfmt.value("-") != logfmt.value(None)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("<alice@example.com>", "<alice@example.com>", id="bracketed-address-bare"),
        pytest.param("203.0.113.9", "203.0.113.9", id="ipv4-bare"),
        pytest.param("2001:db8::1", "2001:db8::1", id="ipv6-bare"),
        pytest.param("a b", '"a b"', id="space-quoted"),
        pytest.param('say "hi"', '"say \\"hi\\""', id="quotes-escaped"),
        pytest.param("back\\slash", '"back\\\\slash"', id="backslash-escaped"),
        pytest.param("a\nb", '"a\\nb"', id="newline-escaped"),
        pytest.param("a\x00b", '"a\\x00b"', id="nul-escaped"),
        pytest.param("a\u2028b", '"a\\u2028b"', id="line-separator-escaped"),
    ],
)
def test_value_rendering(text: str, expected: str) -> None:
    assert logfmt.value(text) == expected


def test_huge_value_is_truncated_on_one_line() -> None:
    rendered = logfmt.value("A\n" * 10_000)
    assert "\n" not in rendered
    assert len(rendered) < 2_000


def spec_example_verdict() -> tuple[Request, str, Verdict]:
    snapshot = Snapshot.build(
        {"require-auth-local": "on"},
        {domain_name("example.com"): {}},
        NetworkSet.of(()),
        [],
        1,
    )
    req = Request(parse_ip("203.0.113.9"), None, "<alice@example.com>")
    rcpt = "<bob@example.net>"
    return req, rcpt, decide(snapshot, req, rcpt)


def test_decision_line_matches_the_spec_example() -> None:
    req, rcpt, verdict = spec_example_verdict()
    assert logfmt.decision_line("4Xyz", req, rcpt, verdict) == DOCUMENTED_EXAMPLE


def test_decision_line_has_every_key_in_spec_order() -> None:
    req = Request(parse_ip("2001:db8::1"), "bob", "<x@y>")
    verdict = Verdict(Action.CONTINUE, Rule.AUTHENTICATED, None, None)
    out = logfmt.decision_line(None, req, "<z@w>", verdict)
    pairs = parse_line(out)
    assert [k for k, _ in pairs] == DOCUMENTED_KEYS
    assert dict(pairs) == {
        "queue": "-",
        "action": "continue",
        "rule": "authenticated",
        "client": "2001:db8::1",
        "login": "bob",
        "from": "<x@y>",
        "rcpt": "<z@w>",
        "domain": "-",
        "reply": "-",
    }


@pytest.mark.parametrize(
    ("login", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty-is-unauthenticated"),
        pytest.param("alice@example.com", "alice@example.com", id="login"),
    ],
)
def test_decision_line_login(login: str | None, expected: str | None) -> None:
    req = Request(None, login, "<>")
    verdict = Verdict(Action.CONTINUE, Rule.NULL_SENDER)
    pairs = dict(parse_line(logfmt.decision_line("Q", req, "<a@b>", verdict)))
    assert decode(pairs["login"]) == expected
    assert pairs["client"] == "-"


@pytest.mark.parametrize("hostile", HOSTILE)
def test_decision_line_with_hostile_envelope(hostile: str) -> None:
    req = Request(parse_ip("192.0.2.1"), hostile, hostile)
    verdict = Verdict(
        Action.WOULD_REJECT, Rule.AUTH_REQUIRED, Reply.parse("530 5.7.0 Login"), "example.com"
    )
    out = logfmt.decision_line(hostile, req, hostile, verdict)
    assert len(out.splitlines()) == 1
    pairs = parse_line(out)
    assert [k for k, _ in pairs] == DOCUMENTED_KEYS
    values = {k: decode(v) for k, v in pairs}
    assert values["action"] == "would-reject"
    assert values["reply"] == "530 5.7.0 Login"
    assert values["from"] == values["rcpt"] == values["queue"] == hostile
