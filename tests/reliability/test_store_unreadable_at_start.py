"""A milter started as an unprivileged user (as systemd's ``User=`` starts it, no
``--user``) on a store it cannot read says so in one line and exits 2 at start;
before, it served and tempfailed every message (issue 23, item 4)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from tests.harness.milter import console_script, ours

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="starting as another user needs root")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory user nobody can reach (pytest's tmp_path is root-only 0700)."""
    path = Path(tempfile.mkdtemp(prefix="smtpauth-unreadable-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@needs_root
@pytest.mark.parametrize("auto_restart", ["--auto-restart", "--no-auto-restart"])
def test_started_as_a_user_that_cannot_read_the_store(shared_dir: Path, auto_restart: str) -> None:
    private = shared_dir / "private"
    url = f"sqlite:///{private / 'store.sqlite'}"  # db init: root's, 0640 in a 0750 directory
    assert run_cli(["--db", url, "db", "init"]) == 0
    assert run_cli(["--db", url, "domain", "add", "example.com"]) == 0
    run_dir = shared_dir / "run"  # like the unit's socket directory: the milter's own
    run_dir.mkdir()
    shutil.chown(run_dir, "nobody", "nogroup")
    as_nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    milter = ours(
        url,
        shared_dir / "milter.log",
        auto_restart,
        socket=f"unix:{run_dir / 'milter.sock'}",
        command=[*as_nobody, console_script()],
    )
    with milter.start(ready="spawned"):
        assert milter.wait_exit(20) == 2
    text = milter.log_text()
    errors = [line for line in text.splitlines() if "error" in line]
    assert len(errors) == 1, text
    assert "Traceback" not in text
    assert f"user nobody cannot read the store {private / 'store.sqlite'}" in errors[0]
    assert "event=start" not in text
