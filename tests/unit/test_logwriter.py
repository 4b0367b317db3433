"""The daemon's log handler: lines made by the caller, written by one thread, none lost."""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from smtpauth_milter.core import logfmt
from smtpauth_milter.daemon.logsetup import (
    OneLineFormatter,
    setup_logging,
    writer_while_serving,
)
from smtpauth_milter.daemon.logsinks import StreamSink, SyslogSink
from smtpauth_milter.daemon.logwriter import LineHandler

from .logsupport import DEADLINE, file_handler, lines, wait_for_lines


def test_every_line_once_in_each_threads_order_and_all_written_at_stop(
    tmp_path: Path, logger: logging.Logger
) -> None:
    path = tmp_path / "log"
    handler = file_handler(path, logger)
    threads, per_thread = 8, 400

    def talk(n: int) -> None:
        for i in range(per_thread):
            fields = {"thread": str(n), "seq": str(i)}
            if i % 2:  # a decision line: rendered later, by the writer
                handler.emit_fields(logging.INFO, dict, fields)
            else:  # any other line: rendered here
                logger.info("%s", logfmt.Fields(fields))

    with handler.writing():
        workers = [threading.Thread(target=talk, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    # writing() has returned: everything is on disk, nothing is left for later
    written = lines(path)
    assert len(written) == threads * per_thread
    seen: dict[str, list[int]] = {}
    for line in written:
        level, thread, seq = line.split(" ")
        assert level == "INFO"
        seen.setdefault(thread.removeprefix("thread="), []).append(int(seq.removeprefix("seq=")))
    assert seen == {str(n): list(range(per_thread)) for n in range(threads)}


def test_while_serving_a_line_is_written_soon_after_it_is_made(
    tmp_path: Path, logger: logging.Logger
) -> None:
    path = tmp_path / "log"
    handler = file_handler(path, logger)
    with handler.writing():
        logger.warning("%s", logfmt.Fields({"event": "first"}))
        assert wait_for_lines(path, 1) == ["WARNING event=first"]
        logger.info("%s", logfmt.Fields({"event": "second"}))
        assert wait_for_lines(path, 2)[1] == "INFO event=second"


def test_outside_the_writer_a_line_is_written_before_the_call_returns(
    tmp_path: Path, logger: logging.Logger
) -> None:
    path = tmp_path / "log"
    handler = file_handler(path, logger)
    logger.info("%s", logfmt.Fields({"event": "start"}))
    assert lines(path) == ["INFO event=start"]
    with handler.writing():
        logger.info("%s", logfmt.Fields({"event": "serving"}))
    logger.info("%s", logfmt.Fields({"event": "stop"}))
    assert lines(path) == ["INFO event=start", "INFO event=serving", "INFO event=stop"]


def test_close_writes_what_is_still_queued(tmp_path: Path, logger: logging.Logger) -> None:
    """logging.shutdown() (at exit) closes the handler: queued lines are not lost."""
    path = tmp_path / "log"
    handler = file_handler(path, logger)
    handler.start()
    for i in range(1000):
        logger.info("%s", logfmt.Fields({"seq": str(i)}))
    handler.close()
    assert lines(path) == [f"INFO seq={i}" for i in range(1000)]


def test_flush_waits_for_the_lines_queued_before_it(tmp_path: Path, logger: logging.Logger) -> None:
    path = tmp_path / "log"
    handler = file_handler(path, logger)
    with handler.writing():
        for i in range(200):
            logger.info("%s", logfmt.Fields({"seq": str(i)}))
        handler.flush()
        assert len(lines(path)) == 200


def test_a_hostile_value_stays_inside_its_line_through_the_writer(
    tmp_path: Path, logger: logging.Logger
) -> None:
    path = tmp_path / "log"
    handler = file_handler(path, logger)
    forged = "x\nINFO action=continue rule=trusted-network\u2028\r\x00"
    with handler.writing():
        logger.info("%s", logfmt.Fields({"from": forged, "rcpt": "<b@x.test>"}))
        logger.info("plain text with a newline\nINFO forged=1")
    written = lines(path)
    assert len(written) == 2, written
    assert written[0].endswith(" rcpt=<b@x.test>") and "\\n" in written[0]
    assert written[1] == "INFO plain text with a newline\\nINFO forged=1"


def test_a_failed_write_loses_that_batch_not_the_writer(
    logger: logging.Logger, capsys: pytest.CaptureFixture[str]
) -> None:
    """/dev/full: every write fails with ENOSPC; the writer reports it and goes on."""
    full = open("/dev/full", "w", encoding="utf-8")  # noqa: SIM115 -- closed below
    handler = LineHandler(StreamSink(full))
    logger.addHandler(handler)
    with handler.writing():
        logger.info("%s", logfmt.Fields({"event": "lost"}))
        handler.flush()
        assert handler._writer is not None and handler._writer.is_alive()
        logger.info("%s", logfmt.Fields({"event": "lost too"}))
        handler.flush()
    logger.removeHandler(handler)
    handler.close()
    with contextlib.suppress(OSError):  # what is still buffered cannot be written either
        full.close()
    assert "No space left on device" in capsys.readouterr().err


def test_syslog_gets_one_datagram_per_line_with_its_priority(
    tmp_path: Path, logger: logging.Logger
) -> None:
    path = str(tmp_path / "log.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(path)
    server.settimeout(DEADLINE)
    try:
        facility = logging.handlers.SysLogHandler.LOG_MAIL
        handler = LineHandler(SyslogSink(logging.handlers.SysLogHandler(path, facility)))
        handler.setFormatter(OneLineFormatter("smtpauth-milter[%(process)d]: %(message)s"))
        logger.addHandler(handler)
        with handler.writing():
            logger.info("%s", logfmt.Fields({"action": "continue"}))
            logger.warning("%s", logfmt.Fields({"action": "reject"}))
        got = [server.recv(65536) for _ in range(2)]
    finally:
        server.close()
    tag = f"smtpauth-milter[{os.getpid()}]: ".encode()
    # <facility * 8 + severity>: mail (2), info (6) and warning (4)
    assert got == [b"<22>" + tag + b"action=continue\0", b"<20>" + tag + b"action=reject\0"]


def test_a_forked_child_writes_its_lines_itself(tmp_path: Path, logger: logging.Logger) -> None:
    """The writer thread does not exist in a child: the child writes at once."""
    path = tmp_path / "log"
    handler = file_handler(path, logger)
    with handler.writing():
        logger.info("%s", logfmt.Fields({"who": "parent", "when": "before"}))
        handler.flush()
        pid = os.fork()
        if pid == 0:  # pragma: no cover -- the child leaves with os._exit
            logger.info("%s", logfmt.Fields({"who": "child"}))
            os._exit(0 if lines(path)[-1] == "INFO who=child" else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        logger.info("%s", logfmt.Fields({"who": "parent", "when": "after"}))
    assert lines(path) == [
        "INFO who=parent when=before",
        "INFO who=child",
        "INFO who=parent when=after",
    ]


class StuckSink(StreamSink):
    """A log that stops taking lines (a pipe nobody reads) until ``release`` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.open("a", encoding="utf-8"))
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, items: Sequence[str | bytes]) -> None:
        self.entered.set()
        assert self.release.wait(DEADLINE)
        super().write(items)


def test_a_stuck_log_keeps_a_bounded_queue_and_says_how_many_lines_it_lost(
    tmp_path: Path, logger: logging.Logger
) -> None:
    path = tmp_path / "log"
    sink = StuckSink(path)
    handler = LineHandler(sink, max_queued=100)
    handler.setFormatter(OneLineFormatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    with handler.writing():
        logger.info("%s", logfmt.Fields({"seq": "first"}))
        assert sink.entered.wait(DEADLINE)  # the writer is stuck in its write
        for i in range(250):
            logger.info("%s", logfmt.Fields({"seq": str(i)}))
        sink.release.set()
    written = lines(path)
    assert written[:101] == ["INFO seq=first"] + [f"INFO seq={i}" for i in range(100)]
    assert written[101:] == ['ERROR event=log-lines-lost count=150 reason="log writer behind"']


def test_a_reload_of_the_log_settings_while_serving_keeps_every_line_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGHUP's reload calls setup_logging again while libmilter threads log: the new
    handler's writer runs at once and writes only after the old one has written all."""
    path = tmp_path / "log"
    with path.open("a", encoding="utf-8") as stream:
        monkeypatch.setattr("sys.stderr", stream)
        daemon = logging.getLogger("smtpauth_milter")
        saved = (list(daemon.handlers), daemon.level, daemon.propagate)
        for flag in ("logThreads", "logProcesses", "logMultiprocessing"):  # setup_logging's
            monkeypatch.setattr(logging, flag, getattr(logging, flag))
        try:
            setup_logging("info", syslog=False)
            stop = threading.Event()

            def talk(n: int) -> None:
                i = 0
                while not stop.is_set() or i < 50:
                    daemon.info("%s", logfmt.Fields({"thread": str(n), "seq": str(i)}))
                    i += 1

            with writer_while_serving():
                workers = [threading.Thread(target=talk, args=(n,)) for n in range(4)]
                for worker in workers:
                    worker.start()
                for level in ("info", "info", "info"):
                    setup_logging(level, syslog=False)  # as Reloader does
                    replaced = daemon.handlers[0]
                    assert isinstance(replaced, LineHandler) and replaced.running
                stop.set()
                for worker in workers:
                    worker.join()
            assert not any(isinstance(h, LineHandler) and h.running for h in daemon.handlers)
        finally:
            for handler in list(daemon.handlers):
                daemon.removeHandler(handler)
                handler.close()
            daemon.handlers[:], daemon.level, daemon.propagate = saved[0], saved[1], saved[2]
    seen: dict[str, list[int]] = {}
    for line in lines(path):
        fields = dict(pair.split("=", 1) for pair in line.split(" ")[3:])
        seen.setdefault(fields["thread"], []).append(int(fields["seq"]))
    assert sorted(seen) == ["0", "1", "2", "3"]
    for seqs in seen.values():
        assert seqs == list(range(len(seqs)))  # none lost, none out of order
