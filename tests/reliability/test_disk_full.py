"""Disk full under the SQLite store while the CLI writes: one clear line, exit 2,
the store unchanged, and a running milter keeps deciding.

A 2 MiB tmpfs is mounted for the test (root only), filled to the last byte.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from smtpauth_milter.daemon.config import clean_env
from tests.conftest import CliResult, run_captured
from tests.harness.milter import MilterProcess, console_script, ours
from tests.support.milterclient import session

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk() -> Iterator[Path]:
    mountpoint = Path(tempfile.mkdtemp(prefix="smtpauth-full-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        mountpoint.rmdir()
        pytest.fail(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        mountpoint.rmdir()


def fill(disk: Path) -> Path:
    """Write a file until the file system says ENOSPC; returns it (remove it to free)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        for size in (65536, 4096, 512, 1):
            chunk = b"\0" * size
            while True:
                try:
                    os.write(fd, chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def installed_cli(db_url: str, *args: str) -> CliResult:
    """Run the installed CLI once (a separate process, as an admin would)."""
    done = subprocess.run(
        [console_script(), "--db", db_url, *args],
        capture_output=True, text=True, timeout=30, env=clean_env(), check=False,
    )  # fmt: skip
    return CliResult(done.returncode, done.stdout, done.stderr)


def _decides(milter: MilterProcess) -> tuple[int | None, int | None]:
    refused = session(milter.socket, sender="alice@example.com", rcpts=["bob@evil.test"])
    owner = session(
        milter.socket,
        sender="alice@example.com",
        rcpts=["bob@evil.test"],
        login="alice@example.com",
    )
    return refused.rcpts[0].code, owner.rcpts[0].code


def test_a_write_on_a_full_disk_fails_cleanly_and_the_milter_keeps_deciding(
    small_disk: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{small_disk / 'state' / 'store.sqlite'}"

    def cli(*args: str) -> CliResult:  # in this process: one process start saved per call
        return run_captured(capsys, ["--db", url, *args])

    for args in (
        ["db", "init"],
        ["domain", "add", "example.com"],
        ["settings", "set", "require-auth-local", "on"],
    ):
        assert cli(*args).code == 0
    big_import = tmp_path / "big.json"
    export = json.loads(cli("export").out)
    export["domains"].update({f"d{i:05d}.example": {} for i in range(2_000)})
    big_import.write_text(json.dumps(export), encoding="utf-8")

    milter = ours(url, tmp_path / "milter.log", graceful_stop=False)
    with milter.start(ready="loaded"):
        assert _decides(milter) == (530, None)
        before = cli("export").out
        filler = fill(small_disk)
        with contextlib.ExitStack() as cleanup:
            cleanup.callback(filler.unlink)
            for run, args in (
                # the installed command once: its exit status and stderr, as an admin sees them
                (
                    partial(installed_cli, url),
                    ["settings", "set", "auth-required-reply", "530 5.7.0 " + "x" * 400],
                ),
                (cli, ["domain", "add", *[f"n{i}.example" for i in range(200)]]),
                (cli, ["import", str(big_import)]),
            ):
                failed = run(*args)
                assert failed.code == 2, failed
                lines = failed.err.splitlines()
                assert len(lines) == 1 and "Traceback" not in failed.err, failed.err
                assert lines[0].startswith("smtpauth-milter: error: cannot write to the store")
                assert "full" in lines[0], lines[0]
                assert cli("export").out == before
            assert cli("db", "check").code == 0
            assert _decides(milter) == (530, None)
        # Space again: the same write succeeds and reaches the running milter.
        assert cli("settings", "set", "require-auth-local", "off").code == 0
        deadline = time.monotonic() + 5
        while _decides(milter) != (None, None):
            assert time.monotonic() < deadline, "the change never reached the milter"
            time.sleep(0.05)
        assert milter.alive
