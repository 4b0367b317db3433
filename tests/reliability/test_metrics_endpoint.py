"""``run --metrics`` under idle connections, on a real milter process (issue 21, item 6).

500 connections that never send a request used to hold 500 threads of the
milter for as long as they stayed open.  Now the milter's thread count stays
where it was, a scrape still answers, nothing is logged as trouble, and
mail is still decided.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from smtpauth_milter.admin.milterproto.transport import free_tcp_port
from tests.harness.milter import MilterProcesses
from tests.support.verdicts import verdicts

from .test_metrics_and_log_format import AUTH_REPLY, scrape

IDLE = 500


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no thread count for {pid}")


def _decided(socket_spec: str) -> list[str]:
    return verdicts(socket_spec, sender="<alice@example.com>", rcpts=["<x@remote.test>"])


def _milter_child(parent: int) -> int:
    """The supervisor's one child: the process that serves mail and metrics."""
    deadline = time.monotonic() + 5
    while True:
        children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        if len(children) == 1:
            return int(children[0])
        assert time.monotonic() < deadline, f"children of {parent}: {children}"
        time.sleep(0.02)


def test_500_idle_connections_hold_no_threads_and_a_scrape_answers(
    milters: MilterProcesses, store_url: str
) -> None:
    port = free_tcp_port()
    milter = milters.start(store_url, "--metrics", f":{port}", ready="loaded")
    # One session and one scrape first: every thread the serving milter keeps is there.
    assert _decided(milter.socket) == [AUTH_REPLY]
    assert scrape(port)["smtpauth_milter_sessions_total"] == 1  # `:PORT` is on loopback
    child = _milter_child(milter.pid)
    before = _threads(child)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(IDLE)]
    try:
        samples = scrape(port)  # served after every idle connection was accepted
        assert samples["smtpauth_milter_restarts_total"] == 0
        assert _threads(child) <= before + 1, f"{before} threads before, {_threads(child)} now"
        assert _decided(milter.socket) == [AUTH_REPLY]
        assert scrape(port)["smtpauth_milter_sessions_total"] == 2
    finally:
        for sock in idle:
            sock.close()
    assert milter.alive
    assert milter.trouble() == []


def test_metrics_without_a_host_listen_on_loopback_only(
    milters: MilterProcesses, store_url: str
) -> None:
    port = free_tcp_port()
    milters.start(store_url, "--metrics", f":{port}")
    listening = _listening_on(port)
    assert listening == {"127.0.0.1"}, listening


def _listening_on(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found
