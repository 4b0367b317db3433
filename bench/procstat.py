"""CPU time and memory of a process, from /proc (Linux).

``smtpauth-milter run`` serves from a forked child under its supervising parent
(auto-restart, the default): CPU is counted for the parent and its children, and
memory is the serving process's (the child, when there is one).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """The live child processes of ``pid`` (of any of its threads)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def serving(pid: int) -> int:
    """The process that serves: ``pid``'s child when it has one (the milter under its
    supervisor), else ``pid`` itself."""
    kids = children(pid)
    return kids[-1] if kids else pid


def _own_cpu(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of ``pid`` and of its live children so far."""
    total = _own_cpu(pid)
    for child in children(pid):
        with contextlib.suppress(OSError):
            total += _own_cpu(child)
    return total


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak since start or since ``reset_peak``), in KiB, of the
    serving process."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{serving(pid)}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def reset_peak(pid: int) -> None:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/PID/clear_refs``, Linux >= 4.0)."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{serving(pid)}/clear_refs").write_text("5")
