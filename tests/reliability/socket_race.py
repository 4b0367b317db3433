"""Start ``run`` many times, fast, while the milter's user swaps its socket for a symlink.

    python -m tests.reliability.socket_race DIR SOCKET USER GROUP N auto|single

Each start is a fork of this (already warm) process calling the real
``daemon.server.run`` as root, with ``--user USER --group GROUP`` and the unix
socket SOCKET; it is SIGKILLed once it has dropped privileges (its /proc status
shows a non-root uid), or reaped when it exits by itself. A symlink left at the
socket's path is removed between starts, as the attacker would do to go again.
Prints one JSON line: how many starts dropped privileges and how many failed.
The attacker is another process (see the test); this one only starts.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import sys
import time
from pathlib import Path

from smtpauth_milter.daemon import server
from smtpauth_milter.daemon.config import RunConfig

DEADLINE = 5.0  # seconds for one start to drop privileges


def _uid(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])  # the effective uid
    return None


def _start(config: RunConfig) -> bool:
    """One start; True when it dropped privileges, False when it exited first."""
    pid = os.fork()
    if pid == 0:  # the milter: nothing of it may return into this loop
        code = 70
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
            code = server.run(config)
        finally:
            os._exit(code)
    end = time.monotonic() + DEADLINE
    dropped = False
    while time.monotonic() < end:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
        uid = _uid(pid)
        if uid not in (None, 0):
            dropped = True
            break
        time.sleep(0.0005)
    os.kill(pid, signal.SIGKILL)  # the supervisor takes its child with it (PDEATHSIG)
    os.waitpid(pid, 0)
    return dropped


def main(argv: list[str]) -> int:
    _, db_dir, sock, user, group, count, mode = argv
    config = RunConfig(
        db=f"sqlite:///{Path(db_dir) / 'store.sqlite'}",  # none there: tempfails, starts fine
        socket=f"unix:{sock}",
        max_stale=300.0,
        refresh=0.5,
        log_level="error",
        syslog=False,
        user=user,
        group=group,
        auto_restart=mode == "auto",
    )
    path = Path(sock)
    dropped = failed = 0
    for _ in range(int(count)):
        if _start(config):
            dropped += 1
        else:
            failed += 1
        try:
            if stat.S_ISLNK(os.lstat(path).st_mode):
                path.unlink()
        except FileNotFoundError:
            pass
    print(json.dumps({"dropped": dropped, "failed": failed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
