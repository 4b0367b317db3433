"""One login's mail split between two hosts, each a real Postfix + Dovecot (SASL) with our
milter, both milters on one PostgreSQL (docs/policy.md#one-count-for-the-whole-site).

alice@example.com sends through both hosts at once, each as fast as swaks goes,
until both refuse her: the messages accepted for her stay within the documented
overshoot bound, computed from the limit and her measured rate at each host.
Then both milters restart: the first message through each host after the restart
is refused (the freeze is in force before the first session, not a second later).
Then PostgreSQL stops while mail goes on: alice stays refused at both hosts, bob
is accepted (never tempfailed), carol crosses the global limit at one host and is
frozen there; once PostgreSQL is back the counts of the outage reach the store
and carol's freeze reaches the other host.

The same proof with our own protocol client in place of Postfix is
tests/store/test_login_two_milters.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import create_store, run_captured
from tests.harness.milter import MilterProcess, MilterProcesses, ours
from tests.harness.mta import Sandbox, libmilter_socket, start_sandbox
from tests.harness.pgserver import PgServer
from tests.harness.waiting import wait_until

pytestmark = [pytest.mark.mta, pytest.mark.postgres]

RCPT = "x@remote.test"
FROZEN = "550 5.7.1 Sending is suspended for this login: contact your mail administrator"
LIMIT = 60  # example.com's login-max-messages: alice and bob
CAROL_LIMIT = 3  # the global one: carol, a bare login
LAG = 2.0  # docs: a milter learns of the other milters' events at most 2 s late
# The outage is ridden out on the last snapshot: only the login state is unwritable.
ARGS = ("--max-stale", "3600", "--refresh", "0.2")


@dataclass
class Host:
    """One MX: its Postfix (with Dovecot) and the milter it asks."""

    name: str
    sandbox: Sandbox
    milter: MilterProcess

    def send(self, user: str) -> str:
        """One SASL session of ``user`` with one recipient: the reply to RCPT TO."""
        mail_from = user if "@" in user else f"{user}@example.com"
        result = self.sandbox.smtp(mail_from, [RCPT], user=user, mech="PLAIN")
        assert result.auth is not None and result.auth.code == 235, result.transcript
        got = result.rcpt(RCPT)
        return "250" if got.code == 250 else f"{got.code} {got.text}"

    def restart(self) -> None:
        """SIGTERM (its last exchange writes what it counted), then start on the same socket."""
        self.milter.stop()
        self.milter.start(ready="loaded")


@pytest.fixture
def second_sandbox(
    tmp_path_factory: pytest.TempPathFactory, mta_sandbox: Sandbox
) -> Iterator[Sandbox]:
    sandbox = start_sandbox(tmp_path_factory.mktemp("mta-b"))
    try:
        yield sandbox
    finally:
        sandbox.stop(wait=False)  # its own ports and directories: nobody waits for it


@pytest.fixture
def store_url(own_pg: PgServer, capsys: pytest.CaptureFixture[str]) -> str:
    name = own_pg.new_database_name("twohosts")
    own_pg.create_database(name)
    url = own_pg.url(name)
    create_store(url)
    for args in (
        ["domain", "add", "example.com"],
        ["settings", "set", "--domain", "example.com", "login-max-messages", f"{LIMIT}/1h"],
        ["settings", "set", "login-max-messages", f"{CAROL_LIMIT}/1h"],
        ["settings", "set", "login-limit-action", "freeze"],
    ):
        assert run_captured(capsys, ["--db", url, *args]).code == 0
    return url


@pytest.fixture
def hosts(
    tmp_path: Path, store_url: str, mta_sandbox: Sandbox, second_sandbox: Sandbox
) -> Iterator[list[Host]]:
    with MilterProcesses(tmp_path) as milters:
        pair = []
        for name, sandbox in (("mx1", mta_sandbox), ("mx2", second_sandbox)):
            socket = sandbox.inet_milter_socket()
            milter = ours(store_url, milters.log_path(), *ARGS, socket=libmilter_socket(socket))
            milters.add(milter).start(ready="loaded")
            sandbox.postfix.use_milter(socket)
            pair.append(Host(name, sandbox, milter))
        try:
            yield pair
        finally:
            for host in pair:
                host.sandbox.postfix.use_milter(None)


def flood(host: Host, login: str) -> list[tuple[float, str]]:
    """Send as ``login`` through ``host`` until it refuses: (when, reply) of each."""
    sent: list[tuple[float, str]] = []
    while not sent or sent[-1][1] == "250":
        assert len(sent) < 3 * LIMIT, f"{login} never stopped at {host.name}"
        answer = host.send(login)
        sent.append((time.monotonic(), answer))
    return sent


def peak(times: list[float], width: float) -> int:
    """The most of ``times`` within any ``width`` seconds."""
    return max((sum(1 for u in times if t <= u <= t + width) for t in times), default=0)


def test_one_login_split_between_two_postfix_hosts(
    hosts: list[Host], own_pg: PgServer, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    def cli(*args: str) -> str:
        done = run_captured(capsys, ["--db", store_url, *args])
        assert done.code == 0, done.err
        return done.out

    # 1. alice through both hosts at once, until both refuse her.
    with ThreadPoolExecutor(len(hosts)) as pool:
        runs = list(pool.map(flood, hosts, ["alice@example.com"] * len(hosts)))
    accepted = [[t for t, answer in run if answer == "250"] for run in runs]
    total = sum(map(len, accepted))
    # docs/policy.md: at most (H - 1) x 2 s x r past the limit, r the login's rate at each
    # milter: here the most one host accepted within any 2 s.
    r_times_lag = max(peak(times, LAG) for times in accepted)
    bound = LIMIT + (len(hosts) - 1) * r_times_lag
    seen = f"accepted {[len(a) for a in accepted]} = {total}, limit {LIMIT}, bound {bound}"
    assert [run[-1][1] for run in runs] == [FROZEN] * len(hosts), runs
    assert LIMIT <= total <= bound, seen
    # Each milter counting alone would let up to H x LIMIT through: the run tells them apart.
    assert bound < len(hosts) * LIMIT, (bound, "the hosts sent too fast for this limit")

    def listed_frozen() -> str | None:
        out = cli("login", "list")
        return out if "alice@example.com  frozen" in out else None

    listed = wait_until(listed_frozen, 3.0, "the freeze in the store")
    assert "alice@example.com  frozen  login-max-messages" in listed

    # 2. Both milters restart: the very first message after it is refused.
    for host in hosts:
        host.restart()
    for host in hosts:
        assert host.send("alice@example.com") == FROZEN, f"freeze lost at {host.name}"

    # 3. PostgreSQL stops while mail goes on.
    own_pg.stop()
    try:
        for host in hosts:
            host.milter.wait_for_log("event=login-state-unwritable", timeout=10)
        for host in hosts:
            assert host.send("alice@example.com") == FROZEN, f"no freeze lost at {host.name}"
            for _ in range(2):
                assert host.send("bob@example.com") == "250", f"bob held back at {host.name}"
        mx1, mx2 = hosts
        for _ in range(CAROL_LIMIT):
            assert mx1.send("carol") == "250"
        assert mx1.send("carol") == FROZEN, "frozen during the outage"
        assert mx2.send("carol") == "250", "mx2 cannot know yet: its own count is 1"
    finally:
        own_pg.start()

    # 4. PostgreSQL is back: the outage's counts and carol's freeze catch up. No carol mail
    # goes through mx2 before the store has her freeze: it can only be mx1's, made offline.
    for host in hosts:
        host.milter.wait_for_log("event=login-state-written", timeout=10)
    carol_frozen = f"carol  frozen  login-max-messages {CAROL_LIMIT + 1} "
    wait_until(lambda: carol_frozen in cli("login", "list"), 3.0, "mx1's freeze in the store")
    wait_until(lambda: mx2.send("carol") == FROZEN, 3.0, "carol's freeze at mx2")
    shown = cli("login", "show", "bob@example.com")
    assert f"login-max-messages  {2 * len(hosts)} of {LIMIT}/1h" in shown, shown
    for host in hosts:
        assert host.milter.trouble() == []
