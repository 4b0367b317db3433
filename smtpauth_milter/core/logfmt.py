"""One safe logfmt line per decision: a client can never split or forge a line.

A :class:`Fields` log message keeps its fields, so the JSON formatter
(``run --log-format json``) writes the same information as an object.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence

from smtpauth_milter.core.policy import Verdict
from smtpauth_milter.core.request import Request

_BARE = re.compile(r"[A-Za-z0-9_.:@<>+/\[\],-]+")
_ASCII_SPECIAL = re.compile(r'[\x00-\x1f\x7f"\\]')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
MAX_VALUE = 512


def unsafe(ch: str) -> bool:
    """Never printed raw: controls (C0, C1), format characters (bidi overrides such as
    U+202E), surrogates, private and unassigned code points, separators but the space
    (Unicode's "Other" and "Separator", which is what ``str.isprintable`` refuses)."""
    return unicodedata.category(ch)[0] in "CZ" and ch != " "


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if unsafe(ch):
        code = ord(ch)
        return (
            f"\\x{code:02x}"
            if code < 0x100
            else f"\\u{code:04x}"
            if code < 0x10000
            else f"\\U{code:08x}"
        )
    return ch


def printable(text: str) -> str:
    """``text`` for a line of plain output: each unsafe character escaped as in a logfmt
    value (``\\n``, ``\\x9b``, ``\\u202e``), everything else (quotes, backslashes) kept."""
    if text.isprintable():
        return text
    return "".join(_escape_char(ch) if unsafe(ch) else ch for ch in text)


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    high, low = divmod(code - 0x10000, 0x400)
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


def json_text(data: object) -> str:
    """``data`` as indented JSON, readable (UTF-8, not ASCII-only) but with every unsafe
    character written as a ``\\uXXXX`` escape: the same value when parsed back.

    ``json.dumps`` escapes C0 controls inside strings itself, and between tokens it
    writes only spaces and newlines: so every other unsafe character it leaves raw is
    inside a string, where the escape is valid JSON.
    """
    lines = json.dumps(data, indent=2, ensure_ascii=False).split("\n")
    return "\n".join(
        line if line.isprintable() else "".join(_json_escape(c) if unsafe(c) else c for c in line)
        for line in lines
    )


def clip(text: str) -> str:
    """Values longer than MAX_VALUE are cut, in every log format alike."""
    return text[:MAX_VALUE] + "..." if len(text) > MAX_VALUE else text


def value(text: str | None) -> str:
    """A logfmt value: ``-`` for absent, bare when harmless, else quoted and escaped."""
    if text is None:
        return "-"
    if len(text) <= CACHED_VALUE:
        return _cached_value(text)
    return _render(text)


# Most values repeat from line to line (action, rule, client, domain, login, reply):
# short ones are rendered once.  Bounded, and long (rare, maybe hostile) ones never kept.
CACHED_VALUE = 128


@functools.lru_cache(maxsize=4096)
def _cached_value(text: str) -> str:
    return _render(text)


def _render(text: str) -> str:
    text = clip(text)
    if _BARE.fullmatch(text) and text != "-":
        return text
    if text.isascii() and _ASCII_SPECIAL.search(text) is None:
        return f'"{text}"'
    return '"' + "".join(_escape_char(ch) for ch in text) + '"'


def line(fields: Mapping[str, str | None]) -> str:
    # value() inlined: one Python call less per field, on every decision line
    return " ".join(
        [
            f"{key}=-"
            if val is None
            else f"{key}={_cached_value(val) if len(val) <= CACHED_VALUE else _render(val)}"
            for key, val in fields.items()
        ]
    )


class Fields:
    """A log message that renders as a logfmt line and keeps its fields for JSON."""

    __slots__ = ("fields",)

    def __init__(self, fields: Mapping[str, str | None]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return line(self.fields)


def decision_fields(
    queue: str | None,
    request: Request,
    rcpt: str,
    verdict: Verdict,
    client_text: str | None = None,
) -> dict[str, str | None]:
    """The fields of one decision; ``spf`` and ``owned_by`` (in that order, last) appear
    only when SPF was consulted / the login owns the sender, so other lines keep theirs.
    ``client_text``: ``str(request.client)`` when the caller has it already (the milter
    renders it once per connection, not once per recipient)."""
    if client_text is None and request.client is not None:
        client_text = str(request.client)
    fields: dict[str, str | None] = {
        "queue": queue,
        # StrEnum members are their values (str): ``.value`` is an enum property call
        "action": verdict.action,
        "rule": verdict.rule,
        "client": client_text,
        "login": request.login or None,
        "from": request.sender,
        "rcpt": rcpt,
        "domain": verdict.domain,
        "reply": str(verdict.reply) if verdict.reply is not None else None,
    }
    if request.spf is not None:  # only when SPF was consulted for this message
        fields["spf"] = request.spf.value
    if verdict.owned_by is not None:  # added at the end: existing fields keep their place
        fields["owned_by"] = verdict.owned_by
        if verdict.owner_key is not None:
            fields["owner_key"] = verdict.owner_key
    return fields


def decision_line(queue: str | None, request: Request, rcpt: str, verdict: Verdict) -> str:
    return line(decision_fields(queue, request, rcpt, verdict))


def header_decision_fields(
    queue: str | None, request: Request, header_from: Sequence[str], verdict: Verdict
) -> dict[str, str | None]:
    """The end-of-headers decision: ``header_from`` in place of ``rcpt``, ``-`` when absent."""
    fields: dict[str, str | None] = {}
    for key, value in decision_fields(queue, request, "", verdict).items():
        if key == "rcpt":
            fields["header_from"] = " | ".join(header_from) or None
        else:
            fields[key] = value
    return fields
