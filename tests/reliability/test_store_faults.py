"""Store faults seen from a running milter: a store without the schema, a settings
row corrupted behind the CLI's back. Both fail closed (4xx), never open."""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.admin.milterproto.transport import wait_for_milter
from tests.reliability.proc import MilterProcess
from tests.support.milterclient import MilterClient


def _verdict(milter: MilterProcess, login: str | None = None) -> tuple[str, int | None]:
    with MilterClient(milter.socket, timeout=10) as client:
        assert client._sock is not None
        client._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reply = client.run_session(
            sender="alice@example.com", rcpts=["bob@evil.test"], login=login
        ).rcpts[0]
    return reply.kind, reply.code


def test_a_store_without_the_schema_starts_and_tempfails_naming_db_upgrade(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.sqlite"
    with sqlite3.connect(path) as db:  # not empty, not ours: never migrated implicitly
        db.execute("CREATE TABLE unrelated (x INTEGER)")
    db.close()
    url = f"sqlite:///{path}"
    with MilterProcess(url, tmp_path, wait_ready=False, graceful_stop=False) as milter:
        milter.wait_for_log("event=store-unreadable", timeout=15)
        wait_for_milter(milter.socket, 10, milter.proc)
        assert _verdict(milter) == ("replycode", 451)
        assert _verdict(milter, "alice@example.com") == ("replycode", 451)
        assert "db upgrade" in milter.log_bytes().decode()


def test_a_corrupted_settings_row_keeps_the_last_good_settings_then_tempfails(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.sqlite"
    url = f"sqlite:///{path}"
    for args in (
        ["db", "init"],
        ["domain", "add", "example.com"],
        ["settings", "set", "require-auth-local", "on"],
    ):
        assert run_cli(["--db", url, *args]) == 0
    max_stale = 2.0
    with MilterProcess(
        url, tmp_path, args=["--max-stale", str(max_stale)], graceful_stop=False
    ) as milter:
        assert _verdict(milter) == ("replycode", 530)
        with sqlite3.connect(path) as db:  # what no CLI command can write
            db.execute(
                "UPDATE global_setting SET value = 'perhaps' WHERE key = 'require-auth-local'"
            )
            db.execute("UPDATE store_state SET serial = serial + 1")
        db.close()
        broken_at = time.monotonic()
        milter.wait_for_log("event=store-unreadable", timeout=10)
        if time.monotonic() - broken_at < max_stale - 0.5:
            # within --max-stale: the last good settings still decide
            assert _verdict(milter) == ("replycode", 530)
            assert _verdict(milter, "alice@example.com") == ("continue", None)
        deadline = time.monotonic() + max_stale + 5
        while _verdict(milter) != ("replycode", 451):
            assert time.monotonic() < deadline, "never tempfailed after --max-stale"
            time.sleep(0.1)
        assert _verdict(milter, "alice@example.com") == ("replycode", 451)
        assert "perhaps" in milter.log_bytes().decode()  # the log says what is wrong
        # Repaired with the CLI: the milter decides again.
        assert run_cli(["--db", url, "settings", "set", "require-auth-local", "on"]) == 0
        deadline = time.monotonic() + 5
        while _verdict(milter) != ("replycode", 530):
            assert time.monotonic() < deadline, "never recovered"
            time.sleep(0.1)
