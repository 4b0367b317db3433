"""The benchmark's workloads against the per-login limits shipped on (issue 20).

bench.compare and bench.soak check every verdict against a model without
limits, so their logins must stay under the shipped limits: played through
the real LoginLimiter (as the milter plays each recipient), no verdict changes
within the budget the workload states, and the limits do bite past it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

import pytest

from bench import soak
from bench.workload import (
    LOGINS,
    REALISTIC,
    Scenario,
    build_store,
    load_snapshot,
    login_budget,
    scenarios,
)
from smtpauth_milter.core.networks import parse_ip
from smtpauth_milter.core.policy import Action, Request, decide
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.daemon.logins import LoginLimiter

NOW = 1_800_000_000.0


def replies(snapshot: Snapshot, plays: Iterable[Scenario]) -> Iterable[tuple[str, ...]]:
    """Each session's replies as the milter gives them: policy, then the login's limits."""
    limiter = LoginLimiter("milter@test", clock=lambda: NOW)
    for sc in plays:
        request = Request(parse_ip(sc.client), sc.login, sc.sender)
        counted = False
        got = []
        for rcpt in sc.rcpts:
            verdict = limiter.apply(snapshot, request, decide(snapshot, request, rcpt), not counted)
            counted = counted or not verdict.refuses
            refused = verdict.action in (Action.REJECT, Action.TEMPFAIL)
            got.append(str(verdict.reply) if refused else "c")
        yield tuple(got)


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Snapshot:
    url = f"sqlite:///{tmp_path_factory.mktemp('workload') / 'store.sqlite'}"
    build_store(url, REALISTIC)
    return load_snapshot(url)


def test_the_workload_has_ten_thousand_logins(snapshot: Snapshot) -> None:
    plays = scenarios(snapshot, REALISTIC)
    assert len({sc.login for sc in plays if sc.login}) >= LOGINS == 10_000
    assert login_budget(snapshot, plays) >= 200_000  # a default bench.compare plays ~100,000


def test_no_verdict_changes_within_the_budget_and_the_limits_bite_past_it(
    snapshot: Snapshot,
) -> None:
    plays = scenarios(snapshot, REALISTIC, count=3000, logins=600)
    budget = login_budget(snapshot, plays)
    assert budget >= 2 * len(plays)
    played = [plays[n % len(plays)] for n in range(budget + 4 * len(plays))]
    first_wrong = next(
        (
            n
            for n, (sc, got) in enumerate(zip(played, replies(snapshot, played), strict=True))
            if got != sc.expected
        ),
        None,
    )
    assert first_wrong is not None, "the limits never refused: the check proves nothing"
    assert first_wrong >= budget
    assert first_wrong < budget + 4 * len(plays)


def test_the_soak_stays_under_the_limits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'soak.sqlite'}"
    soak.prepare_store(url)
    snap = load_snapshot(url)
    sessions = 6000
    logins = -(-sessions // soak.PER_LOGIN)
    rng = random.Random(3)
    state = soak.State(require_auth_local=True, require_sender_match=True)
    plays = []
    for n in range(sessions):
        case = rng.randrange(len(soak.CASES))
        sender, login, rcpt = (x.format(n=n % logins) if x else x for x in soak.CASES[case])
        code = soak.expected_code(case, state)
        expected = "c" if code == 0 else str(code)
        plays.append((Scenario("203.0.113.9", 40000, login, f"<{sender}>", (f"<{rcpt}>",), ()),
                      expected))  # fmt: skip
    for (_sc, expected), got in zip(plays, replies(snap, (p for p, _e in plays)), strict=True):
        assert got[0][:3] == expected[:3]
