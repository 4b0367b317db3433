"""The per-session shortcuts give exactly what the longer way gave."""

from __future__ import annotations

import ipaddress
from typing import Any

import Milter
import pytest

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.networks import MAX_ADDRESS_TEXT, parse_ip
from smtpauth_milter.daemon.server import _dispatch_text

ARGS = [
    b"<alice@example.com>",
    b"<\xff\xfealice@example.com>",  # invalid UTF-8
    b"<alice\xc0\x80@example.com>",  # overlong UTF-8
    "<jösé@bücher.example>".encode(),
    b"",
]


class Recorder(Milter.Base):  # type: ignore[misc]
    """Records what reaches envfrom/envrcpt, through pymilter's own byte layer or ours."""

    def __init__(self) -> None:
        self.got: list[tuple[str, ...]] = []

    def envfrom(self, mailfrom: str, *params: str) -> int:
        self.got.append((mailfrom, *params))
        return int(Milter.CONTINUE)

    def envrcpt(self, rcpt: str, *params: str) -> int:
        self.got.append((rcpt, *params))
        return int(Milter.CONTINUE)


class Ctx:
    def __init__(self, priv: Any) -> None:
        self.priv = priv

    def getpriv(self) -> Any:
        return self.priv


@pytest.mark.parametrize("method", ["envfrom", "envrcpt"])
@pytest.mark.parametrize("arg", ARGS)
@pytest.mark.parametrize("params", [(), (b"SIZE=100",), (b"BODY=8BITMIME", b"X=\xff")])
def test_mail_and_rcpt_are_decoded_as_pymilter_decodes_them(
    method: str, arg: bytes, params: tuple[bytes, ...]
) -> None:
    theirs, ours = Recorder(), Recorder()
    assert getattr(theirs, f"{method}_bytes")(arg, *params) == Milter.CONTINUE
    assert _dispatch_text(method)(Ctx(ours), arg, *params) == Milter.CONTINUE
    assert ours.got == theirs.got and len(ours.got) == 1


def test_mail_before_connect_is_a_tempfail_not_a_traceback() -> None:
    assert _dispatch_text("envfrom")(Ctx(None), b"<a@b.test>") == Milter.TEMPFAIL


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        (" [IPv6:2001:db8::1] ", "2001:db8::1"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%" + "e" * 15, "fe80::1"),
        ("not an address", None),
        ("1" * (MAX_ADDRESS_TEXT + 1), None),
    ],
)
def test_parse_ip_cached_or_not(text: str, expected: str | None) -> None:
    for _ in range(2):  # the second answer comes from the cache
        got = parse_ip(text)
        assert (str(got) if got is not None else None) == expected
        if got is not None:
            assert got == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    "text",
    ["continue", "a b", 'x"y', "é\u2028", "x" * logfmt.CACHED_VALUE, "y" * 600, "-", ""],
)
def test_a_cached_value_renders_as_an_uncached_one(text: str) -> None:
    assert logfmt.value(text) == logfmt.value(text) == logfmt._render(text)
