"""The unix socket: created 0660, answering, and removed when the milter stops."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.daemon.config import clean_env
from smtpauth_milter.daemon.sockfile import root_only
from tests.harness.milter import console_script, ours
from tests.reliability.test_least_privilege import _group_for_test, needs_root
from tests.support.milterclient import session


def test_unix_socket_is_0660_and_removed_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "run" / "milter.sock"
    path.parent.mkdir()
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    assert run_cli(["--db", url, "db", "init"]) == 0
    milter = ours(url, tmp_path / "milter.log", socket=f"unix:{path}")
    with milter.start(ready="loaded"):
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode)
        assert stat.S_IMODE(mode) == 0o660
        reply = session(f"unix:{path}", sender="<a@remote.test>", rcpts=["<b@remote.test>"])
        assert [r.kind for r in reply.rcpts] == ["continue"]
        assert milter.stop() == 0
    assert not path.exists(), "the socket must be removed when the milter stops"


# The milter's user swaps the fresh socket for a symlink to a root-only file
# (an atomic rename over it), as fast as it can, while root starts the milter.
ATTACK = """
import os, signal, stat, sys
path, target = sys.argv[1], sys.argv[2]
spare = path + ".swap"
swaps = 0
def done(*_):
    print(swaps, flush=True)
    os._exit(0)
signal.signal(signal.SIGTERM, done)
while True:
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            continue
        if not os.path.islink(spare):
            os.symlink(target, spare)
        os.rename(spare, path)
        swaps += 1
    except OSError:
        pass
"""
SYSTEM_PYTHON = "/usr/bin/python3"  # the attacker runs as nobody: not the test's venv
RACE_STARTS = 100  # per mode: 200 starts in all, about 30 s


@needs_root
def test_a_socket_swapped_for_a_symlink_never_makes_root_chown_its_target() -> None:
    """The socket's directory belongs to the milter's user (as operations.md used to
    advise): root must not follow what that user puts at the socket's path."""
    shared_dir = Path(tempfile.mkdtemp(prefix="smtpauth-race-"))  # reachable by nobody
    shared_dir.chmod(0o755)
    try:
        _race(shared_dir)
    finally:
        shutil.rmtree(shared_dir, ignore_errors=True)


def _race(shared_dir: Path) -> None:
    nobody, group = pwd.getpwnam("nobody"), _group_for_test()
    run_dir = shared_dir / "run"
    run_dir.mkdir()
    os.chown(run_dir, nobody.pw_uid, group.gr_gid)
    run_dir.chmod(0o750)
    secret = shared_dir / "secret"
    secret.mkdir(mode=0o700)
    target = secret / "shadow"
    target.write_text("root only\n")
    target.chmod(0o600)
    sock = run_dir / "milter.sock"
    attacker = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", ATTACK, str(sock), str(target)],
        user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        results = {}
        for mode in ("auto", "single"):
            done = subprocess.run(
                [sys.executable, "-m", "tests.reliability.socket_race", str(shared_dir),
                 str(sock), "nobody", group.gr_name, str(RACE_STARTS), mode],
                capture_output=True, text=True, timeout=120, check=True,
                cwd=Path(__file__).parents[2],
            )  # fmt: skip
            results[mode] = json.loads(done.stdout)
    finally:
        attacker.terminate()
        swaps = int(attacker.communicate(timeout=10)[0] or 0)
    info = target.lstat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o600), (
        results, swaps
    )  # fmt: skip
    assert target.read_text() == "root only\n"
    for mode, result in results.items():
        assert result["dropped"] + result["failed"] == RACE_STARTS
        assert result["dropped"] >= RACE_STARTS // 2, (mode, result)  # the milter did start
    assert swaps >= 20, f"the attacker swapped only {swaps} sockets: the race was not run"


@pytest.mark.parametrize("what", ["regular file", "symlink", "store"])
def test_a_start_that_cannot_listen_removes_nothing(what: str, tmp_path: Path) -> None:
    """A mistyped --socket (or a hostile config) naming a file: one line, exit 2,
    and the file, the symlink and what it points to are all still there."""
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    assert run_cli(["--db", url, "db", "init"]) == 0
    store = tmp_path / "store.sqlite"
    before = store.read_bytes()
    important = tmp_path / "important.conf"
    important.write_text("keep me\n")
    path = {"regular file": important, "symlink": tmp_path / "link", "store": store}[what]
    if what == "symlink":
        path.symlink_to(important)
    done = subprocess.run(
        [console_script(), "--db", url, "run", "--socket", f"unix:{path}", "--no-auto-restart"],
        capture_output=True, text=True, timeout=60, env=clean_env(),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "cannot listen" in errors[0], done.stderr
    assert "Traceback" not in done.stderr
    assert path.is_symlink() is (what == "symlink")
    assert important.read_text() == "keep me\n"
    assert store.read_bytes() == before


@needs_root
def test_which_directories_only_root_can_change() -> None:
    base = Path(tempfile.mkdtemp(prefix="smtpauth-rootonly-"))  # in /tmp: sticky, root's
    try:
        base.chmod(0o755)
        assert root_only(base)
        (base / "open").mkdir(mode=0o777)
        (base / "open").chmod(0o777)  # anyone may rename what is in it
        assert not root_only(base / "open")
        (base / "open" / "inner").mkdir(mode=0o755)
        assert not root_only(base / "open" / "inner"), "an ancestor others can write"
        (base / "users").mkdir(mode=0o750)
        os.chown(base / "users", pwd.getpwnam("nobody").pw_uid, 0)
        assert not root_only(base / "users")
        (base / "link").symlink_to(base / "users")
        assert not root_only(base / "link"), "judged where the link leads, too"
        (base / "sticky").mkdir()
        (base / "sticky").chmod(0o1777)
        assert root_only(base / "sticky")
    finally:
        shutil.rmtree(base, ignore_errors=True)
