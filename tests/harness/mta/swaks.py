"""One SMTP session with swaks, and its transcript parsed into replies."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from .common import LOOPBACK


class Reply(NamedTuple):
    code: int
    text: str  # all lines of the reply, without codes, joined with "\n"


class RcptReply(NamedTuple):
    rcpt: str
    code: int
    text: str


class Exchange(NamedTuple):
    command: str  # the line swaks sent ("" for the greeting)
    reply: Reply


SENT = re.compile(r"^ *(?:->|~>) (?P<line>.*)$")
RECEIVED = re.compile(r"^(?:<-|<~|<\*\*|<~\*) +(?P<code>\d{3})(?P<sep>[ -]?)(?P<text>.*)$")
RCPT_COMMAND = re.compile(r"^RCPT TO:\s*<(?P<rcpt>[^>]*)>", re.IGNORECASE)


def parse_swaks(transcript: str) -> list[Exchange]:
    """Pair each SMTP command swaks sent with the (possibly multi-line) reply it got."""
    exchanges: list[Exchange] = []
    command = ""
    lines: list[str] = []
    for raw in transcript.splitlines():
        if sent := SENT.match(raw):
            command, lines = sent["line"], []
            continue
        received = RECEIVED.match(raw)
        if received is None:
            continue
        lines.append(received["text"].strip())
        if received["sep"] != "-":
            exchanges.append(Exchange(command, Reply(int(received["code"]), "\n".join(lines))))
            lines = []
    return exchanges


@dataclass
class SwaksResult:
    transcript: str
    exit_code: int
    exchanges: list[Exchange]

    def _replies_to(self, verb: str) -> list[Exchange]:
        return [x for x in self.exchanges if x.command.upper().startswith(verb)]

    @property
    def auth(self) -> Reply | None:
        """The final reply to AUTH (after any 334 challenges), or None without AUTH."""
        started = False
        for exchange in self.exchanges:
            started = started or exchange.command.upper().startswith("AUTH")
            if started and exchange.reply.code != 334:
                return exchange.reply
        return None

    @property
    def mail(self) -> Reply | None:
        """The reply to MAIL FROM, or None if swaks never got that far."""
        found = self._replies_to("MAIL FROM")
        return found[0].reply if found else None

    @property
    def rcpts(self) -> list[RcptReply]:
        """One entry per RCPT TO that was sent, in order."""
        out = []
        for exchange in self._replies_to("RCPT TO"):
            match = RCPT_COMMAND.match(exchange.command)
            rcpt = match["rcpt"] if match else exchange.command
            out.append(RcptReply(rcpt, exchange.reply.code, exchange.reply.text))
        return out

    def rcpt(self, address: str) -> RcptReply:
        """The reply to ``RCPT TO:<address>``; AssertionError with the transcript if not sent."""
        for reply in self.rcpts:
            if reply.rcpt.lower() == address.lower():
                return reply
        raise AssertionError(f"no RCPT TO:<{address}> in the session:\n{self.transcript}")


def smtp(
    port: int,
    mail_from: str,
    rcpts: Sequence[str],
    user: str | None = None,
    password: str | None = None,
    mech: str = "PLAIN",
    host: str = LOOPBACK,
    timeout: float = 30.0,
) -> SwaksResult:
    """One SMTP session with swaks, up to and including the RCPTs, then QUIT.

    ``mail_from`` ``"<>"`` is the null sender. With ``user`` the session
    authenticates with ``mech`` (PLAIN or LOGIN) first.
    """
    argv = [
        "swaks", "--server", f"{host}:{port}", "--helo", "client.sandbox.test",
        "--from", mail_from, "--to", ",".join(rcpts),
        "--quit-after", "RCPT", "--timeout", "15",
    ]  # fmt: skip
    if user is not None:
        argv += ["--auth", mech, "--auth-user", user, "--auth-password", password or ""]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    transcript = done.stdout + done.stderr
    return SwaksResult(transcript, done.returncode, parse_swaks(transcript))


def deliver(
    port: int,
    mail_from: str,
    rcpts: Sequence[str],
    message: str,
    user: str | None = None,
    password: str | None = None,
    host: str = LOOPBACK,
) -> tuple[Reply, str]:
    """One whole message (``message`` is a file path) with swaks: the reply to the end of
    DATA and the transcript. With ``user`` the session authenticates with PLAIN first."""
    argv = [
        "swaks", "--server", f"{host}:{port}", "--helo", "client.sandbox.test",
        "--from", mail_from, "--to", ",".join(rcpts), "--data", f"@{message}", "--timeout", "15",
    ]  # fmt: skip
    if user is not None:
        argv += ["--auth", "PLAIN", "--auth-user", user, "--auth-password", password or ""]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    transcript = done.stdout + done.stderr
    for exchange in parse_swaks(transcript):
        if exchange.command.strip() == ".":
            return exchange.reply, transcript
    raise AssertionError(f"no reply to the end of DATA:\n{transcript}")
