"""Log set-up for the daemon: one line per record (logfmt or JSON), stderr or syslog.

Records are written by :class:`~smtpauth_milter.daemon.logwriter.LineHandler`:
formatted in the thread that logs, written by one writer thread while serving.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import re
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import ConfigError
from smtpauth_milter.daemon.logsinks import Sink, StreamSink, SyslogSink
from smtpauth_milter.daemon.logwriter import LineHandler

MILTER_NAME = "smtpauth-milter"

_RAW_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")
_TEMPLATE_KEY = re.compile(r"%\((\w+)\)")


def _escape_control(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch)
    return named or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


class OneLineFormatter(logging.Formatter):
    """Tracebacks and any stray newline or control character stay inside one line.

    Backslashes are left alone: logfmt values are already escaped, and escaping
    them twice would let a client's quoted value end early and forge a field.

    The date and time of a second are rendered once (``time.localtime`` and
    ``strftime`` per record cost more than the rest of the prefix); the text is
    the stdlib's ``asctime``.
    """

    def __init__(self, fmt: str | None = None) -> None:
        super().__init__(fmt)
        self._uses_time = super().usesTime()  # the stdlib searches the template per record
        self._second: tuple[int, str] = (-1, "")
        keys = set(_TEMPLATE_KEY.findall(self._fmt or ""))
        self._direct = keys <= {"asctime", "levelname", "message", "process"}

    @property
    def renders_fields(self) -> bool:
        """Whether :meth:`fields_line` can fill the template (time, level, process, message)."""
        return self._direct

    def usesTime(self) -> bool:
        return self._uses_time

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self._asctime(record.created, int(record.msecs))

    def _asctime(self, created: float, msecs: int) -> str:
        second = int(created)
        cached = self._second  # one tuple: threads may render at once
        if cached[0] != second:
            cached = (second, time.strftime(self.default_time_format, self.converter(second)))
            self._second = cached
        return f"{cached[1]},{msecs:03d}"  # the stdlib's default_msec_format

    def format(self, record: logging.LogRecord) -> str:
        fields = None if record.exc_info or record.stack_info else _fields_of(record)
        if fields is not None and self._direct:
            return self.fields_line(record.levelno, record.created, fields, record.process)
        return _RAW_CONTROL.sub(_escape_control, super().format(record))

    def fields_line(
        self,
        levelno: int,
        created: float,
        fields: Mapping[str, str | None],
        process: int | None = None,
    ) -> str:
        """The line of a :class:`logfmt.Fields` message (with or without a LogRecord),
        for a template that :attr:`renders_fields`.

        logfmt escapes every control character of a value, so no filter is needed.
        """
        values: dict[str, object] = {
            "message": logfmt.line(fields),
            "levelname": logging.getLevelName(levelno),
            "process": process,
        }
        if self._uses_time:
            values["asctime"] = self._asctime(created, _msecs(created))
        return self._fmt % values if self._fmt else str(values["message"])


class JsonFormatter(logging.Formatter):
    """One JSON object per line (``--log-format json``): the fields of a
    :class:`logfmt.Fields` message as keys, else the text under ``message``.

    ``ensure_ascii`` escapes every control and non-ASCII character, so a
    client's value can neither split a line nor forge a key.
    """

    def __init__(self, syslog_tag: bool = False) -> None:
        super().__init__()
        self._syslog_tag = syslog_tag

    def format(self, record: logging.LogRecord) -> str:
        traceback = self.formatException(record.exc_info) if record.exc_info else None
        fields = _fields_of(record) or {"message": record.getMessage()}
        return self._line(record.levelno, record.created, fields, record.process, traceback)

    renders_fields = True

    def fields_line(
        self,
        levelno: int,
        created: float,
        fields: Mapping[str, str | None],
        process: int | None = None,
    ) -> str:
        return self._line(levelno, created, fields, process, None)

    def _line(
        self,
        levelno: int,
        created: float,
        fields: Mapping[str, str | None],
        process: int | None,
        traceback: str | None,
    ) -> str:
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds"),
            "level": logging.getLevelName(levelno).lower(),
        }
        for key, val in fields.items():
            data.setdefault(key, None if val is None else logfmt.clip(val))
        if traceback is not None:
            data["traceback"] = traceback
        text = json.dumps(data, ensure_ascii=True)
        return f"{MILTER_NAME}[{process}]: {text}" if self._syslog_tag else text


def _fields_of(record: logging.LogRecord) -> Mapping[str, str | None] | None:
    """The fields of a ``Fields`` message (logged as msg or as the one ``%s`` argument);
    None for any other message."""
    message: object = record.msg
    if message == "%s" and isinstance(record.args, tuple) and len(record.args) == 1:
        message = record.args[0]
    return message.fields if isinstance(message, logfmt.Fields) else None


def _msecs(created: float) -> int:
    return int((created - int(created)) * 1000)  # as LogRecord computes msecs


def _formatter(log_format: str, template: str, syslog: bool) -> logging.Formatter:
    return JsonFormatter(syslog_tag=syslog) if log_format == "json" else OneLineFormatter(template)


def setup_logging(level: str, syslog: bool, log_format: str = "logfmt") -> LineHandler:
    """The daemon's logger; returns its handler (``handler.writing()`` while serving)."""
    sink: Sink
    if syslog:
        try:
            syslog_handler = logging.handlers.SysLogHandler(
                address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_MAIL
            )
        except OSError as exc:
            raise ConfigError(f"cannot log to syslog at /dev/log: {exc.strerror}") from exc
        sink = SyslogSink(syslog_handler)
        formatter = _formatter(log_format, f"{MILTER_NAME}[%(process)d]: %(message)s", syslog=True)
    else:
        sink = StreamSink(sys.stderr)
        formatter = _formatter(log_format, "%(asctime)s %(levelname)s %(message)s", syslog=False)
    # LogRecord fills these per record (a getpid syscall, a thread lookup) only for
    # formats that print them: the syslog tag carries the process id.
    logging.logThreads = False
    logging.logMultiprocessing = False
    logging.logProcesses = syslog
    handler = LineHandler(sink)
    handler.setFormatter(formatter)
    logger = logging.getLogger("smtpauth_milter")
    old = list(logger.handlers)
    running = next((h for h in old if isinstance(h, LineHandler) and h.running), None)
    if running is not None:  # a reload while serving: the new writer takes over in order
        handler.start(after=running)
    logger.handlers = [handler]  # one assignment: no record reaches both, or neither
    for previous in old:
        if previous is not running:  # the new writer closes that one once it has written all
            previous.close()
    logger.setLevel(level.upper())
    logger.propagate = False
    return handler


@contextlib.contextmanager
def writer_while_serving() -> Iterator[None]:
    """The daemon's log lines go through one writer thread inside this block, in the
    process that serves (the child under auto-restart: a thread does not survive a fork);
    all written when it ends."""
    logger = logging.getLogger("smtpauth_milter")
    handler = next((h for h in logger.handlers if isinstance(h, LineHandler)), None)
    if handler is not None:
        handler.start()
    try:
        yield
    finally:  # the handler in place now: a reload may have replaced the first one
        for current in logger.handlers:
            if isinstance(current, LineHandler):
                current.stop()
