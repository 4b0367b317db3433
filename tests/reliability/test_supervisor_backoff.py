"""The supervisor's back-off on its own: a child that dies at once, every time.

A process runs the real :class:`Supervisor` with a small budget and short
delays; its child kills itself (SIGKILL) as soon as it starts.  The delays
double up to the cap and stay there, a reload (SIGHUP) during a back-off
reaches the next child, and a stop (SIGTERM) during a back-off ends the
supervisor at once with 0.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

SCRIPT = """
import logging, os, signal, socket, sys
from smtpauth_milter.daemon.supervisor import Supervisor
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()

def child(reloaded):
    os.write(1, f"child reloaded={reloaded}\\n".encode())  # one write: lines do not mix
    os.kill(os.getpid(), signal.SIGKILL)
    return 0

supervisor = Supervisor(child, listener.detach(), max_restarts=3, first_delay=0.05, max_delay=0.2)
sys.exit(supervisor.run())
"""


@pytest.fixture
def supervisor() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(5)
    assert process.stdout is not None
    process.stdout.close()


def _read_until(process: subprocess.Popen[str], pattern: str, timeout: float = 10) -> list[str]:
    """Lines up to and including the first that matches ``pattern``."""
    assert process.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        assert line, f"the supervisor exited ({process.poll()}):\n{''.join(lines)}"
        lines.append(line)
        if re.search(pattern, line):
            return lines
    raise AssertionError(f"no {pattern!r} within {timeout}s:\n{''.join(lines)}")


def test_delays_double_up_to_the_cap_and_a_reload_reaches_the_next_child(
    supervisor: subprocess.Popen[str],
) -> None:
    lines = _read_until(supervisor, r"delay=0\.200")
    lines += _read_until(supervisor, r"delay=0\.200")
    deaths = [line for line in lines if "event=child-died" in line]
    delays = [re.search(r"delay=(\S+)", line) for line in deaths]
    assert [d[1] if d else None for d in delays] == [
        None, None, None, "0.050", "0.100", "0.200", "0.200",
    ]  # fmt: skip
    assert all("signal=SIGKILL action=restart" in line for line in deaths), deaths
    assert 'reason="more than 3 restarts in 60s: backing off"' in deaths[-1]
    children = [line for line in lines if line.startswith("child")]
    assert set(children) == {"child reloaded=False\n"}, children
    supervisor.send_signal(signal.SIGHUP)  # most likely during a back-off: no child to tell
    _read_until(supervisor, r"^child reloaded=True$")


def test_a_stop_during_a_back_off_ends_the_supervisor_at_once(
    supervisor: subprocess.Popen[str],
) -> None:
    _read_until(supervisor, r"delay=0\.200")  # now waiting 0.2 s with no child
    stopped = time.monotonic()
    supervisor.send_signal(signal.SIGTERM)
    assert supervisor.wait(5) == 0
    assert time.monotonic() - stopped < 1.0
