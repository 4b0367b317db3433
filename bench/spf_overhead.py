"""CPU cost of spf-exempt, and cold SPF lookup latency: ``python -m bench.spf_overhead``.

1. End to end, warm cache: two real ``smtpauth-milter run`` processes (stores
   identical but for spf-exempt) driven over the milter protocol by
   bench.compare's driver, alternating rounds; milter process CPU per session.
2. Warm cache, in process: the milter adapter (pymilter's TestCtx, no MTA) handles the same
   sessions (connect, an unauthenticated local MAIL FROM, two RCPTs) with
   spf-exempt off and on, alternating rounds; the figure is process CPU time
   per session, median of the rounds, and the ratio on/off.
3. Cold: SPF checks against a private unbound on loopback, each with an empty
   cache (every DNS query really sent); p50/p99 over ``COLD_CASES``, one
   sender per kind of record in the test zone.

It starts its own unbound (tests/harness/dnsserver.py); nothing else is asked.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import Milter
from Milter.testctx import TestCtx

from bench import compare
from bench.workload import Scenario
from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.core.networks import NetworkSet, parse_ip
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.daemon.milter import SmtpAuthMilter
from smtpauth_milter.daemon.refresh import SnapshotCache
from smtpauth_milter.lookups.spf import SpfChecks
from smtpauth_milter.lookups.spfdns import SpfEvaluator
from tests.harness.dnsserver import DnsServer
from tests.harness.milter import ours

CLIENT = "192.0.2.10"  # authorised by ip4.spf.test
# Cold checks: one sender per kind of record in tests.harness.dnsserver's spf.test zone.
COLD_CASES = [
    ("192.0.2.10", "a@ip4.spf.test"),
    ("2001:db8:1::25", "a@ip6.spf.test"),
    ("192.0.2.20", "a@a.spf.test"),
    ("192.0.2.30", "a@mx.spf.test"),
    ("192.0.2.10", "a@include.spf.test"),
    ("192.0.2.10", "a@redirect.spf.test"),
    ("192.0.2.40", "bob@exists.spf.test"),
    ("192.0.2.10", "a@big.spf.test"),
    ("192.0.2.10", "a@lim10.spf.test"),
    ("192.0.2.10", "a@nospf.spf.test"),
]


class _Source:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def prepare(self) -> None:
        pass

    def serial(self) -> int:
        return 1

    def load_snapshot(self) -> Snapshot:
        return self.snapshot


def _cache(resolver: str, spf_exempt: str) -> SnapshotCache:
    domain = {"require-auth-local": spf_exempt, "spf-exempt": spf_exempt}  # as _store
    snapshot = Snapshot.build(
        {"dns-resolver": resolver}, {"ip4.spf.test": domain}, NetworkSet.of(()), (), serial=1
    )
    cache = SnapshotCache(_Source(snapshot), max_stale=3600)
    cache.refresh()
    return cache


def _sessions(cache: SnapshotCache, spf: SpfChecks, count: int) -> float:
    """Process CPU seconds per session."""
    Milter.factory = lambda: SmtpAuthMilter(cache, spf)
    started = time.process_time()
    for _ in range(count):
        ctx = TestCtx()
        ctx._opts = list(TestCtx.default_opts)
        ctx._connect(ip=CLIENT)
        ctx._envfrom("<alice@ip4.spf.test>")
        ctx._envrcpt("<x@remote.test>")
        ctx._envrcpt("<y@remote.test>")
        ctx._close()
    return (time.process_time() - started) / count


def warm(resolver: str, rounds: int, count: int) -> list[str]:
    spf = SpfChecks()
    caches = {"off": _cache(resolver, "off"), "on": _cache(resolver, "on")}
    _sessions(caches["on"], spf, 10)  # fills the SPF cache
    per: dict[str, list[float]] = {"off": [], "on": []}
    for number in range(rounds):
        order = ("off", "on") if number % 2 == 0 else ("on", "off")
        for name in order:
            per[name].append(_sessions(caches[name], spf, count))
    spf.stop()
    off, on = statistics.median(per["off"]), statistics.median(per["on"])
    ratios = [b / a for a, b in zip(per["off"], per["on"], strict=True)]
    return [
        f"warm cache, {rounds} rounds x {count} sessions (2 RCPTs each):",
        f"  spf-exempt off: {off * 1e6:.1f} us CPU/session",
        f"  spf-exempt on:  {on * 1e6:.1f} us CPU/session",
        f"  on/off: {on / off:.3f} (per-round ratios {min(ratios):.3f}..{max(ratios):.3f})",
    ]


def _store(path: Path, resolver: str, spf_exempt: str) -> str:
    """With spf-exempt on, require-auth-local is on and SPF passes; with it off, no login is
    required at all: the MTA sees the same replies (and so the same steps) either way."""
    url = f"sqlite:///{path}"
    for command in (
        ("db", "init"),
        ("domain", "add", "ip4.spf.test"),
        ("settings", "set", "require-auth-local", spf_exempt),
        ("settings", "set", "dns-resolver", resolver),
        ("settings", "set", "--domain", "ip4.spf.test", "spf-exempt", spf_exempt),
    ):
        with contextlib.redirect_stdout(io.StringIO()):
            if run_cli(["--db", url, *command]) != 0:
                raise SystemExit(f"setting up the bench store failed: {command}")
    return url


def end_to_end(resolver: str, workdir: Path, rounds: int, duration: float) -> list[str]:
    rcpts = ("<x@remote.test>", "<y@remote.test>")
    for name, expected in (("off", ("c", "c")), ("on", ("c", "c"))):
        compare.SCENARIOS[name] = [
            Scenario(CLIENT, 40000 + n, None, "<alice@ip4.spf.test>", rcpts, expected)
            for n in range(100)
        ]
    procs = {
        name: ours(_store(workdir / f"{name}.sqlite", resolver, name), workdir / f"{name}.log")
        for name in ("off", "on")
    }
    cpu: dict[str, list[float]] = {"off": [], "on": []}
    errors = 0
    try:
        for proc in procs.values():
            proc.start()
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(2) as pool:
            for key in ("off", "on"):  # warm-up: the SPF cache fills, imports settle
                compare.measure(pool, "ours", procs[key], key, 2, 2, 1.0, 10**9)
            for number in range(rounds):
                order = ("off", "on") if number % 2 == 0 else ("on", "off")
                for key in order:
                    # named "ours": the driver checks every reply against the scenario
                    run = compare.measure(pool, "ours", procs[key], key, 8, 2, duration, 10**9)
                    cpu[key].append(run.cpu_ms)
                    errors += run.errors + run.mismatches
                    procs[key].log.truncate()
    finally:
        for proc in procs.values():
            proc.stop()
    off, on = statistics.median(cpu["off"]), statistics.median(cpu["on"])
    ratios = [b / a for a, b in zip(cpu["off"], cpu["on"], strict=True)]
    return [
        f"end to end, warm cache, {rounds} rounds x {duration:g} s, 8 connections:",
        f"  spf-exempt off: {off * 1000:.0f} us milter CPU/session",
        f"  spf-exempt on:  {on * 1000:.0f} us milter CPU/session",
        f"  on/off: {on / off:.3f} (per-round ratios {min(ratios):.3f}..{max(ratios):.3f}); "
        f"errors or wrong replies: {errors}",
    ]


def cold(resolver: str, repeat: int) -> list[str]:
    evaluator = SpfEvaluator(resolver, 3.0)
    latencies: list[float] = []
    for _ in range(repeat):
        for ip, sender in COLD_CASES:
            client = parse_ip(ip)
            assert client is not None
            started = time.perf_counter()
            evaluator.evaluate(client, sender)  # no cache in the evaluator
            latencies.append(time.perf_counter() - started)
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99)]
    return [
        f"cold checks against unbound on loopback: {len(latencies)} checks "
        f"({len(COLD_CASES)} senders x {repeat})",
        f"  p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms, max {latencies[-1] * 1e3:.2f} ms",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--sessions", type=int, default=3000)
    parser.add_argument("--cold-repeat", type=int, default=20)
    args = parser.parse_args(argv)
    logging.getLogger("smtpauth_milter").setLevel(logging.CRITICAL)  # no log I/O in the figures
    with tempfile.TemporaryDirectory(prefix="bench-spf-") as root, DnsServer(Path(root)) as dns:
        lines = end_to_end(dns.address, Path(root), args.rounds, args.duration)
        lines += warm(dns.address, args.rounds, args.sessions)
        lines += cold(dns.address, args.cold_repeat)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
