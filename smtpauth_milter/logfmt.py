"""One safe logfmt line per decision: a client can never split or forge a line."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence

from .policy import Request, Verdict

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


def value(text: str | None) -> str:
    """A logfmt value: ``-`` for absent, bare when harmless, else quoted and escaped."""
    if text is None:
        return "-"
    if len(text) > MAX_VALUE:
        text = text[:MAX_VALUE] + "..."
    if _BARE.fullmatch(text) and text != "-":
        return text
    if text.isascii() and _ASCII_SPECIAL.search(text) is None:
        return f'"{text}"'
    return '"' + "".join(_escape_char(ch) for ch in text) + '"'


def line(fields: Mapping[str, str | None]) -> str:
    return " ".join(f"{key}={value(val)}" for key, val in fields.items())


def decision_line(queue: str | None, request: Request, rcpt: str, verdict: Verdict) -> str:
    return line(
        {
            "queue": queue,
            "action": verdict.action.value,
            "rule": verdict.rule.value,
            "client": str(request.client) if request.client is not None else None,
            "login": request.login or None,
            "from": request.sender,
            "rcpt": rcpt,
            "domain": verdict.domain,
            "reply": str(verdict.reply) if verdict.reply is not None else None,
        }
    )


def header_decision_line(
    queue: str | None, request: Request, header_from: Sequence[str], verdict: Verdict
) -> str:
    """The end-of-headers decision: ``header_from`` instead of ``rcpt``, ``-`` when absent."""
    return line(
        {
            "queue": queue,
            "action": verdict.action.value,
            "rule": verdict.rule.value,
            "client": str(request.client) if request.client is not None else None,
            "login": request.login or None,
            "from": request.sender,
            "header_from": " | ".join(header_from) if header_from else None,
            "domain": verdict.domain,
            "reply": str(verdict.reply) if verdict.reply is not None else None,
        }
    )
