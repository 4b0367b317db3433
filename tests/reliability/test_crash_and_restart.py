"""A milter that dies fails closed, the supervisor restarts it at once, and a
restart recovers.

libmilter (Debian's libmilter1.0.1) reads past the end of a macro packet whose
strings do not come in name/value pairs and dies with SIGSEGV.  No MTA sends
such a packet; any peer that can write to the milter socket can, which is why
the socket is 0660 for the MTA's group (or loopback only).  What matters here:
no message goes through while it happens, the supervisor (``run``'s default
auto-restart) has a new milter answering within a second, and it gives up
(exit 1, for systemd to take over) when crashes come too fast.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.admin.milterproto.transport import free_tcp_port
from smtpauth_milter.admin.milterproto.wire import SMFIC_MACRO, SMFIC_MAIL, SMFIC_RCPT
from tests.harness.milter import MilterProcess, ours
from tests.support.libmilter_crash import crash_milter
from tests.support.milterclient import MilterClient

RESTART_LIMIT = 1.0  # seconds from a crash until a session is decided again


@pytest.fixture
def store_url(store_url: str) -> str:
    """The reliability tests' store (conftest.py), with require-sender-match on too."""
    assert run_cli(["--db", store_url, "settings", "set", "require-sender-match", "on"]) == 0
    return store_url


def _client(milter: MilterProcess) -> MilterClient:
    client = MilterClient(milter.socket, timeout=5)
    assert client._sock is not None
    client._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def _verdict(milter: MilterProcess, login: str | None) -> tuple[str, int | None]:
    with _client(milter) as client:
        result = client.run_session(
            sender="alice@example.com", rcpts=["bob@evil.test"], login=login
        )
    return result.rcpts[0].kind, result.rcpts[0].code


def _malformed_session(milter: MilterProcess) -> str:
    """MAIL with macros {auth_authen}=bob@evil.test plus a dangling name; returns the outcome."""
    try:
        with _client(milter) as client:
            client.negotiate()
            client.connect("client.test", "4", 40000, "203.0.113.9")
            client.send_raw(SMFIC_MACRO, SMFIC_MAIL + b"{auth_authen}\0bob@evil.test\0dangling\0")
            client.send_raw(SMFIC_MAIL, b"<alice@example.com>\0")
            mail = client.read_reply()
            if mail.kind != "continue":
                return f"mail-{mail.kind}-{mail.code}"
            client.send_raw(SMFIC_RCPT, b"<bob@evil.test>\0")
            rcpt = client.read_reply()
            return f"rcpt-{rcpt.kind}-{rcpt.code}"
    except (ConnectionError, OSError):
        return "closed"


@pytest.fixture
def milter(store_url: str, tmp_path: Path) -> Iterator[MilterProcess]:
    milter = ours(store_url, tmp_path / "milter.log", graceful_stop=False)
    with milter.start(ready="loaded") as proc:
        yield proc


@pytest.fixture
def unsupervised(store_url: str, tmp_path: Path) -> Iterator[MilterProcess]:
    args = ["--no-auto-restart"]
    milter = ours(store_url, tmp_path / "milter.log", *args, graceful_stop=False)
    with milter.start(ready="loaded") as proc:
        yield proc


def _decided_after(milter: MilterProcess) -> float:
    """Seconds until a full session gets its verdict (the new child serves the same socket)."""
    start = time.monotonic()
    assert _verdict(milter, None) == ("replycode", 530)
    return time.monotonic() - start


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"no {name} in the metrics")


def test_the_supervisor_restarts_a_crashed_milter_within_a_second(
    store_url: str, tmp_path: Path
) -> None:
    port = free_tcp_port()
    args = ["--metrics", f"127.0.0.1:{port}"]
    milter = ours(store_url, tmp_path / "milter.log", *args)
    with milter.start(ready="loaded"):
        parent = milter.pid
        for crash in range(1, 6):
            crash_milter(milter.socket)
            took = _decided_after(milter)
            assert took < RESTART_LIMIT, f"crash {crash}: decided again after {took:.2f}s"
            assert _verdict(milter, "alice@example.com") == ("continue", None)
            assert milter.alive and milter.pid == parent
        milter.wait_for_log("signal=SIGSEGV action=restart", count=5)
        assert _metric(port, "smtpauth_milter_restarts_total") == 5
        assert milter.stop() == 0


def test_the_supervisor_gives_up_after_too_many_crashes(store_url: str, tmp_path: Path) -> None:
    milter = ours(store_url, tmp_path / "milter.log", graceful_stop=False)
    with milter.start(ready="loaded"):
        for _ in range(11):  # 10 restarts within 60 s are allowed, the 11th crash is one too many
            if not milter.alive:
                break
            crash_milter(milter.socket)
            if milter.alive:
                with contextlib.suppress(OSError, ConnectionError):
                    _verdict(milter, None)  # wait for the new child
        assert milter.wait_exit(10) == 1
        assert "giving up: more than 10 restarts in 60s" in milter.log_text()
        with pytest.raises(ConnectionRefusedError):
            _verdict(milter, None)


def test_without_auto_restart_a_crash_stops_the_milter(unsupervised: MilterProcess) -> None:
    crash_milter(unsupervised.socket)
    assert unsupervised.wait_exit(5) == -signal.SIGSEGV


def test_malformed_macro_packets_fail_closed_even_when_libmilter_crashes(
    unsupervised: MilterProcess, store_url: str, tmp_path: Path
) -> None:
    milter = unsupervised
    outcomes = set()
    for _ in range(200):
        outcomes.add(_malformed_session(milter))
        if not milter.alive:
            break
    # Each session was refused (bob does not own alice's address) or the connection
    # dropped (the MTA then answers with milter_default_action = tempfail): never continue.
    assert outcomes <= {"rcpt-replycode-553", "closed"}, outcomes
    if not milter.alive:
        assert milter.wait_exit(5) == -signal.SIGSEGV
    restarted = ours(store_url, tmp_path / "restarted.log", graceful_stop=False)
    with restarted.start(ready="loaded"):
        assert _verdict(restarted, None) == ("replycode", 530)
        assert _verdict(restarted, "alice@example.com") == ("continue", None)


def test_kill_9_refuses_connections_and_a_restart_decides_again(
    milter: MilterProcess, store_url: str, tmp_path: Path
) -> None:
    assert _verdict(milter, None) == ("replycode", 530)
    milter.kill()  # the supervisor: its milter child dies with it

    def refused() -> bool:
        try:
            _verdict(milter, None)
        except ConnectionRefusedError:
            return True
        except OSError:  # accepted into the backlog of a dying process: try again
            return False
        return False

    deadline = time.monotonic() + 2.0
    while not refused():
        assert time.monotonic() < deadline, "the milter child outlived its killed supervisor"
        time.sleep(0.02)
    restarted = ours(
        store_url, tmp_path / "restarted.log", socket=milter.socket, graceful_stop=False
    )
    with restarted.start(ready="loaded"):
        assert _verdict(restarted, None) == ("replycode", 530)
        assert _verdict(restarted, "alice@example.com") == ("continue", None)
