"""The CLI's two renderings of text beside logfmt: plain lines and JSON."""

from __future__ import annotations

import json
import sys

from hypothesis import given
from hypothesis import strategies as st

from smtpauth_milter.core import logfmt

ANY_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=sys.maxunicode))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4),
    max_leaves=12,
)


def test_unsafe_is_what_isprintable_refuses() -> None:
    assert all(logfmt.unsafe(chr(c)) != chr(c).isprintable() for c in range(sys.maxunicode + 1))


@given(ANY_TEXT)
def test_printable_is_one_printable_line(text: str) -> None:
    shown = logfmt.printable(text)
    assert shown.isprintable()
    assert shown == text or not text.isprintable()


@given(JSON_VALUES)
def test_json_text_is_printable_valid_and_parses_back(data: object) -> None:
    text = logfmt.json_text(data)
    assert all(line.isprintable() for line in text.split("\n"))
    assert json.loads(text) == data


def test_json_text_keeps_readable_text_and_escapes_the_rest() -> None:
    data = {"comment": "Büro\x9b[2J\u202e\u2028\U000e0041 ok"}
    assert logfmt.json_text(data) == (
        '{\n  "comment": "Büro\\u009b[2J\\u202e\\u2028\\udb40\\udc41 ok"\n}'
    )
    assert logfmt.printable(data["comment"]) == "Büro\\x9b[2J\\u202e\\u2028\\U000e0041 ok"
