"""The rule that decides which SPF records are cached per sender rather than per domain.
(Import circles and module sizes are checked for the whole package in tests/unit.)"""

from __future__ import annotations

from pathlib import Path

import pytest

import smtpauth_milter
from smtpauth_milter.core.spf import split_sender, uses_local_part

PACKAGE = Path(smtpauth_milter.__file__).parent
MAX_LINES = 350


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=spf1 exists:%{l}.%{d} -all", True),
        ("v=spf1 exists:%{L}.%{d} -all", True),  # upper case: URL-escaped, same letter
        ("v=spf1 exists:%{ir}.%{v}.%{l1r+}._x.%{d2} -all", True),
        ("v=spf1 exists:%{s}.x.example -all", True),
        ("v=spf1 include:%{S2}.x.example -all", True),
        ("v=spf1 ip4:192.0.2.0/24 -all exp=%{l}.why.example", True),  # anywhere in the record
        ("v=spf1 exists:%{ir}.%{v}._spf.%{d2} -all", False),  # IP and domain only
        ("v=spf1 exists:%{o}.%{h}.%{p}.x.example -all", False),
        ("v=spf1 ip4:192.0.2.0/24 include:_spf.example.net -all", False),
        ("v=spf1 a:%%{l}.example -all", True),  # an escaped % still counts: erring safe
    ],
)
def test_which_records_depend_on_the_local_part(record: str, expected: bool) -> None:
    assert uses_local_part(record) is expected


def test_split_sender() -> None:
    assert split_sender("Bob+x@Example.COM.") == ("Bob+x", "example.com")
    assert split_sender('"a@b"@example.com') == ('"a@b"', "example.com")
    assert split_sender("nobody") is None
    assert split_sender("") is None
