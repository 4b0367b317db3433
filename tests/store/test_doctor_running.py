"""``doctor`` and the process on the milter's socket: matched on address and port,
read with bounds and a deadline, named with its user, and a milter kept root warned of."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpauth_milter.admin.doctor import checks
from smtpauth_milter.admin.doctor.listeners import Unknown, listening_inode, proc_address
from smtpauth_milter.admin.doctor.running import Milter, _within, check_same_store
from smtpauth_milter.admin.milterproto.transport import free_tcp_port
from smtpauth_milter.daemon.config import clean_env
from tests.harness.milter import MilterProcesses, ours
from tests.store.test_doctor import GOOD, milters, run_doctor, store_url, write_main_cf

__all__ = ["milters", "store_url"]  # fixtures shared with test_doctor.py


# A local user's listener on another loopback address, on the milter's port, that
# looks like `smtpauth-milter run` and names a config file that never ends or blocks.
DECOY = """
import socket, sys, time
listener = socket.socket()
listener.bind(("127.0.0.2", int(sys.argv[1])))
listener.listen()
print("ready", flush=True)
time.sleep(300)
"""


@contextlib.contextmanager
def decoy(port: int, config: str) -> Iterator[int]:
    """The decoy, run as nobody with SMTPAUTH_MILTER_CONFIG=config; yields its pid."""
    nobody = pwd.getpwnam("nobody")
    process = subprocess.Popen(
        ["/usr/bin/python3", "-c", DECOY, str(port), "run"],
        env={"SMTPAUTH_MILTER_CONFIG": config, "PATH": "/usr/bin:/bin"},
        user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        yield process.pid
    finally:
        process.kill()
        process.communicate()


@pytest.fixture(params=["/dev/zero", "fifo"])
def endless(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param != "fifo":
        return str(request.param)
    path = tmp_path / "fifo"
    os.mkfifo(path)
    path.chmod(0o666)
    tmp_path.chmod(0o755)
    return str(path)


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another user's /proc needs root")
def test_a_listener_on_another_address_is_not_the_milter(
    tmp_path: Path,
    store_url: str,
    milters: MilterProcesses,
    capsys: pytest.CaptureFixture[str],
    endless: str,
) -> None:
    port = free_tcp_port()
    with decoy(port, endless):
        with pytest.raises(Unknown, match=f"no process listens on inet:{port}@127.0.0.1"):
            listening_inode(f"inet:{port}@127.0.0.1")
        milter = milters.add(ours(store_url, milters.log_path(), socket=f"inet:{port}@127.0.0.1"))
        milter.start()
        config = write_main_cf(tmp_path / "postfix", GOOD.format(port=port))
        _code, lines = run_doctor(capsys, store_url, config, milter.socket)
    assert lines[-1] == (
        f"ok: the milter on {milter.socket} (pid {milter.pid}, user root) reads this store"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="reading another user's /proc needs root")
def test_a_config_file_another_process_names_is_read_bounded(endless: str) -> None:
    """Doctor as root on the decoy's own address: it is what listens there, so doctor
    reads what it names; /dev/zero and a FIFO end at once, in bounded memory, as a
    warning saying whose process it is, and no traceback."""
    port = free_tcp_port()
    spec = f"inet:{port}@127.0.0.2"
    probe = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from smtpauth_milter.admin.doctor.running import running_store_finding\n"
        "print(running_store_finding(sys.argv[1], 'sqlite:///x').line())\n"
    )
    with decoy(port, endless):
        start = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-c", probe, spec],
            capture_output=True, text=True, timeout=60, env=clean_env(),
        )  # fmt: skip
        took = time.monotonic() - start
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stdout == (
        f"warning: cannot tell which store the milter on {spec} reads: its configuration "
        f"cannot be read here: config file {endless} is not a regular file — fix: run doctor "
        "as root, or compare the milter's --db / --config with this command's\n"
    )
    assert took < 30


def test_addresses_as_proc_net_prints_them() -> None:
    assert str(proc_address("0100007F")) == "127.0.0.1"
    assert str(proc_address("0200007F")) == "127.0.0.2"
    assert str(proc_address("00000000000000000000000001000000")) == "::1"
    mapped = ipaddress.ip_address("::ffff:127.0.0.1")
    assert proc_address("0000000000000000FFFF00000100007F") == mapped


def test_a_store_named_by_a_process_root_did_not_start_is_never_advised() -> None:
    """Some user's process on the milter's address: doctor names the user and does
    not tell root to use the store that process names."""
    alice = Milter(4242, "sqlite:////home/alice/trust-all.sqlite", "/", 1000, "alice", None)
    finding = check_same_store("inet:8894@127.0.0.1", "sqlite:////var/lib/x.sqlite", alice)
    assert finding.severity is checks.Severity.ERROR
    assert "(pid 4242, user alice)" in finding.what
    assert "not started by root" in finding.what
    assert finding.fix is not None and "give this command" not in finding.fix
    assert "make sure pid 4242 is your milter" in finding.fix
    dropped = Milter(4243, "sqlite:////srv/x.sqlite", "/", 1000, "alice", "alice")
    fix = check_same_store("inet:8894@127.0.0.1", "sqlite:////var/lib/x.sqlite", dropped).fix
    assert fix is not None and fix.startswith("give this command the milter's store")


def test_reading_another_process_has_a_deadline() -> None:
    start = time.monotonic()
    with pytest.raises(Unknown, match=r"took more than 0\.2 s"):
        _within(0.2, lambda: time.sleep(5))
    assert time.monotonic() - start < 2


def test_what_another_process_names_cannot_forge_a_line() -> None:
    spec = "inet:8894@127.0.0.1"
    forged = "config file /tmp/x\nok: the milter reads this store\x1b[2K\u202e"
    line = check_same_store(spec, "sqlite:////var/lib/x.sqlite", forged).line()
    assert "\n" not in line and "\x1b" not in line and "\u202e" not in line
    assert "/tmp/x\\nok: the milter" in line
    store = "sqlite:////home/a/s.sqlite\n\x9b31m"
    alice = Milter(4242, store, "/", 0, "root", None)
    line = check_same_store(spec, "sqlite:////var/lib/x.sqlite", alice).line()
    assert "\n" not in line and "\x9b" not in line
