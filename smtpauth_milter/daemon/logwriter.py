"""The log handler of the daemon: lines queued by the caller, written by one thread.

The stdlib handlers take one lock shared by every thread around format and
write, and write (and flush) once per record.  Under load every libmilter
thread queues on that lock while the holder waits in ``write()``.  Here a
record is formatted in the thread that logs it, with no shared lock; a
decision line (:meth:`LineHandler.emit_fields`) is not even formatted there:
its frozen parts are queued and the writer renders them in its batch, so a
libmilter thread holds the GIL as briefly as it can.  While the writer runs
(:meth:`LineHandler.writing`, the serving part of ``run``), lines go into a
queue and one thread writes whatever has gathered, in one ``write()`` to a
stream or one datagram per line to syslog (the sinks, daemon/logsinks.py).
Outside of it (start-up, a supervising parent, tests) a record is written at
once, under the handler's lock, like any stdlib handler.

Guarantees kept: one line per record in the order the records were made (a
session's callbacks run one after the other, so its lines stay in order); a
line is written at most ``LINGER`` seconds (plus the write itself) after it
was made; every queued line is written before :meth:`LineHandler.writing`
returns, and by ``close()`` (``logging.shutdown()``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol, cast

from smtpauth_milter.core import logfmt
from smtpauth_milter.daemon.logsinks import Line, Sink

# Seconds the writer waits after the first line, for more to share its wake-up and
# write.  Through Postfix, 50 ms instead of 5 cut what ours costs beyond the no-op
# milter from 0.065 to 0.040 ms of CPU per message (bench/README.md, issue 13):
# fewer wake-ups of this thread, fewer hand-overs of the GIL.
LINGER = 0.05
STOP_TIMEOUT = 5.0  # a stuck write (a full pipe) must not hang the stop for ever
# Lines waiting for the writer, at most: a log that stops taking lines (a stuck pipe,
# a stalled syslog) must not fill the memory. Beyond it lines are counted, not kept,
# and one event=log-lines-lost line says how many once the writer moves again.
MAX_QUEUED = 65536


class FieldsFormatter(Protocol):
    """A formatter that renders a :class:`logfmt.Fields` message without a LogRecord
    (when its ``renders_fields`` is true)."""

    def fields_line(
        self,
        levelno: int,
        created: float,
        fields: Mapping[str, str | None],
        process: int | None = None,
    ) -> str: ...


FieldsOf = Callable[..., Mapping[str, str | None]]


class Deferred:
    """A line to make later: ``fields_of(*args)`` rendered by the writer thread."""

    __slots__ = ("args", "created", "fields_of", "levelno")

    def __init__(self, levelno: int, created: float, fields_of: FieldsOf, args: tuple[Any, ...]):
        self.levelno, self.created, self.fields_of, self.args = levelno, created, fields_of, args


# in the queue: a line, one to render, a flush marker, or stop (None)
Item = Line | Deferred | threading.Event | None


class LineHandler(logging.Handler):
    """Format in the caller, no lock shared by callers, one writer thread (see the module)."""

    def __init__(self, sink: Sink, max_queued: int = MAX_QUEUED) -> None:
        super().__init__()
        self.sink = sink
        self._max_queued = max_queued
        self._lost = 0  # lines not queued because the writer was that far behind
        self._queue: queue.SimpleQueue[Item] | None = None
        self._writer: threading.Thread | None = None
        self.pid = os.getpid()  # for a syslog tag; a forked child sets its own
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _forget_writer(ref))

    # --- the caller's side -----------------------------------------------------

    def handle(self, record: logging.LogRecord) -> bool:
        """No handler lock: the line is made here and queued (or written at once)."""
        if self.filters and not self.filter(record):
            return False
        try:
            item = self.sink.frame(self.format(record), record.levelno)
        except Exception:
            self.handleError(record)
            return True
        self._put(item)
        return True

    def emit_fields(self, levelno: int, fields_of: FieldsOf, *args: Any) -> None:
        """What ``handle`` does for a record whose message is ``Fields(fields_of(*args))``,
        without making the LogRecord; only for a handler that :func:`direct_handler`
        returned.

        While the writer runs, ``fields_of(*args)`` is called and rendered there, in
        batches, so a libmilter thread holds the GIL for less time per recipient
        (bench/README.md, issue 13): ``fields_of`` must be pure and ``args`` must not
        change afterwards (the decision's frozen request and verdict, strings)."""
        deferred = Deferred(levelno, time.time(), fields_of, args)
        if self._queue is not None:
            self._put(deferred)
            return
        item = self._render(deferred)
        if item is not None:
            self._put(item)

    def _render(self, deferred: Deferred) -> Line | None:
        formatter = cast(FieldsFormatter, self.formatter)
        try:
            fields = deferred.fields_of(*deferred.args)
            text = formatter.fields_line(deferred.levelno, deferred.created, fields, self.pid)
            return self.sink.frame(text, deferred.levelno)
        except Exception:
            self.handleError(_lost([""]))
            return None

    def _lines(self, batch: Sequence[Item]) -> list[Line]:
        """The lines of ``batch``, in order: queued ones as they are, deferred ones rendered."""
        lines: list[Line] = []
        for item in batch:
            if isinstance(item, str | bytes):
                lines.append(item)
            elif isinstance(item, Deferred):
                line = self._render(item)
                if line is not None:
                    lines.append(line)
        return lines

    def _put(self, item: Line | Deferred) -> None:
        lines = self._queue
        if lines is None:  # no writer (or it stopped since the caller looked)
            self._write_now(self._lines([item]))
        elif lines.qsize() < self._max_queued:
            lines.put(item)
        else:
            self._lost += 1  # a lost update under a race only makes the count low

    def emit(self, record: logging.LogRecord) -> None:
        self.handle(record)

    def _write_now(self, items: Sequence[str | bytes]) -> None:
        assert self.lock is not None  # created by Handler.__init__
        with self.lock:
            try:
                self.sink.write(items)
            except Exception:
                self.handleError(_lost(items))

    # --- the writer ------------------------------------------------------------

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Lines go through the writer thread inside this block; all written at its end."""
        self.start()
        try:
            yield
        finally:
            self.stop()

    @property
    def running(self) -> bool:
        """Whether lines go through the writer thread now."""
        return self._queue is not None

    def start(self, after: LineHandler | None = None) -> None:
        """Start the writer; with ``after`` (the handler this one replaces, on a live
        reload of the log settings) it first writes everything ``after`` still holds,
        so no line overtakes one logged before it."""
        if self._writer is not None:
            return
        lines: queue.SimpleQueue[Item] = queue.SimpleQueue()
        self._writer = threading.Thread(
            target=self._run, args=(lines, after), name="log-writer", daemon=True
        )
        self._writer.start()
        self._queue = lines

    def stop(self) -> None:
        """Write what is queued and end the writer (bounded: a stuck write is left behind).

        Lines logged while it stops still reach the writer or, once it has gone,
        are written here: nothing is lost and nothing overtakes a queued line.
        Lines logged after it are written at once, by their caller.
        """
        writer, lines = self._writer, self._queue
        if writer is None or lines is None:
            return
        lines.put(None)
        writer.join(STOP_TIMEOUT)
        self._queue = None
        self._writer = None
        if not writer.is_alive():
            left = self._lines(_drain(lines, []))
            if left:
                self._write_now(left)

    def flush(self) -> None:
        """Wait (bounded) until every line queued so far is written."""
        lines = self._queue
        if lines is None:
            return
        done = threading.Event()
        lines.put(done)
        done.wait(STOP_TIMEOUT)

    def close(self) -> None:
        self.stop()
        self.sink.close()
        super().close()

    def _run(self, lines: queue.SimpleQueue[Item], after: LineHandler | None) -> None:
        if after is not None:
            after.close()
        while True:
            first = lines.get()
            if first is not None:
                time.sleep(LINGER)  # one write for every line made meanwhile
            batch = _drain(lines, [first])
            items = self._lines(batch)
            if self._lost:
                items.append(self._lost_line())
            if items:
                self._write_now(items)
            for item in batch:
                if isinstance(item, threading.Event):
                    item.set()
            if None in batch:
                return

    def _lost_line(self) -> Line:
        lost, self._lost = self._lost, 0
        fields = {"event": "log-lines-lost", "count": str(lost), "reason": "log writer behind"}
        record = logging.LogRecord(
            "smtpauth_milter", logging.ERROR, __file__, 0, "%s", (logfmt.Fields(fields),), None
        )
        return self.sink.frame(self.format(record), logging.ERROR)


def _drain(lines: queue.SimpleQueue[Item], batch: list[Item]) -> list[Item]:
    """``batch`` and whatever is queued now, in order, without waiting."""
    while True:
        try:
            batch.append(lines.get_nowait())
        except queue.Empty:
            return batch


def _forget_writer(ref: weakref.ref[LineHandler]) -> None:
    """In a forked child the writer thread does not exist: write at once there."""
    handler = ref()
    if handler is not None:
        handler._queue = None
        handler._writer = None
        handler.pid = os.getpid()


def direct_handler(logger: logging.Logger) -> LineHandler | None:
    """The one handler a record of ``logger`` reaches, when it is a LineHandler with a
    formatter that renders fields and nothing (filter, level, parent logger) could
    treat a LogRecord differently: then :meth:`LineHandler.emit_fields` gives the same
    line without one.  The caller checks ``logger.isEnabledFor`` first, as ``log()`` does.
    """
    handlers = logger.handlers
    if len(handlers) != 1 or logger.propagate or logger.filters:
        return None
    handler = handlers[0]
    if type(handler) is not LineHandler or handler.filters or handler.level:
        return None
    return handler if getattr(handler.formatter, "renders_fields", False) else None


def _lost(items: Sequence[str | bytes]) -> logging.LogRecord:
    """A record for ``handleError`` when a batch could not be written."""
    return logging.LogRecord(
        "smtpauth_milter", logging.ERROR, __file__, 0, "%d log lines lost", (len(items),), None
    )
