"""The collection's order puts each slow module at the head of its own worker's share,
as pytest-xdist's worksteal scheduler really hands them out (tests/slowfirst.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from xdist.scheduler.worksteal import WorkStealingScheduling

from tests.slowfirst import SLOW_MODULES, shares, slow_first

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 4


class FakeNode:
    """What the scheduler calls on a worker: it only records the tests sent to it."""

    shutting_down = False

    def __init__(self, name: str) -> None:
        self.gateway = SimpleNamespace(id=name)
        self.sent: list[int] = []

    def send_runtest_some(self, indices: list[int]) -> None:
        self.sent.extend(indices)

    def send_steal(self, indices: list[int]) -> None:  # pragma: no cover - not reached
        raise AssertionError("nothing is stolen before a test ran")

    def shutdown(self) -> None:  # pragma: no cover - not reached
        raise AssertionError("no worker is idle at the start")


class FakeConfig:
    def getvalue(self, name: str) -> Any:
        assert name == "tx"
        return [f"{WORKERS}*popen"]


def first_shares(collection: list[str]) -> list[list[str]]:
    """What each worker is given to run first, by the real worksteal scheduler."""
    scheduler = WorkStealingScheduling(FakeConfig())  # type: ignore[arg-type]
    nodes = [FakeNode(f"gw{i}") for i in range(WORKERS)]
    for node in nodes:
        scheduler.add_node(node)  # type: ignore[arg-type]
        scheduler.add_node_collection(node, collection)  # type: ignore[arg-type]
    scheduler.schedule()
    return [[collection[i] for i in node.sent] for node in nodes]


def collection() -> list[str]:
    """A run's shape: the slow modules' tests among 400 others, slow ones not first."""
    ids = [f"tests/unit/test_{n:03}.py::test_x" for n in range(200)]
    for prefix, _ in SLOW_MODULES:
        module = prefix if prefix.endswith(".py") else prefix + "test_install.py"
        ids += [f"{module}::test_{n}" for n in range(7)]
    return ids + [f"tests/store/test_{n:03}.py::test_x" for n in range(200)]


def owner(share: list[str], prefix: str) -> bool:
    return any(test.startswith(prefix) for test in share)


def test_each_slow_module_starts_its_own_workers_share() -> None:
    tests = collection()
    ordered = slow_first(tests, str, WORKERS)
    assert sorted(ordered) == sorted(tests)  # nothing lost, nothing twice
    given = first_shares(ordered)
    for prefix, _ in SLOW_MODULES:
        holders = [share for share in given if owner(share, prefix)]
        assert len(holders) == 1, f"{prefix} split between workers"
        module = [test for test in holders[0] if test.startswith(prefix)]
        assert holders[0][: len(module)] == module, f"{prefix} not at the head of its share"
    assert all(sum(owner(share, p) for p, _ in SLOW_MODULES) == 1 for share in given)


def test_one_block_first_left_every_slow_module_to_the_first_worker() -> None:
    """Why: main's order (the slow modules sorted first as one block) gave them all to
    one worker, which ran them one after the other."""
    tests = collection()
    block = sorted(tests, key=lambda t: not t.startswith(tuple(p for p, _ in SLOW_MODULES)))
    given = first_shares(block)
    assert [sum(owner(share, p) for p, _ in SLOW_MODULES) for share in given] == [4, 0, 0, 0]


def test_without_workers_the_slow_modules_come_first_in_their_order() -> None:
    tests = collection()
    ordered = slow_first(tests, str, 1)
    heaviest_first = sorted(SLOW_MODULES, key=lambda module: -module[1])
    slow = [t for prefix, _ in heaviest_first for t in tests if t.startswith(prefix)]
    assert ordered[: len(slow)] == slow
    assert ordered[len(slow) :] == [t for t in tests if t not in slow]


def test_shares_are_worksteals() -> None:
    assert shares(10, 4) == [2, 2, 3, 3]
    assert [len(s) for s in first_shares([f"t{n}" for n in range(10)])] == [2, 2, 3, 3]


def test_every_slow_module_exists() -> None:
    """A renamed module would silently lose its place."""
    for prefix, _ in SLOW_MODULES:
        assert (ROOT / prefix).exists(), prefix
