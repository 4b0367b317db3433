"""How setting values are checked and written back as canonical text. Pure.

Each function takes what an admin typed and returns the text to store, or
raises one :class:`~smtpauth_milter.core.errors.SettingError` that says what
is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.replies import Reply

_TRUE = frozenset({"on", "true", "yes", "1"})
_FALSE = frozenset({"off", "false", "no", "0"})


def canonical_bool(text: str) -> str:
    word = text.strip().lower()
    if word in _TRUE:
        return "on"
    if word in _FALSE:
        return "off"
    raise SettingError(f"bad boolean {text!r}: use on/off, true/false, yes/no or 1/0")


def canonical_list(text: str) -> str:
    items: list[str] = []
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            continue
        if any(ch in item for ch in '@<>" \t') or not item.isprintable():
            raise SettingError(f"bad list item {raw.strip()!r}: expected a plain local part")
        if item not in items:
            items.append(item)
    return ", ".join(items)


def canonical_reply(text: str) -> str:
    return str(Reply.parse(text))


def temporary_reply(text: str, why: str) -> str:
    """``text`` as a canonical 4xx reply; a 5xx is a SettingError saying ``why``."""
    reply = Reply.parse(text)
    if not reply.temporary:
        raise SettingError(f"bad reply {text!r}: {why}")
    return str(reply)


def canonical_temporary_reply(text: str) -> str:
    return temporary_reply(
        text,
        "tempfail-reply answers for the milter's own trouble "
        "and must be a 4xx reply, never a permanent refusal",
    )


def canonical_delimiter(text: str) -> str:
    chars = "".join(dict.fromkeys(text.strip()))
    if any(ch in '@<>" \t,' or not ch.isprintable() for ch in chars) or len(chars) > 8:
        raise SettingError(f"bad recipient delimiter {text!r}: up to 8 characters, no '@' or space")
    return chars


def seconds(key: str, maximum: float) -> Callable[[str], str]:
    """The check for a time limit ``key``: seconds, more than 0 and at most ``maximum``,
    written back without a useless ``.0``."""

    def canonical(text: str) -> str:
        try:
            value = float(text.strip())
        except ValueError:
            value = math.nan
        if not 0 < value <= maximum:  # also refuses nan and inf
            raise SettingError(f"bad {key} {text!r}: seconds, more than 0 and at most {maximum:g}")
        return f"{value:g}"

    return canonical
