"""Driving a running milter as an MTA does, for tests: one session, each recipient's verdict.

Processes are started with :mod:`tests.harness.milter`; this module only talks to them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from tests.harness.waiting import wait_until
from tests.support.milterclient import MilterClient, Reply

CONTINUE = "continue"


def verdict_text(reply: Reply) -> str:
    """``continue``, or the SMTP reply a refusing milter gave (``530 5.7.0 ...``)."""
    if reply.continues:
        return CONTINUE
    return reply.message if reply.kind == "replycode" and reply.message else reply.kind


def open_client(socket_spec: str, timeout: float = 5.0) -> MilterClient:
    """A MilterClient (Nagle off on inet sockets, as an MTA's milter client has it)."""
    return MilterClient(socket_spec, timeout)


def verdicts(
    socket_spec: str,
    *,
    sender: str,
    rcpts: Sequence[str],
    login: str | None = None,
    client_addr: str = "203.0.113.9",
) -> list[str]:
    """One whole session; the verdict text of each recipient."""
    with open_client(socket_spec) as client:
        result = client.run_session(
            sender=sender, rcpts=rcpts, login=login, client_addr=client_addr
        )
    return [verdict_text(reply) for reply in result.rcpts]


def seconds_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``predicate`` until true; the seconds it took. TimeoutError after ``timeout``."""
    start = time.monotonic()
    wait_until(predicate, timeout, what)
    return time.monotonic() - start
