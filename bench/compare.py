"""The one command: our milter against a no-op pymilter milter, alternating, same run.

    python -m bench.compare                 # realistic store, 1/8/32 connections
    python -m bench.compare --large         # also 10,000 domains / 100,000 grants
    python -m bench.compare --leak          # RSS after 50,000 and 500,000 sessions
    python -m bench.compare --limits-ab     # per-login limits on against off (bench/limits_ab.py)
    python -m bench.compare --counters-ab   # the Dashboard's counts on against off (same module)

Both milters run for the whole comparison; runs alternate ours/no-op (the
order flips every round) at each concurrency, and every figure is the median
of ``--rounds`` runs with the spread of the per-round ratios.  See README.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.harness.milter import SOCKET, MilterProcess, ours

from . import driver, procstat, workload
from .workload import LARGE, REALISTIC, Scenario, StoreSize, build_store, load_snapshot, scenarios

REPO = Path(__file__).resolve().parents[1]
NAMES = ("ours", "noop")
# Issue 13's targets: ratios to the no-op milter (p99 is reported, not a target).
TARGETS = {"throughput": 0.75, "cpu": 1.40}

SCENARIOS: dict[str, list[Scenario]] = {}  # filled before the driver pool forks


def milters(
    workdir: Path, db_url: str, socket_kind: str, log_level: str = "info"
) -> dict[str, MilterProcess]:
    """Ours (logging a line per recipient at info, as deployed) and the no-op, not started."""

    def spec(name: str) -> str | None:
        return f"unix:{workdir / name}.sock" if socket_kind == "unix" else None

    noop = [sys.executable, "-m", "bench.noop_milter", SOCKET]
    return {
        "ours": ours(db_url, workdir / "ours.log", "--log-level", log_level, socket=spec("ours")),
        "noop": MilterProcess(noop, workdir / "noop.log", spec("noop"), cwd=REPO),
    }


@dataclass
class Run:
    milter: str
    connections: int
    sessions: int
    seconds: float
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_ms: float
    peak_rss_kib: int
    rss_kib: int
    driver_cpu_pct: float
    mismatches: int
    errors: int
    examples: list[str] = field(default_factory=list)


def _worker(args: tuple[str, str, bool, int, float, int, int, int]) -> driver.Result:
    spec, key, check, conns, duration, sessions, offset, all_conns = args
    return driver.drive(spec, SCENARIOS[key], check, conns, duration, sessions, offset, all_conns)


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


@dataclass(frozen=True)
class Plan:
    """One milter's part of a run: what it is called, where its scenarios begin (the
    sessions played before: no replays), how many it may be given, whether to check them."""

    name: str
    milter: MilterProcess
    start: int = 0
    sessions: int = 10**9
    check: bool | None = None  # None: only "ours" is checked


def measure(
    pool: multiprocessing.pool.Pool,
    name: str,
    milter: MilterProcess,
    key: str,
    connections: int,
    drivers: int,
    duration: float,
    sessions: int,
    check: bool | None = None,
    start: int = 0,
) -> Run:
    """One run of one milter; every verdict is checked for ``check`` (default: only for
    "ours").  ``start``: the scenario to begin with (the sessions played before)."""
    plan = Plan(name, milter, start, sessions, check)
    return measure_together(pool, [plan], key, connections, drivers, duration)[0]


def measure_together(
    pool: multiprocessing.pool.Pool,
    plans: Sequence[Plan],
    key: str,
    connections: int,
    drivers: int,
    duration: float,
) -> list[Run]:
    """One run of each milter, all at the same time: each gets ``connections`` from its
    own ``drivers`` processes (the pool needs that many per milter).  Driven together,
    two milters share whatever else the machine does during the run, so the ratio of
    their CPU per session is not moved by it (bench/limits_ab.py)."""
    drivers = max(1, min(drivers, connections))
    per = [connections // drivers + (1 if n < connections % drivers else 0) for n in range(drivers)]
    offsets = [sum(per[:n]) for n in range(drivers)]
    cpu0: list[float] = []
    pending = []
    for plan in plans:
        check = plan.name == "ours" if plan.check is None else plan.check
        jobs = [
            (plan.milter.socket, key, check, per[n], duration, -(-plan.sessions // drivers),
             plan.start + offsets[n], connections)
            for n in range(drivers)
        ]  # fmt: skip
        procstat.reset_peak(plan.milter.pid)
        cpu0.append(procstat.cpu_seconds(plan.milter.pid))
        pending.append(pool.map_async(_worker, jobs))
    everyone = [job.get() for job in pending]
    time.sleep(0.05)  # let the milters finish the last close callbacks
    return [
        _run_of(plan, connections, results, procstat.cpu_seconds(plan.milter.pid) - before)
        for plan, results, before in zip(plans, everyone, cpu0, strict=True)
    ]


def _run_of(plan: Plan, connections: int, results: list[driver.Result], cpu: float) -> Run:
    memory = procstat.memory_kib(plan.milter.pid)
    latencies = [x for r in results for x in r.latencies_ms]
    done = sum(r.sessions for r in results)
    seconds = max(r.elapsed for r in results)
    return Run(
        milter=plan.name,
        connections=connections,
        sessions=done,
        seconds=seconds,
        rate=done / seconds,
        p50_ms=percentile(latencies, 0.50),
        p99_ms=percentile(latencies, 0.99),
        cpu_ms=1000.0 * cpu / max(done, 1),
        peak_rss_kib=memory["VmHWM"],
        rss_kib=memory["VmRSS"],
        driver_cpu_pct=100.0 * sum(r.cpu_s for r in results) / seconds,
        mismatches=sum(r.mismatches for r in results),
        errors=sum(r.errors for r in results),
        examples=[e for r in results for e in r.examples + r.error_examples][:5],
    )


def _ratio_summary(ours: list[Run], noop: list[Run], attr: str) -> tuple[float, float, float]:
    """Ratio of medians, and min/max of the per-round ratios (the spread)."""
    a = [getattr(r, attr) for r in ours]
    b = [getattr(r, attr) for r in noop]
    per_round = [x / y for x, y in zip(a, b, strict=True) if y]
    return statistics.median(a) / statistics.median(b), min(per_round), max(per_round)


def report(size: StoreSize, runs: list[Run], concurrencies: Sequence[int]) -> list[str]:
    lines = [
        f"### {size.label}",
        "",
        "| conns | milter | sessions/s | p50 ms | p99 ms | milter CPU ms/session | peak RSS MiB"
        " | driver CPU % | verdicts checked, wrong |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    verdicts: list[str] = []
    for c in concurrencies:
        for name in NAMES:
            mine = [r for r in runs if r.milter == name and r.connections == c]
            med = {a: statistics.median(getattr(r, a) for r in mine)
                   for a in ("rate", "p50_ms", "p99_ms", "cpu_ms", "driver_cpu_pct")}  # fmt: skip
            lines.append(
                f"| {c} | {name} | {med['rate']:.0f} | {med['p50_ms']:.2f} | {med['p99_ms']:.2f}"
                f" | {med['cpu_ms']:.3f} | {max(r.peak_rss_kib for r in mine) / 1024:.1f}"
                f" | {med['driver_cpu_pct']:.0f} | {sum(r.sessions for r in mine)},"
                f" {sum(r.mismatches + r.errors for r in mine)} |"
            )
        ours = [r for r in runs if r.milter == "ours" and r.connections == c]
        noop = [r for r in runs if r.milter == "noop" and r.connections == c]
        tp = _ratio_summary(ours, noop, "rate")
        cpu = _ratio_summary(ours, noop, "cpu_ms")
        p99 = _ratio_summary(ours, noop, "p99_ms")
        rss = _ratio_summary(ours, noop, "peak_rss_kib")
        ok = tp[0] >= TARGETS["throughput"] and cpu[0] <= TARGETS["cpu"]
        verdicts.append(
            f"| {c} | {tp[0]:.3f} ({tp[1]:.2f}-{tp[2]:.2f})"
            f" | {cpu[0]:.3f} ({cpu[1]:.2f}-{cpu[2]:.2f})"
            f" | {p99[0]:.3f} ({p99[1]:.2f}-{p99[2]:.2f})"
            f" | {rss[0]:.2f} | {'PASS' if ok else 'FAIL'} |"
        )
    lines += [
        "",
        "ours / no-op: ratio of medians (min-max of the per-round ratios)",
        "",
        f"| conns | throughput (>= {TARGETS['throughput']:.2f}) | CPU/session"
        f" (<= {TARGETS['cpu']:.2f}) | p99 | peak RSS | |",
        "|---:|---|---|---|---|---|",
        *verdicts,
        "",
    ]
    return lines


def compare(args: argparse.Namespace, size: StoreSize, workdir: Path) -> list[str]:
    db = f"sqlite:///{workdir / f'store-{size.domains}.sqlite'}"
    t0 = time.monotonic()
    build_store(db, size)
    snapshot = load_snapshot(db)
    key = f"{size.domains}/{size.grants}"
    SCENARIOS[key] = scenarios(snapshot, size)
    budget = workload.login_budget(snapshot, SCENARIOS[key])  # ours: no login over a shipped limit
    print(f"# store {size.label} built in {time.monotonic() - t0:.1f}s", flush=True)
    procs = milters(workdir, db, args.socket, args.log_level)
    runs: list[Run] = []
    played: dict[str, int] = {}  # sessions per milter: each run goes on through the list
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.drivers) as pool:
        try:
            for proc in procs.values():
                proc.start()
            for name, proc in procs.items():  # warm-up: fills the driver's encoded-session cache
                warm = measure(pool, name, proc, key, args.drivers, args.drivers, 1.0, budget)
                played[name] = warm.sessions
            for c in args.connections:
                for rnd in range(args.rounds):
                    for name in NAMES if rnd % 2 == 0 else NAMES[::-1]:
                        procs[name].log.truncate()
                        cap = budget - played[name] if name == "ours" else 10**9
                        run = measure(pool, name, procs[name], key, c, args.drivers,
                                      args.duration, cap, start=played[name])  # fmt: skip
                        played[name] += run.sessions
                        runs.append(run)
                        print(
                            f"  c={c:<3} round {rnd} {name:4}: {run.rate:7.0f}/s"
                            f" p50 {run.p50_ms:6.2f} p99 {run.p99_ms:6.2f} ms"
                            f" cpu {run.cpu_ms:.3f} ms/session rss {run.rss_kib / 1024:.1f} MiB"
                            f" driver {run.driver_cpu_pct:.0f}%"
                            f" wrong {run.mismatches} errors {run.errors} {run.examples[:1]}"
                            f"{' LOGIN BUDGET REACHED' if cap <= run.sessions else ''}",
                            flush=True,
                        )
        finally:
            for proc in procs.values():
                proc.stop()
    if args.json:
        with Path(args.json).open("a") as out:
            out.write(json.dumps({"store": size.label, "runs": [asdict(r) for r in runs]}) + "\n")
    return report(size, runs, args.connections)


LEAK_CHUNK = 75_000  # sessions per run after the first 50,000 (each run under a minute)


def leak(args: argparse.Namespace, workdir: Path) -> list[str]:
    """RSS of each milter after 50,000 and after ``--leak-sessions`` sessions at 8 connections."""
    db = f"sqlite:///{workdir / 'store-leak.sqlite'}"
    build_store(db, REALISTIC)
    key = "leak"
    snapshot = load_snapshot(db)
    count = max(
        workload.SESSIONS, args.leak_sessions // 4
    )  # enough logins to stay under the limits
    SCENARIOS[key] = scenarios(snapshot, REALISTIC, count, logins=count // 5)
    if workload.login_budget(snapshot, SCENARIOS[key]) < args.leak_sessions:
        raise SystemExit(f"bench: {args.leak_sessions} sessions would cross a login limit")
    procs = milters(workdir, db, args.socket, args.log_level)
    total_wanted = args.leak_sessions
    lines = [
        f"| milter | RSS after 50k sessions MiB | after {total_wanted // 1000}k MiB | growth"
        " | sessions/s | wrong | RSS after each chunk MiB |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(args.drivers) as pool:
        for name in args.leak_milters:
            proc = procs[name]
            proc.start()
            try:
                first = measure(pool, name, proc, key, 8, args.drivers, 600, 50_000)
                rss_50k = first.rss_kib
                rest: list[Run] = []
                while sum(r.sessions for r in rest) + first.sessions < total_wanted:
                    proc.log.truncate()
                    done = first.sessions + sum(r.sessions for r in rest)
                    sessions = min(total_wanted - done, LEAK_CHUNK)
                    rest.append(measure(pool, name, proc, key, 8, args.drivers, 600, sessions,
                                        start=done))  # fmt: skip
                rss_500k = rest[-1].rss_kib
                total = first.sessions + sum(r.sessions for r in rest)
                rate = total / (first.seconds + sum(r.seconds for r in rest))
                wrong = sum(r.mismatches + r.errors for r in [first, *rest])
                chunks = ", ".join(f"{r.rss_kib / 1024:.1f}" for r in [first, *rest])
                lines.append(
                    f"| {name} | {rss_50k / 1024:.1f} | {rss_500k / 1024:.1f} | "
                    f"{100.0 * (rss_500k - rss_50k) / rss_50k:+.1f}% | {rate:.0f} | {wrong} "
                    f"| {chunks} |"
                )
                print(lines[-1], f"({total} sessions)", flush=True)
            finally:
                proc.stop()
    return lines


def machine() -> list[str]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")), "?",
    )  # fmt: skip
    import Milter

    return [
        f"machine: {os.cpu_count()} CPUs, {cpu}; Python {sys.version.split()[0]};"
        f" pymilter {getattr(Milter, '__version__', '?')}; kernel {os.uname().release}"
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, nargs="+", help="default 1 8 32 (A/B: 8 32)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating runs per milter")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per run")
    parser.add_argument("--drivers", type=int, default=2, help="driver processes per run")
    parser.add_argument("--socket", choices=("inet", "unix"), default="inet")
    parser.add_argument(
        "--log-level",
        choices=("info", "warning", "error"),
        default="info",
        help="our milter's level (info: a line per recipient, as deployed)",
    )
    parser.add_argument("--large", action="store_true", help="also 10,000 domains/100,000 grants")
    parser.add_argument("--only-large", action="store_true", help="only the large store")
    parser.add_argument("--leak", action="store_true", help="only the 50k -> 500k RSS run")
    parser.add_argument("--leak-sessions", type=int, default=500_000)
    parser.add_argument("--leak-milters", nargs="+", default=["ours", "noop"], choices=NAMES)
    parser.add_argument(
        "--limits-ab", action="store_true", help="ours with limits on against off (8, 32 conns)"
    )
    parser.add_argument(
        "--counters-ab", action="store_true", help="ours with the Dashboard's counts on/off"
    )
    parser.add_argument("--json", metavar="FILE", help="append every run as JSON to FILE")
    args = parser.parse_args(argv)
    ab = args.limits_ab or args.counters_ab
    args.connections = args.connections or ([8, 32] if ab else [1, 8, 32])
    workdir = Path(tempfile.mkdtemp(prefix="smtpauth-bench-"))
    try:
        out = machine()
        if args.leak:
            out += leak(args, workdir)
        elif ab:
            from . import limits_ab  # it imports this module

            variant = limits_ab.COUNTERS if args.counters_ab else limits_ab.LIMITS
            out += limits_ab.run(args, workdir, variant)
        else:
            sizes = [LARGE] if args.only_large else [REALISTIC, *([LARGE] if args.large else [])]
            out.append(
                f"socket {args.socket}, ours at --log-level {args.log_level},"
                f" {args.rounds} alternating rounds of {args.duration:g}s,"
                f" {args.drivers} driver processes"
            )
            for size in sizes:
                out += ["", *compare(args, size, workdir)]
        print("\n".join(out))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
