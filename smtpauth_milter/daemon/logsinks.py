"""Where the log writer's finished lines go: a text stream, or the local syslog socket.

A sink frames a line in the thread that logged it (:meth:`Sink.frame`: cheap,
no lock) and writes a batch of framed lines from the writer thread
(:meth:`Sink.write`); see :mod:`smtpauth_milter.daemon.logwriter`.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
from collections.abc import Sequence
from typing import Any, Protocol, TextIO

Line = str | bytes  # what a sink frames and writes


class Sink(Protocol):
    """Where finished lines go: ``frame`` in the caller's thread, ``write`` in the writer."""

    def frame(self, text: str, levelno: int) -> str | bytes: ...

    def write(self, items: Sequence[str | bytes]) -> None: ...

    def close(self) -> None: ...


class StreamSink:
    """Lines to a text stream (stderr, or a file for the benchmarks): one write per batch."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def frame(self, text: str, levelno: int) -> str:
        return text + "\n"

    def write(self, items: Sequence[str | bytes]) -> None:
        self.stream.write("".join(str(item) for item in items))
        self.stream.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.stream.flush()


class SyslogSink:
    """One datagram per line to the local syslog socket, as ``SysLogHandler`` sends it."""

    def __init__(self, handler: logging.handlers.SysLogHandler) -> None:
        # It owns the socket and its reconnect logic (attributes typeshed does not list).
        self._handler: Any = handler
        self._prefix: dict[int, str] = {}  # "<priority>" per level number

    def frame(self, text: str, levelno: int) -> bytes:
        prefix = self._prefix.get(levelno)
        if prefix is None:
            handler = self._handler
            priority = handler.mapPriority(logging.getLevelName(levelno))
            code = handler.encodePriority(handler.facility, priority)
            prefix = self._prefix[levelno] = f"<{code}>"
        return (prefix + text + "\0").encode("utf-8")

    def write(self, items: Sequence[str | bytes]) -> None:
        handler = self._handler
        for item in items:
            data = item if isinstance(item, bytes) else item.encode("utf-8")
            try:
                handler.socket.send(data)
            except OSError:  # syslogd restarted: reconnect once, as SysLogHandler does
                handler.socket.close()
                handler._connect_unixsocket(handler.address)
                handler.socket.send(data)

    def close(self) -> None:
        self._handler.close()
