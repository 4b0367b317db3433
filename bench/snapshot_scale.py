"""Scale of the in-memory snapshot: 10,000 domains, 100,000 send-as grants, 1,000 networks.

Not a timed test: a benchmark whose figures go to bench/results/snapshot_scale.md.
For each store (SQLite file; PostgreSQL on a private server from
tests/harness/pgserver.py) it bulk-loads the data once, then per run measures:

- ``load``: ``Store.load_snapshot()`` wall time and the peak RSS (``ru_maxrss``)
  of a fresh process that imports the milter (pymilter included) and loads it,
  plus that process's RSS before loading;
- ``decide``: latency of ``policy.decide`` on the loaded snapshot, p50/p99/max,
  one request every ~0.5 ms for 4 s, alone and while another thread runs full
  reloads back to back (what the refresh thread does after a change), and the
  p99 ratio.  The GIL is shared as in the milter, where libmilter's callback
  threads decide while the refresh thread reloads.

Run from the repository root::

    python -m bench.snapshot_scale --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from smtpauth_milter.core.networks import parse_ip
from smtpauth_milter.core.policy import Request, decide
from smtpauth_milter.store import editing
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.models import Domain, DomainSetting, SendAsGrant, TrustedNetwork
from tests.harness.pgserver import PgServer

DOMAINS = 10_000
GRANTS = 100_000
NETWORKS = 1_000
OVERRIDES = 1_000  # domains with a require-sender-match override
DECIDE_FOR = 4.0  # seconds of decisions: longer than one full reload
ARRIVAL_GAP = 0.0005


def populate(store: Store) -> dict[str, float]:
    """Bulk insert the whole data set in one transaction; returns timings."""
    started = time.perf_counter()
    with store.write() as session:
        editing.set_setting(session, "require-auth-local", "on")
        session.execute(insert(Domain), [{"name": f"d{i}.example"} for i in range(DOMAINS)])
        ids: dict[str, int] = dict(session.execute(select(Domain.name, Domain.id)).all())
        session.execute(
            insert(DomainSetting),
            [
                {"domain_id": ids[f"d{i}.example"], "key": "require-sender-match", "value": "on"}
                for i in range(0, DOMAINS, DOMAINS // OVERRIDES)
            ],
        )
        session.execute(
            insert(SendAsGrant),
            [
                {
                    "login": f"user{i}",
                    "target": f"@d{i % DOMAINS}.example"
                    if i % 10 == 0
                    else f"u{i}@d{i % DOMAINS}.example",
                }
                for i in range(GRANTS)
            ],
        )
        session.execute(
            insert(TrustedNetwork),
            [
                {"cidr": f"10.{i // 256}.{i % 256}.0/24", "comment": f"net {i}"}
                for i in range(NETWORKS // 2)
            ]
            + [
                {"cidr": f"2001:db8:{i:x}::/48", "comment": f"net6 {i}"}
                for i in range(NETWORKS - NETWORKS // 2)
            ],
        )
    return {"populate_s": time.perf_counter() - started}


# ru_maxrss survives fork+exec on Linux (the child starts with its parent's, this
# benchmark's, high-water mark), so the child reads its own VmHWM, reset by exec.
CHILD = """
import json, sys, time
from pathlib import Path
def hwm_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import Milter  # what a milter process has loaded before its snapshot
import smtpauth_milter.daemon.server
from smtpauth_milter.store.engine import Store
before = hwm_mib()
store = Store(sys.argv[1])
started = time.perf_counter()
snapshot = store.load_snapshot()
took = time.perf_counter() - started
store.dispose()
peak = hwm_mib()
print(json.dumps({"load_s": took, "rss_before_mib": before, "peak_rss_mib": peak,
                  "domains": len(snapshot.domains), "logins": len(snapshot.grants),
                  "networks": len(snapshot.networks.networks)}))
"""


def load_in_fresh_process(url: str) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, url], capture_output=True, text=True, check=True
    )
    return dict(json.loads(result.stdout))


def requests() -> list[tuple[Request, str]]:
    """A mix: forged local senders, owned and granted senders, trusted clients, remote mail."""
    mix: list[tuple[Request, str]] = []
    for i in range(0, GRANTS, GRANTS // 500):
        domain = f"d{i % DOMAINS}.example"
        mix += [
            (Request(parse_ip("203.0.113.9"), None, f"<u{i}@{domain}>"), "<x@remote.test>"),
            (Request(parse_ip("203.0.113.9"), f"user{i}", f"<u{i}@{domain}>"), "<x@r.test>"),
            (Request(parse_ip("203.0.113.9"), f"user{i + 1}", f"<u{i}@{domain}>"), "<x@r.test>"),
            (Request(parse_ip(f"10.1.{i % 256}.9"), None, f"<u{i}@{domain}>"), "<x@r.test>"),
            (Request(parse_ip("2001:db8:ffff::1"), None, "<a@remote.test>"), "<b@d1.example>"),
        ]
    return mix


def decision_latencies(store: Store, reloading: bool) -> dict[str, float]:
    snapshot = store.load_snapshot()
    mix = requests()
    stop = threading.Event()
    reloads = 0

    def reload_forever() -> None:
        nonlocal reloads
        while not stop.is_set():
            store.load_snapshot()
            reloads += 1

    loader = threading.Thread(target=reload_forever, daemon=True)
    if reloading:
        loader.start()
        time.sleep(0.05)  # let the first reload get going
    samples: list[float] = []
    clock = time.perf_counter_ns
    until = time.monotonic() + DECIDE_FOR
    n = 0
    while time.monotonic() < until or (reloading and reloads < 1):
        request, rcpt = mix[n % len(mix)]
        n += 1
        started = clock()
        decide(snapshot, request, rcpt)
        samples.append((clock() - started) / 1000)
        time.sleep(ARRIVAL_GAP)  # requests arrive; the GIL is handed back meanwhile
    stop.set()
    if reloading:
        loader.join()
    samples.sort()
    return {
        "p50_us": samples[len(samples) // 2],
        "p99_us": samples[int(len(samples) * 0.99)],
        "max_us": samples[-1],
        "reloads": reloads,
        "decisions": len(samples),
    }


@contextmanager
def store_url(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'scale.sqlite'}"
        return
    with PgServer(workdir / "pg") as server:
        server.create_database("scale")
        yield server.url("scale")


def bench(kind: str, runs: int) -> dict[str, Any]:
    with (
        tempfile.TemporaryDirectory(prefix="snapshot-scale-") as tmp,
        store_url(kind, Path(tmp)) as url,
    ):
        store = Store(url)
        try:
            store.create()  # what `smtpauth-milter db init` does
            timings = populate(store)
            results = []
            for _ in range(runs):
                load = load_in_fresh_process(url)
                idle = decision_latencies(store, reloading=False)
                busy = decision_latencies(store, reloading=True)
                results.append({"load": load, "idle": idle, "reload": busy})
                print(kind, json.dumps(results[-1]), file=sys.stderr)
        finally:
            store.dispose()
    return {"store": kind, **timings, "runs": results}


def spread(values: list[float], digits: int = 2) -> str:
    """median (min-max)"""
    return (
        f"{statistics.median(values):.{digits}f} "
        f"({min(values):.{digits}f}-{max(values):.{digits}f})"
    )


def table(report: list[dict[str, Any]]) -> str:
    rows = [
        "| store | load_snapshot() s | peak RSS MiB | RSS before load MiB | decide p50 us | "
        "decide p99 us | p99 during reload us | max during reload us | p99 ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in report:
        runs = entry["runs"]

        def col(section: str, key: str, runs: list[dict[str, Any]] = runs) -> list[float]:
            return [float(run[section][key]) for run in runs]

        ratio = [run["reload"]["p99_us"] / run["idle"]["p99_us"] for run in runs]
        rows.append(
            f"| {entry['store']} | {spread(col('load', 'load_s'))} "
            f"| {spread(col('load', 'peak_rss_mib'), 0)} "
            f"| {spread(col('load', 'rss_before_mib'), 0)} "
            f"| {spread(col('idle', 'p50_us'), 1)} | {spread(col('idle', 'p99_us'), 1)} "
            f"| {spread(col('reload', 'p99_us'), 0)} | {spread(col('reload', 'max_us'), 0)} "
            f"| {spread(ratio, 1)} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    kinds = ["sqlite", "postgresql"] if args.store == "both" else [args.store]
    report = [bench(kind, args.runs) for kind in kinds]
    print(
        f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
        f"{platform.platform()}; switchinterval={sys.getswitchinterval()}s; "
        f"self maxrss={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB"
    )
    for entry in report:
        print(f"{entry['store']}: populate {entry['populate_s']:.1f}s")
    print(table(report))


if __name__ == "__main__":
    main()
