"""Read the milter's log file back: every line one line, every message clean logfmt."""

from __future__ import annotations

import re
from dataclasses import dataclass

HEAD = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<message>.*)"
)
PAIR = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)=("(?:[^"\\]|\\.)*"|[^\s"=]+)')
# Characters a log line may never carry raw: a client could split or forge a line.
FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
ACTIONS = {"continue", "reject", "tempfail", "would-reject", "would-tempfail"}
TRACEBACK = "\\nTraceback (most recent call last):"


@dataclass(frozen=True)
class LogLine:
    level: str
    fields: dict[str, str]
    raw: str


def parse_logfmt(message: str) -> list[tuple[str, str]]:
    """Every ``key=value`` of a message; raises ValueError unless the whole text is logfmt."""
    pairs: list[tuple[str, str]] = []
    pos = 0
    while pos < len(message):
        match = PAIR.match(message, pos)
        if match is None:
            raise ValueError(f"not logfmt at {pos}: {message[pos : pos + 60]!r}")
        pairs.append((match.group(1), match.group(2)))
        pos = match.end()
        if pos < len(message):
            if message[pos] != " ":
                raise ValueError(f"no space after a value at {pos}: {message!r}")
            pos += 1
    return pairs


def parse_line(raw: str) -> LogLine:
    """One log line; a traceback is allowed only escaped, after the logfmt part."""
    if FORBIDDEN.search(raw):
        raise ValueError(f"raw control character in a log line: {raw!r}")
    head = HEAD.fullmatch(raw)
    if head is None:
        raise ValueError(f"not a log line of the milter: {raw!r}")
    message = head.group("message")
    if TRACEBACK in message:
        message = message.split(TRACEBACK, 1)[0].rstrip(" ")
    pairs = parse_logfmt(message)
    keys = [key for key, _ in pairs]
    duplicated = {key for key in keys if keys.count(key) > 1}
    if duplicated:
        raise ValueError(f"key(s) {duplicated} more than once (a forged field?): {raw!r}")
    fields = dict(pairs)
    if "action" in fields and fields["action"] not in ACTIONS:
        raise ValueError(f"unknown action in {raw!r}")
    return LogLine(head.group("level"), fields, raw)


def parse_log(data: bytes) -> list[LogLine]:
    """The whole file: UTF-8, newline-terminated, every line parsed."""
    text = data.decode("utf-8")
    assert text == "" or text.endswith("\n"), "the last log line is unterminated"
    return [parse_line(line) for line in text.split("\n")[:-1]]
