"""Shared by the log handler tests: a file handler and its lines (the ``logger`` fixture
is in conftest.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from smtpauth_milter.daemon.logsetup import OneLineFormatter
from smtpauth_milter.daemon.logsinks import StreamSink
from smtpauth_milter.daemon.logwriter import LineHandler

DEADLINE = 10.0  # generous: the writer needs the GIL on a busy shared machine


def file_handler(path: Path, logger: logging.Logger) -> LineHandler:
    handler = LineHandler(StreamSink(path.open("a", encoding="utf-8")))
    handler.setFormatter(OneLineFormatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    return handler


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def wait_for_lines(path: Path, count: int) -> list[str]:
    deadline = time.monotonic() + DEADLINE
    while len(found := lines(path)) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} lines after {DEADLINE}s"
        time.sleep(0.01)
    return found
