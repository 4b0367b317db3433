"""Rolling upgrades: several milters on one store, the schema upgraded under them.

Real ``run`` processes answering over their sockets, on SQLite and a real
PostgreSQL:

- this version against a newer release's schema (``tests/upgrades.py``): it
  keeps deciding on a revision marked readable by it, including what the newer
  release changes; it tempfails at once, with one log line, on a revision that
  is not, and decides again when the store is back on a readable one;
- the real 0.1.0, unpacked from git history (tag ``v0.1.0``), against the
  schema this version's ``db upgrade`` leaves: what it does cannot be changed,
  so this records it.  A 0.1.0 milter started before the upgrade keeps
  deciding (it checks the schema once, at start), also on settings changed
  after it; one started after the upgrade refuses the unknown revision and
  tempfails everything; its CLI refuses every command.  Hence the upgrade order
  in docs/operations.md: upgrade the schema, then restart each host's milter
  on the new version, never on 0.1.0.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpauth_milter import __version__
from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.store import editing
from smtpauth_milter.store.engine import Store
from tests.harness.milter import MilterProcess, MilterProcesses
from tests.support.verdicts import CONTINUE, seconds_until, verdicts
from tests.upgrades import (
    RELEASE_0_1_0,
    newer_migrations,
    old_command,
    old_release,
    run_old,
    run_old_commands,
)

REFRESH = 0.2
MAX_STALE = 300.0  # an incompatible schema must not wait for it
MILTER_ARGS = ("--refresh", str(REFRESH), "--max-stale", str(MAX_STALE))
TEMPFAIL = "451 4.3.0 Temporary policy failure, try again later"
AUTH_REQUIRED = "530 5.7.0 Authentication required"
COMPATIBLE, INCOMPATIBLE = "t9001", "t9002"
NEEDS = "99.0"
CLIENT = "203.0.113.9"  # the client address of every probe session

CASES: dict[str, dict[str, str]] = {
    "unauthenticated local sender": {"sender": "alice@example.com"},
    "authenticated local sender": {"sender": "alice@example.com", "login": "alice"},
    "non-local sender": {"sender": "bob@remote.test"},
}
KNOWN = {
    "unauthenticated local sender": AUTH_REQUIRED,
    "authenticated local sender": CONTINUE,
    "non-local sender": CONTINUE,
}
TRUSTED = dict.fromkeys(CASES, CONTINUE)  # once the probes' client network is trusted
ALL_TEMPFAIL = dict.fromkeys(CASES, TEMPFAIL)
SEED = (
    ["domain", "add", "example.com"],
    ["settings", "set", "require-auth-local", "on"],
    ["network", "add", "192.0.2.0/24"],
)
TRUST_THE_PROBES = ["network", "add", "203.0.113.0/24"]


def probe(milter: MilterProcess) -> dict[str, str]:
    return {
        name: verdicts(milter.socket, rcpts=["x@remote.test"], client_addr=CLIENT, **session)[0]  # type: ignore[arg-type]
        for name, session in CASES.items()
    }


def settles_at(milter: MilterProcess, expected: dict[str, str], timeout: float = 5.0) -> float:
    return seconds_until(
        lambda: probe(milter) == expected, timeout, f"{milter.log.path.name}: {expected}"
    )


@pytest.fixture
def milters(tmp_path: Path) -> Iterator[MilterProcesses]:
    with MilterProcesses(tmp_path) as procs:
        yield procs


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """A store nobody has migrated yet: whichever version comes first creates the schema."""
    return sqlite_url if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


# --- this version and a newer release ------------------------------------------


def test_a_running_milter_follows_a_newer_schema_it_can_read_and_tempfails_at_once_on_one_it_cannot(
    db_url: str, tmp_path: Path, milters: MilterProcesses
) -> None:
    for args in SEED:
        assert run_cli(["--db", db_url, *args]) == 0
    milter = milters.start(db_url, *MILTER_ARGS)
    assert probe(milter) == KNOWN
    newer = Store(
        db_url,
        migrations=str(newer_migrations(tmp_path, [(COMPATIBLE, "0.1.0"), (INCOMPATIBLE, NEEDS)])),
    )
    try:
        newer.upgrade(COMPATIBLE)
        serial = newer.serial()
        seconds_until(
            lambda: bool(milter.log.find(f"event=snapshot-loaded serial={serial} ")),
            5.0,
            "reload after the upgrade",
        )
        assert probe(milter) == KNOWN
        with newer.write() as session:  # what the newer release changes, this milter follows
            editing.add_network(session, "203.0.113.0/24")
        settles_at(milter, TRUSTED)

        newer.upgrade(INCOMPATIBLE)
        took = settles_at(milter, ALL_TEMPFAIL, timeout=15.0)
        assert took < 10.0, "at once (the next poll), far from --max-stale's 300 s"
        for _ in range(5):
            assert probe(milter) == ALL_TEMPFAIL
        late = milters.start(db_url, *MILTER_ARGS)  # started on it: the same
        assert probe(late) == ALL_TEMPFAIL

        newer.downgrade(COMPATIBLE)  # back on a readable revision: both decide again
        settles_at(milter, TRUSTED)
        settles_at(late, TRUSTED)
    finally:
        newer.dispose()
    needs = f"which needs smtpauth-milter {NEEDS} or later (this is {__version__})"
    for process in (milter, late):
        process.log.wait_for("event=store-recovered")  # the log writer writes it just after
        refused = process.log.find("event=store-unreadable")
        assert len(refused) == 1, refused  # one line, not one per message
        assert 'state="schema not readable by this version: tempfailing"' in refused[0]
        assert needs in refused[0]
        assert len(process.log.find("event=store-recovered")) == 1
        assert len(process.log.find("rule=no-settings")) >= len(CASES)
        assert process.trouble() == []
        assert process.alive


# --- the real 0.1.0 -------------------------------------------------------------


@pytest.fixture(scope="module")
def release_0_1_0(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return old_release(RELEASE_0_1_0, tmp_path_factory.mktemp("releases"))


def test_0_1_0_keeps_deciding_when_started_before_the_upgrade_and_refuses_when_started_after(
    empty_url: str, release_0_1_0: Path, milters: MilterProcesses
) -> None:
    url = empty_url
    old_argv, old_env = old_command(release_0_1_0)
    seeded = run_old_commands(release_0_1_0, url, [["--version"], ["db", "upgrade"], *SEED])
    assert seeded.returncode == 0, seeded
    assert seeded.stdout.splitlines()[0] == "smtpauth-milter, version 0.1.0", seeded
    before = milters.start(url, *MILTER_ARGS, command=old_argv, env=old_env)
    assert probe(before) == KNOWN

    assert run_cli(["--db", url, "db", "upgrade"]) == 0  # this version, from another host
    store = Store(url)
    try:
        assert store.current() == store.head()
        rule = store.rule()
        assert rule is not None and rule.readable_by == store.migrations.rules[store.head()]
        serial = store.serial()
    finally:
        store.dispose()
    seconds_until(
        lambda: bool(before.log.find(f"event=snapshot-loaded serial={serial} ")),
        5.0,
        "0.1.0 reloads",
    )
    assert probe(before) == KNOWN
    assert run_cli(["--db", url, *TRUST_THE_PROBES]) == 0  # changed with this version
    settles_at(before, TRUSTED)  # the 0.1.0 milter follows

    newer_than_it_knows = "newer than this version knows: upgrade smtpauth-milter"
    for args in (["domain", "list"], ["settings", "set", "dry-run", "on"]):
        refused = run_old(release_0_1_0, url, *args)
        assert refused.returncode == 2, refused
        assert refused.stderr.count("\n") == 1 and newer_than_it_knows in refused.stderr, refused
    after = milters.start(url, *MILTER_ARGS, command=old_argv, env=old_env)
    assert probe(after) == ALL_TEMPFAIL
    assert any(newer_than_it_knows in line for line in after.log.find("event=store-unreadable"))
    ours = milters.start(url, *MILTER_ARGS)
    assert probe(ours) == TRUSTED
    for process in (before, after, ours):
        assert process.trouble() == []
        assert process.alive
