"""The unix socket: created 0660, answering, and removed when the milter stops."""

from __future__ import annotations

import stat
from pathlib import Path

from smtpauth_milter.admin.cli import run_cli
from tests.harness.milter import ours
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
