"""Fixtures of the unit tests."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from smtpauth_milter.daemon.logsinks import StreamSink
from smtpauth_milter.daemon.logwriter import LineHandler


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger(f"test-logwriter-{time.monotonic_ns()}")
    log.propagate = False
    log.setLevel(logging.INFO)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
        if isinstance(handler, LineHandler) and isinstance(handler.sink, StreamSink):
            handler.sink.stream.close()  # the sink never closes its stream (stderr)
