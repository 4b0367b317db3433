"""SMTP replies as typed values: ``CODE X.Y.Z text``, validated when set. Pure."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from smtpauth_milter.core.errors import SettingError

MAX_TEXT_LENGTH = 400
_REPLY_RE = re.compile(r"([45])(\d\d) ([45])\.(\d{1,3})\.(\d{1,3}) (\S.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: a 4xx/5xx code, an RFC 3463 status of the same class, and text."""

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"

    @property
    def temporary(self) -> bool:
        return self.code < 500

    @classmethod
    def parse(cls, value: str) -> Reply:
        text = value.strip()
        match = _REPLY_RE.fullmatch(text)
        if match is None:
            raise SettingError(
                f"bad reply {value!r}: expected 'CODE X.Y.Z text' with a 4xx or 5xx code"
            )
        code_class, rest, status_class, subject, detail, message = match.groups()
        if code_class != status_class:
            raise SettingError(
                f"bad reply {value!r}: status {status_class}.{subject}.{detail} "
                f"does not match the class of code {code_class}{rest}"
            )
        if len(message) > MAX_TEXT_LENGTH or any(
            unicodedata.category(ch).startswith("C") for ch in message
        ):
            raise SettingError(
                f"bad reply {value!r}: text must be printable and at most "
                f"{MAX_TEXT_LENGTH} characters"
            )
        return cls(int(code_class + rest), f"{status_class}.{int(subject)}.{int(detail)}", message)
