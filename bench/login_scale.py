"""100,000 active logins: what the per-login limits hold in memory and in the state store.

    python -m bench.login_scale [--logins 100000] [--pg]

A real :class:`~smtpauth_milter.daemon.logins.LoginLimiter` and
:class:`~smtpauth_milter.daemon.loginsync.LoginSync` on a SQLite state store
(``--pg``: a private PostgreSQL), on a simulated clock with the shipped limits
(1 h windows): every login sends one message (one accepted recipient, from a
client address of its own) every 10 minutes for 70 minutes, then nothing for
62 minutes.  The exchange runs once per simulated second and prunes once a
minute, as the milter's thread does.  Reported at points of that time: logins
in memory, the Python memory the limiter holds (tracemalloc, this process), the
rows of the state tables, and the CPU of that point's exchange (a pruning one);
at the end, how many exchanges failed (a failed one keeps its batch for the
next, as in the milter) and the longest.  "Bounded" means: flat from 60
minutes on (what leaves the window is deleted as fast as it comes), and back
to nothing once the window has passed.
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from smtpauth_milter.core.networks import parse_ip
from smtpauth_milter.core.policy import Action, Request, Rule, Verdict
from smtpauth_milter.daemon.logins import LoginLimiter
from smtpauth_milter.daemon.loginsync import LoginSync
from smtpauth_milter.store.engine import Store
from tests.harness.pgserver import PgServer
from tests.support.clock import Clock

from .workload import REALISTIC, build_store, load_snapshot

STEP = 1  # simulated seconds per exchange: the milter's interval
EVERY = 600  # each login sends one message every 10 minutes
BUSY = 70 * 60  # seconds of traffic
IDLE = 62 * 60  # then none: one window (1 h) and a bucket more
REPORT_AT = {10 * 60, 30 * 60, 60 * 60, BUSY, BUSY + IDLE}


def _rows(target: Path | PgServer, dbname: str) -> tuple[int, int]:
    query = "SELECT (SELECT count(*) FROM login_count), (SELECT count(*) FROM login_client)"
    row: Any
    if isinstance(target, PgServer):
        with target.connect(dbname) as pg, pg.cursor() as cursor:
            cursor.execute(query)
            row = cursor.fetchone()
    else:
        with sqlite3.connect(f"file:{target}?mode=ro", uri=True) as db:
            row = db.execute(query).fetchone()
    return int(row[0]), int(row[1])


def run(logins: int, pg: bool) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="smtpauth-scale-") as tmp, ExitStack() as stack:
        url = f"sqlite:///{Path(tmp) / 'store.sqlite'}"
        build_store(url, REALISTIC)  # the shipped limits, and the workload's domains
        snapshot = load_snapshot(url)
        target: Path | PgServer = Path(tmp) / "state.sqlite"
        state_url = f"sqlite:///{target}"
        if pg:
            target = stack.enter_context(PgServer(Path(tmp) / "pg"))
            target.create_database("scale")
            state_url = target.url("scale")
        Store(state_url).create()
        state = Store(state_url, serving=True)
        stack.callback(state.dispose)
        accepted = Verdict(Action.CONTINUE, Rule.SENDER_OWNED, domain="d00000.example")
        requests = [
            Request(parse_ip(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"),
                    f"user{i}@d{i % REALISTIC.domains:05d}.example",
                    f"user{i}@d{i % REALISTIC.domains:05d}.example")
            for i in range(logins)
        ]  # fmt: skip
        clock = Clock(float(int(time.time()) // 3600 * 3600))
        start = clock.now
        limiter = LoginLimiter("milter@bench", clock=clock)
        sync = LoginSync(limiter, state, clock=clock)
        gc.collect()
        gc.freeze()  # the bench's own objects: not what is measured
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        per_step = logins * STEP // EVERY
        lines = [
            f"{logins:,} logins, each one message every {EVERY // 60} min for {BUSY // 60} min,"
            f" then {IDLE // 60} min without; {'PostgreSQL' if pg else 'SQLite'} state store",
            "",
            "| minute | logins in memory | limiter memory MiB | login_count rows"
            " | login_client rows | exchange CPU ms |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        n, failed, longest = 0, [], 0.0
        for elapsed in range(STEP, BUSY + IDLE + STEP, STEP):
            if elapsed <= BUSY:
                for _ in range(per_step):
                    request = requests[n % logins]
                    n += 1
                    limiter.apply(snapshot, request, accepted, True, None, None, "x@example.net")
            clock.now = start + elapsed
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            if not sync.cycle():
                failed.append(f"minute {elapsed / 60:.1f}")
            cpu = time.thread_time() - cpu0
            longest = max(longest, time.perf_counter() - wall0)
            if elapsed in REPORT_AT:
                memory = (tracemalloc.get_traced_memory()[0] - base) / 2**20
                count_rows, client_rows = _rows(target, "scale")
                lines.append(
                    f"| {elapsed // 60} | {limiter.active_logins():,} | {memory:.1f}"
                    f" | {count_rows:,} | {client_rows:,} | {1000 * cpu:.0f} |"
                )
                print(lines[-1], file=sys.stderr, flush=True)  # progress
        tracemalloc.stop()
        gc.unfreeze()
    where = f" ({', '.join(failed[:5])})" if failed else ""
    lines.append(f"\nexchanges: {BUSY + IDLE} (one a second), failed: {len(failed)}{where};"
                 f" the longest took {longest:.2f} s")  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logins", type=int, default=100_000)
    parser.add_argument("--pg", action="store_true", help="a private PostgreSQL, not SQLite")
    args = parser.parse_args(argv)
    print("\n".join(run(args.logins, args.pg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
