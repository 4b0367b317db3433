"""A milter that dies fails closed, and a restart recovers.

libmilter (Debian's libmilter1.0.1) reads past the end of a macro packet whose
strings do not come in name/value pairs and can die with SIGSEGV.  No MTA
sends such a packet; only a peer that can write to the milter socket can,
which is why the socket is 0660 for the MTA's group (or loopback only).  What
matters here: no message goes through while it happens, and a restart (what
systemd's Restart=always does) decides again at once.
"""

from __future__ import annotations

import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.admin.milterproto.wire import SMFIC_MACRO, SMFIC_MAIL, SMFIC_RCPT
from tests.reliability.proc import MilterProcess
from tests.support.milterclient import MilterClient


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    for args in (
        ["db", "init"],
        ["domain", "add", "example.com"],
        ["settings", "set", "require-auth-local", "on"],
        ["settings", "set", "require-sender-match", "on"],
    ):
        assert run_cli(["--db", url, *args]) == 0
    return url


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
    with MilterProcess(store_url, tmp_path, graceful_stop=False) as proc:
        yield proc


def test_malformed_macro_packets_fail_closed_even_when_libmilter_crashes(
    milter: MilterProcess, store_url: str, tmp_path: Path
) -> None:
    outcomes = set()
    for _ in range(200):
        outcomes.add(_malformed_session(milter))
        if not milter.alive():
            break
    # Each session was refused (bob does not own alice's address) or the connection
    # dropped (the MTA then answers with milter_default_action = tempfail): never continue.
    assert outcomes <= {"rcpt-replycode-553", "closed"}, outcomes
    if not milter.alive():
        assert milter.wait_exit(5) == -signal.SIGSEGV
    with MilterProcess(store_url, tmp_path, graceful_stop=False) as restarted:
        assert _verdict(restarted, None) == ("replycode", 530)
        assert _verdict(restarted, "alice@example.com") == ("continue", None)


def test_kill_9_refuses_connections_and_a_restart_decides_again(
    milter: MilterProcess, store_url: str, tmp_path: Path
) -> None:
    assert _verdict(milter, None) == ("replycode", 530)
    milter.kill()
    with pytest.raises(ConnectionRefusedError):
        _verdict(milter, None)
    restarted = MilterProcess(store_url, tmp_path, socket_spec=milter.socket, graceful_stop=False)
    with restarted:
        assert _verdict(restarted, None) == ("replycode", 530)
        assert _verdict(restarted, "alice@example.com") == ("continue", None)
