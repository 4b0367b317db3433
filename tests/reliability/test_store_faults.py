"""Store faults seen from a running milter: a store without the schema, a settings
row corrupted behind the CLI's back. Both fail closed (4xx), never open: the
corrupted row keeps the last good settings, and tempfails once the injected
clock passes --max-stale."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.admin.milterproto.transport import wait_for_milter
from tests.harness.milter import MilterProcess, ours
from tests.store.test_outage import clock_rides_out, seed
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
    milter = ours(url, tmp_path / "milter.log", graceful_stop=False)
    with milter.start(ready="spawned"):
        milter.wait_for_log("event=store-unreadable", timeout=15)
        wait_for_milter(milter.socket, 10, milter.process)
        assert _verdict(milter) == ("replycode", 451)
        assert _verdict(milter, "alice@example.com") == ("replycode", 451)
        assert "db upgrade" in milter.log_text()


def test_a_corrupted_settings_row_keeps_the_last_good_settings_and_recovers(
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
    # --max-stale out of reach: nothing here waits for the bound (proven in real time in
    # tests/store/test_outage.py and through Postfix; on the clock in test_refresh.py).
    milter = ours(url, tmp_path / "milter.log", "--max-stale", "3600", graceful_stop=False)
    with milter.start(ready="loaded"):
        assert _verdict(milter) == ("replycode", 530)
        since = milter.log.mark()
        with sqlite3.connect(path) as db:  # what no CLI command can write
            db.execute(
                "UPDATE global_setting SET value = 'perhaps' WHERE key = 'require-auth-local'"
            )
            db.execute("UPDATE store_state SET serial = serial + 1")
        db.close()
        # An unreadable store, not a crash and not "perhaps" read as off: the last good
        # settings still decide.
        milter.wait_for_log("event=store-unreadable", timeout=10, since=since)
        assert _verdict(milter) == ("replycode", 530)
        assert _verdict(milter, "alice@example.com") == ("continue", None)
        assert "perhaps" in milter.log_text()  # the log says what is wrong
        # Repaired with the CLI: the milter decides again.
        assert run_cli(["--db", url, "settings", "set", "require-auth-local", "on"]) == 0
        milter.wait_for_log("event=store-recovered", timeout=10, since=since)
        assert _verdict(milter) == ("replycode", 530)
        assert milter.trouble() == [] and milter.alive


def test_a_corrupted_settings_row_past_max_stale_tempfails_on_the_clock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.sqlite"
    url = f"sqlite:///{path}"
    seed(url)

    def corrupt() -> None:
        with sqlite3.connect(path) as db:
            db.execute(
                "UPDATE global_setting SET value = 'perhaps' WHERE key = 'require-auth-local'"
            )
            db.execute("UPDATE store_state SET serial = serial + 1")
        db.close()

    def repair() -> None:
        assert run_cli(["--db", url, "settings", "set", "require-auth-local", "on"]) == 0

    clock_rides_out(url, corrupt, repair, caplog)
