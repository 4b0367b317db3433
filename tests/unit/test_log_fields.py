"""A decision line without a LogRecord: the same text, and only where nothing else would
see the record (the daemon's own handler)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from smtpauth_milter.core import logfmt
from smtpauth_milter.daemon.logsetup import JsonFormatter, OneLineFormatter
from smtpauth_milter.daemon.logwriter import direct_handler

from .logsupport import file_handler, lines


@pytest.mark.parametrize("created", [1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5])
def test_the_cached_time_is_the_stdlib_asctime(created: float) -> None:
    template = "%(asctime)s %(levelname)s %(message)s"
    ours, stdlib = OneLineFormatter(template), logging.Formatter(template)
    for when in (created, created + 0.0004, created + 1.0, created):
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "msg", (), None)
        record.created = when
        record.msecs = int((when - int(when)) * 1000) + 0.0
        assert ours.format(record) == stdlib.format(record)


HOSTILE_FIELDS = {
    "queue": None,
    "action": "reject",
    "from": '<a"b\\c\nd@x.test>',
    "login": "é\x1b[31m\u2028",
    "reply": "530 5.7.0 Authentication required",
}


@pytest.mark.parametrize(
    "formatter",
    [
        OneLineFormatter("%(asctime)s %(levelname)s %(message)s"),
        OneLineFormatter("smtpauth-milter[%(process)d]: %(message)s"),
        JsonFormatter(),
        JsonFormatter(syslog_tag=True),
    ],
)
@pytest.mark.parametrize("levelno", [logging.INFO, logging.WARNING])
def test_a_fields_line_without_a_record_is_the_records_line(
    formatter: logging.Formatter, levelno: int
) -> None:
    created = 1_700_000_123.4567
    record = logging.LogRecord(
        "smtpauth_milter", levelno, __file__, 1, "%s", (logfmt.Fields(HOSTILE_FIELDS),), None
    )
    record.created, record.msecs, record.process = created, 456.0, 4242
    direct = formatter.fields_line(levelno, created, HOSTILE_FIELDS, 4242)  # type: ignore[attr-defined]
    assert direct == formatter.format(record)
    assert "\n" not in direct and "\u2028" not in direct


def test_direct_handler_only_when_nothing_else_would_see_the_record(
    tmp_path: Path, logger: logging.Logger
) -> None:
    for other in list(logger.handlers):  # pytest's capture handlers, if any
        logger.removeHandler(other)
    assert direct_handler(logger) is None  # no handler at all
    handler = file_handler(tmp_path / "log", logger)
    assert direct_handler(logger) is handler
    logger.propagate = True  # a parent's handlers would see it too
    assert direct_handler(logger) is None
    logger.propagate = False
    handler.addFilter(lambda record: True)
    assert direct_handler(logger) is None
    handler.filters.clear()
    extra = logging.NullHandler()
    logger.addHandler(extra)
    assert direct_handler(logger) is None
    logger.removeHandler(extra)
    handler.setFormatter(logging.Formatter())  # cannot render fields without a record
    assert direct_handler(logger) is None
    handler.setFormatter(OneLineFormatter("%(name)s %(message)s"))  # nor this template
    assert direct_handler(logger) is None
    handler.setFormatter(JsonFormatter())
    assert direct_handler(logger) is handler


def test_emit_fields_writes_the_same_line_as_logging_a_record(
    tmp_path: Path, logger: logging.Logger
) -> None:
    path = tmp_path / "log"
    handler = file_handler(path, logger)
    with handler.writing():
        handler.emit_fields(logging.WARNING, dict, HOSTILE_FIELDS)
        logger.warning("%s", logfmt.Fields(HOSTILE_FIELDS))
    first, second = lines(path)
    assert first == second and first.startswith("WARNING queue=- action=reject ")
