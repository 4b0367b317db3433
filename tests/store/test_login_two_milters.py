"""Two milter processes on one PostgreSQL, one login's traffic split between them
(docs/policy.md#one-count-for-the-whole-site): stopped within the documented overshoot
bound, the freeze reaches both, survives restarting both, and a PostgreSQL outage loses
no freeze and holds back no other login's mail.

The milters are driven over their sockets by our MTA-side client (as Postfix would);
the Postfix + Dovecot proof of each action is tests/integration/test_login_limits_postfix.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from tests.conftest import create_store
from tests.harness.milter import MilterProcess, MilterProcesses
from tests.harness.pgserver import PgServer
from tests.harness.waiting import wait_until
from tests.support.verdicts import CONTINUE, verdicts

pytestmark = pytest.mark.postgres

FROZEN = "550 5.7.1 Sending is suspended for this login: contact your mail administrator"
LIMIT = 20
TOTAL_RATE = 10.0  # messages a second, split between the two milters
ARGS = ("--max-stale", "3600", "--refresh", "0.2")  # the outage is ridden out, not timed


@pytest.fixture
def milters(tmp_path: Path) -> Iterator[MilterProcesses]:
    with MilterProcesses(tmp_path) as procs:
        yield procs


def send(milter: MilterProcess, login: str) -> str:
    return verdicts(milter.socket, sender=login, login=login, rcpts=["x@remote.test"])[0]


def test_one_login_through_two_milters(own_pg: PgServer, milters: MilterProcesses) -> None:
    name = own_pg.new_database_name("two")
    own_pg.create_database(name)
    url = own_pg.url(name)
    create_store(url)
    for args in (
        ["domain", "add", "example.com"],
        ["settings", "set", "login-max-messages", f"{LIMIT}/1h"],
        ["settings", "set", "login-limit-action", "freeze"],
    ):
        assert run_cli(["--db", url, *args]) == 0
    pair = [milters.start(url, *ARGS, ready="loaded") for _ in range(2)]

    # One login, its messages alternating between the two milters at a steady rate (a
    # workload's pace, not a wait for a daemon): the bound depends on it.
    accepted, sent, started = 0, 0, time.monotonic()
    while True:
        time.sleep(max(0.0, started + sent / TOTAL_RATE - time.monotonic()))
        answer = send(pair[sent % 2], "alice@example.com")
        sent += 1
        if answer != CONTINUE:
            break
        accepted += 1
        assert sent < 10 * LIMIT, "never stopped"
    rate = sent / (time.monotonic() - started) / 2  # messages a second through each milter
    assert answer == FROZEN
    # docs/policy.md: at most (H - 1) x 2 s x r past the limit (plus the one in flight).
    assert LIMIT <= accepted <= LIMIT + 2 * rate + 1, (accepted, rate)

    def both_refuse() -> bool:
        return all(send(m, "alice@example.com") == FROZEN for m in pair)

    wait_until(both_refuse, 3.0, "the freeze at both milters")
    for milter in pair:  # the freeze survives restarting both
        milter.stop()
    pair = [milters.start(url, *ARGS, ready="loaded") for _ in range(2)]
    wait_until(both_refuse, 3.0, "the freeze after a restart")

    own_pg.stop()  # an outage: settings and state alike
    try:
        for milter in pair:
            milter.wait_for_log("event=login-state-unwritable", timeout=10)
            assert send(milter, "alice@example.com") == FROZEN, "no freeze lost"
            assert send(milter, "bob@example.com") == CONTINUE, "nobody else held back"
    finally:
        own_pg.start()
    for milter in pair:
        milter.wait_for_log("event=login-state-written", timeout=10)
        assert milter.trouble() == []
