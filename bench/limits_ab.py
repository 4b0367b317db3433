"""Per-login limits on against off: the same workload, the same run (issue 20's bench);
and, the same way, the console's decision counts on against off (issue 22's).

    python -m bench.compare --limits-ab [--rounds 5] [--duration 4] [--connections 8 32]
    python -m bench.compare --counters-ab [--rounds 5] [--duration 4] [--connections 8 32]

Two of our milters on two stores that differ in one thing: ``on`` has the
shipped defaults (every ``login-max-*`` on, action tempfail), ``off`` has every
``login-max-*`` set to ``off``.  In each round both are driven at the same time,
each with the same concurrency from driver processes of its own, for the same
seconds (:func:`~bench.compare.measure_together`), so whatever else the machine
does in that round falls on both: runs taken one after the other had per-round
ratios spread over +-15% on this shared 2-core machine, more than the effect
measured.  The figure is the median of the per-round ratios.  Every verdict of
both is checked, and the workload
has 10,000 distinct logins (bench/workload.py), played at most
:func:`~bench.workload.login_budget` sessions against ``on`` so that no login
can cross a limit.  Besides CPU per session it reports the rows the ``on``
milter's login-sync thread added to the state tables per second, and
:mod:`bench.flush_cost` times that thread's exchange in process.

``--counters-ab``: both stores have the shipped defaults; the ``off`` milter is
ours with the Dashboard's counting (``DecisionCounts.count``) replaced by a
no-op before it serves, so nothing is counted or flushed for the Dashboard.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sqlite3
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from smtpauth_milter.core.limits import LimitKind
from smtpauth_milter.store import editing
from smtpauth_milter.store.engine import Store
from tests.harness.milter import MilterProcess, ours

from . import compare, flush_cost
from .compare import Plan
from .workload import REALISTIC, build_store, load_snapshot, login_budget, scenarios

NAMES = ("on", "off")
# ours with the Dashboard's counting made a no-op in the process that serves (it forks
# its milter child, which keeps the change)
NO_COUNTING = [
    sys.executable,
    "-c",
    "import sys; from smtpauth_milter.daemon.decisions import DecisionCounts;"
    " DecisionCounts.count = lambda *args, **kwargs: None;"
    " from smtpauth_milter.admin.cli import main; main(sys.argv[1:])",
]


@dataclass(frozen=True)
class Variant:
    """What differs between the ``on`` and the ``off`` milter, and the target."""

    what: str
    target: float  # CPU per session on / off at most
    prepare_off: Callable[[str], None]  # the off milter's store, after it is built
    off_command: Sequence[str] | None  # the off milter's command (None: the installed one)


FLUSH_WAIT = 1.2  # the login-sync thread writes once a second: the run's last batch too


def state_rows(path: Path) -> int:
    """Events in the milter's state tables: the counts' sum and the client rows (a count
    row is one login, kind and minute: its updates would not show in a row count)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
        counted = db.execute("SELECT coalesce(sum(n), 0) FROM login_count").fetchone()[0]
        return int(counted) + int(db.execute("SELECT count(*) FROM login_client").fetchone()[0])


def loadavg() -> str:
    """The load on this shared machine, to judge a run by."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def plans(procs: dict[str, MilterProcess], played: dict[str, int], budget: int) -> list[Plan]:
    """Both milters' parts of the next run: each goes on where its last run stopped."""
    return [
        Plan(name, proc, played[name], budget - played[name], check=True)
        for name, proc in procs.items()
    ]


def limits_off(url: str) -> None:
    store = Store(url)
    with store.write() as session:
        for kind in LimitKind:
            editing.set_setting(session, kind.value, "off")
    store.dispose()


LIMITS = Variant("per-login limits", 1.10, limits_off, None)  # issue 20: within 10%
COUNTERS = Variant("the Dashboard's decision counts", 1.05, lambda url: None, NO_COUNTING)


def run(args: argparse.Namespace, workdir: Path, variant: Variant = LIMITS) -> list[str]:
    paths = {name: workdir / f"limits-{name}.sqlite" for name in NAMES}
    for path in paths.values():
        build_store(f"sqlite:///{path}", REALISTIC)
    variant.prepare_off(f"sqlite:///{paths['off']}")
    snapshot = load_snapshot(f"sqlite:///{paths['on']}")
    key = "limits-ab"
    plays = compare.SCENARIOS[key] = scenarios(snapshot, REALISTIC)
    budget = login_budget(snapshot, plays)
    load = f"load average {loadavg()}"
    logins = len({sc.login for sc in plays if sc.login})
    print(f"# {len(plays)} scenarios, {logins} logins, budget {budget} sessions", flush=True)
    procs: dict[str, MilterProcess] = {
        name: ours(
            f"sqlite:///{path}",
            workdir / f"{name}.log",
            "--log-level",
            args.log_level,
            command=variant.off_command if name == "off" else None,
        )
        for name, path in paths.items()
    }
    runs: list[compare.Run] = []
    rows_per_s: list[float] = []
    played = dict.fromkeys(NAMES, 0)  # each run goes on through the list: no replays
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.drivers * len(NAMES)) as pool:  # both milters driven at once
        try:
            for proc in procs.values():
                proc.start()
            warm = compare.measure_together(pool, plans(procs, played, budget), key,
                                            args.drivers, args.drivers, 1.0)  # fmt: skip
            for one in warm:  # warm-up: the driver's encoded sessions
                played[one.milter] += one.sessions
            for c in args.connections:
                for rnd in range(args.rounds):
                    for proc in procs.values():
                        proc.log.truncate()
                    rows0 = state_rows(paths["on"])
                    order = plans(procs, played, budget)[:: 1 if rnd % 2 == 0 else -1]
                    pair = compare.measure_together(pool, order, key, c, args.drivers,
                                                    args.duration)  # fmt: skip
                    time.sleep(FLUSH_WAIT)
                    for one in sorted(pair, key=lambda r: NAMES.index(r.milter)):
                        runs.append(one)
                        played[one.milter] += one.sessions
                        if one.milter == "on":
                            rows_per_s.append((state_rows(paths["on"]) - rows0) / one.seconds)
                        print(f"  c={c:<3} round {rnd} {one.milter:3}: {one.rate:7.0f}/s"
                              f" cpu {one.cpu_ms:.3f} ms/session p99 {one.p99_ms:6.2f} ms"
                              f" wrong {one.mismatches} errors {one.errors} {one.examples[:1]}",
                              flush=True)  # fmt: skip
        finally:
            for proc in procs.values():
                proc.stop()
    rate = statistics.median(r.rate for r in runs if r.milter == "on")
    load += f" at the start, {loadavg()} at the end"
    head = (
        f"{variant.what} on against off: {args.rounds} rounds, both driven at once, of"
        f" {args.duration:g}s per concurrency; {load}"
    )
    lines = [head, "", *report(runs, args.connections, rows_per_s, variant.target)]
    if max(played.values()) >= budget:
        lines.append(f"NOTE: the 'on' runs stopped at the login budget ({budget} sessions)")
    return [*lines, "", *flush_cost.report(snapshot, plays, rate)]


def paired(on: list[compare.Run], off: list[compare.Run], attr: str) -> tuple[float, float, float]:
    """The median, min and max of the per-round ratios (runs in round order)."""
    ratios = [getattr(a, attr) / getattr(b, attr) for a, b in zip(on, off, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def report(
    runs: list[compare.Run], connections: list[int], rows_per_s: list[float], target: float
) -> list[str]:
    lines = [
        "| conns | milter | sessions/s | p50 ms | p99 ms | milter CPU ms/session"
        " | peak RSS MiB | verdicts checked, wrong |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    verdicts = []
    for c in connections:
        mine = {n: [r for r in runs if r.milter == n and r.connections == c] for n in NAMES}
        for name in NAMES:
            got = mine[name]
            lines.append(
                f"| {c} | {name} | {statistics.median(r.rate for r in got):.0f}"
                f" | {statistics.median(r.p50_ms for r in got):.2f}"
                f" | {statistics.median(r.p99_ms for r in got):.2f}"
                f" | {statistics.median(r.cpu_ms for r in got):.3f}"
                f" | {max(r.peak_rss_kib for r in got) / 1024:.1f}"
                f" | {sum(r.sessions for r in got)}, {sum(r.mismatches + r.errors for r in got)} |"
            )
        cpu = paired(mine["on"], mine["off"], "cpu_ms")
        rate = paired(mine["on"], mine["off"], "rate")
        verdicts.append(
            f"| {c} | {cpu[0]:.3f} ({cpu[1]:.2f}-{cpu[2]:.2f}) | {rate[0]:.3f}"
            f" ({rate[1]:.2f}-{rate[2]:.2f}) | {'PASS' if cpu[0] <= target else 'FAIL'} |"
        )
    return [
        *lines,
        "",
        "on / off: median of the per-round ratios, both driven at once (min-max)",
        "",
        f"| conns | CPU/session (<= {target:.2f}) | sessions/s | |",
        "|---:|---|---|---|",
        *verdicts,
        "",
        f"events the 'on' milter's login-sync thread wrote to the state store: median"
        f" {statistics.median(rows_per_s):.0f}/s (min {min(rows_per_s):.0f},"
        f" max {max(rows_per_s):.0f}; counts added, and client rows)",
    ]
