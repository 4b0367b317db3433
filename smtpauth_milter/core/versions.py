"""Release versions of smtpauth-milter, compared the way PEP 440 orders them.

Only the forms this project uses: ``1.2``, ``1.2.3``, ``1.2.3rc1`` (also ``a``
and ``b``) and ``1.2.3.dev4``, optionally both (``1.2.3rc1.dev4``).  A
development release comes before its pre-releases, which come before the
release itself: ``0.2.0.dev0 < 0.2.0a1 < 0.2.0rc1 < 0.2.0``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_VERSION = re.compile(r"(\d+(?:\.\d+)*)(?:(a|b|rc)(\d+))?(?:\.dev(\d+))?")
_PRE_RANK = {"a": 0, "b": 1, "rc": 2}
_FINAL = 3


@dataclass(frozen=True, order=True)
class Version:
    """A parsed version; compare with ``<``, ``<=``, ``==``."""

    release: tuple[int, ...]
    pre: tuple[int, int]
    dev: tuple[int, int]
    text: str = field(compare=False)

    @classmethod
    def parse(cls, text: str) -> Version:
        match = _VERSION.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"bad version {text!r}: expected e.g. 0.2.0, 0.2.0rc1, 0.2.0.dev0")
        numbers = [int(part) for part in match[1].split(".")]
        while len(numbers) > 1 and numbers[-1] == 0:  # 1.0 == 1.0.0
            numbers.pop()
        if match[2] is not None:
            pre = (_PRE_RANK[match[2]], int(match[3]))
        else:
            pre = (-1, 0) if match[4] is not None else (_FINAL, 0)
        dev = (0, int(match[4])) if match[4] is not None else (1, 0)
        return cls(tuple(numbers), pre, dev, text.strip())

    def __str__(self) -> str:
        return self.text
