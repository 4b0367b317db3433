"""A milter that dies fails closed, the supervisor restarts it at once, and a
restart recovers.

libmilter (Debian's libmilter1.0.1) reads past the end of a macro packet whose
strings do not come in name/value pairs and dies with SIGSEGV.  No MTA sends
such a packet; any peer that can write to the milter socket can, which is why
the socket is 0660 for the MTA's group (or loopback only).  What matters here:
no message goes through while it happens, the supervisor (``run``'s default
auto-restart) has a new milter answering within a second, and when crashes
come too fast it backs off (up to a second between restarts) but never leaves
the socket dead.
"""

from __future__ import annotations

import re
import signal
import socket
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.admin.milterproto.transport import free_tcp_port
from smtpauth_milter.admin.milterproto.wire import SMFIC_MACRO, SMFIC_MAIL, SMFIC_RCPT
from tests.harness.milter import MilterProcess, ours
from tests.support.libmilter_crash import crash_milter, send_crash_packets
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


def test_past_the_restart_budget_the_supervisor_backs_off_and_keeps_serving(
    store_url: str, tmp_path: Path
) -> None:
    """10 restarts within 60 s are immediate; the next ones wait 0.05 s, doubling up
    to 1 s: logged, in the metrics, and the socket keeps answering (it used to exit 1)."""
    port = free_tcp_port()
    milter = ours(store_url, tmp_path / "milter.log", "--metrics", f"127.0.0.1:{port}")
    with milter.start(ready="loaded"):
        parent = milter.pid
        for crash in range(1, 17):
            crash_milter(milter.socket)
            assert _verdict(milter, None) == ("replycode", 530), f"after crash {crash}"
        assert milter.alive and milter.pid == parent
        reason = 'reason="more than 10 restarts in 60s: backing off"'
        for delay in ("0.050", "0.100", "0.200", "0.400", "0.800", "1.000"):
            milter.wait_for_log(f"action=restart delay={delay} {reason}", timeout=2)
        assert milter.log_text().count("action=restart") == 16
        assert _metric(port, "smtpauth_milter_restarts_total") == 16
        assert _metric(port, "smtpauth_milter_restarts_delayed_total") == 6
        assert _metric(port, "smtpauth_milter_restart_delay_seconds") == 1.0
        assert "giving up" not in milter.log_text()
        assert milter.stop() == 0


# The real supervisor with its back-off scaled down 100 times (the budget, the
# doubling and everything else as shipped): 200 crashes at up to 1 s apart would
# take minutes.
FAST_BACKOFF = [
    sys.executable,
    "-c",
    "import sys; import smtpauth_milter.daemon.supervisor as s;"
    " s.FIRST_DELAY, s.MAX_DELAY = 0.0005, 0.01;"
    " from smtpauth_milter.admin.cli import main; main(sys.argv[1:])",
]


def test_200_malformed_packets_in_a_row_never_leave_the_socket_dead(
    store_url: str, tmp_path: Path
) -> None:
    """Each crash is followed by a session: it gets its verdict (the new child serves
    the connection that waited in the socket's queue), never a continue; at the end
    the same supervisor still answers, having restarted the milter 200 times."""
    milter = ours(store_url, tmp_path / "milter.log", command=FAST_BACKOFF)
    with milter.start(ready="loaded"):
        parent = milter.pid
        outcomes: Counter[tuple[str, int | None]] = Counter()
        crashes = 0
        while crashes < 200:
            if send_crash_packets(milter.socket):
                crashes += 1
            login = "alice@example.com" if crashes % 2 else None
            outcomes[_verdict(milter, login)] += 1
        assert set(outcomes) <= {("replycode", 530), ("continue", None)}, outcomes
        assert outcomes[("replycode", 530)] >= 100 and outcomes[("continue", None)] >= 100
        assert milter.alive and milter.pid == parent
        milter.wait_for_log("signal=SIGSEGV action=restart", count=200)
        assert milter.log_text().count("backing off") == 190
        # the waits grow to the cap and stay there, however many crashes follow (a wall
        # time would measure the machine's load, not the supervisor)
        delays = [float(d) for d in re.findall(r" delay=([0-9.]+)", milter.log_text())]
        assert len(delays) == 190 and max(delays) == 0.01, delays
        assert _verdict(milter, None) == ("replycode", 530)
        assert _verdict(milter, "alice@example.com") == ("continue", None)


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


def test_the_systemd_unit_start_limit_cannot_end_the_restarts() -> None:
    """Restart=always with systemd's default start limit (5 starts in 10 s) would stop
    restarting a unit that keeps failing: StartLimitIntervalSec=0 in [Unit] turns it off."""
    unit = Path(__file__).resolve().parents[2] / "contrib" / "systemd" / "smtpauth-milter.service"
    section, keys = "", set()
    for line in unit.read_text().splitlines():
        if line.startswith("["):
            section = line
        elif "=" in line and not line.startswith("#"):
            keys.add((section, line.replace(" ", "")))
    assert ("[Unit]", "StartLimitIntervalSec=0") in keys
    assert ("[Service]", "Restart=always") in keys
    assert not any(key.startswith("StartLimitBurst") for _, key in keys)
