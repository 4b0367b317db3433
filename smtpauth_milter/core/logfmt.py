"""One safe logfmt line per decision: a client can never split or forge a line.

A :class:`Fields` log message keeps its fields, so the JSON formatter
(``run --log-format json``) writes the same information as an object.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping, Sequence

from smtpauth_milter.core.policy import Verdict
from smtpauth_milter.core.request import Request

_BARE = re.compile(r"[A-Za-z0-9_.:@<>+/\[\],-]+")
_ASCII_SPECIAL = re.compile(r'[\x00-\x1f\x7f"\\]')
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
MAX_VALUE = 512


def _escape_char(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    if unicodedata.category(ch)[0] in "CZ" and ch != " ":
        code = ord(ch)
        return (
            f"\\x{code:02x}"
            if code < 0x100
            else f"\\u{code:04x}"
            if code < 0x10000
            else f"\\U{code:08x}"
        )
    return ch


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
