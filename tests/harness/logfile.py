"""A growing log file that tests, benchmarks and the soak can read and wait on."""

from __future__ import annotations

import os
import re
from pathlib import Path

from .waiting import wait_until


class LogFile:
    """A log file written by another process; offsets (``mark``) select what came later."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def data(self, since: int = 0) -> bytes:
        try:
            with self.path.open("rb") as fh:
                fh.seek(since)
                return fh.read()
        except FileNotFoundError:
            return b""

    def text(self, since: int = 0) -> str:
        return self.data(since).decode("utf-8", "replace")

    def lines(self, since: int = 0) -> list[str]:
        """Whole lines only (a line still being written is left out); bytes must be UTF-8."""
        return self.data(since).decode("utf-8", errors="strict").split("\n")[:-1]

    def mark(self) -> int:
        """The current end of the log: pass it as ``since`` to only see later lines."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def truncate(self) -> None:
        """Empty the log (the writer appends, O_APPEND): keeps a long run's disk use bounded."""
        if self.path.exists():
            os.truncate(self.path, 0)

    def find(self, pattern: str | re.Pattern[str], since: int = 0) -> list[str]:
        regex = re.compile(pattern)
        return [line for line in self.text(since).splitlines() if regex.search(line)]

    def wait_for(
        self, pattern: str | re.Pattern[str], since: int = 0, timeout: float = 10.0
    ) -> str:
        """The first line after offset ``since`` matching ``pattern``, waiting up to ``timeout``."""

        def probe() -> str | None:
            lines = self.find(pattern, since)
            return lines[0] if lines else None

        try:
            return wait_until(probe, timeout, f"{pattern!r} in {self.path}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; log since mark:\n{self.tail(since)}") from None

    def tail(self, since: int = 0, lines: int = 30) -> str:
        return "\n".join(self.text(since).splitlines()[-lines:])
