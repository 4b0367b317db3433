"""What the login-sync thread costs: one exchange per second, timed in process.

    python -m bench.flush_cost [--rate 2000] [--seconds 40]

The workload's sessions (bench/workload.py, 10,000 logins) go through a real
:class:`~smtpauth_milter.daemon.logins.LoginLimiter` at ``--rate`` sessions
per simulated second; after each second :meth:`LoginSync.cycle` writes the
batch to a SQLite state store and reads back the counts of the batch's logins,
as the milter's thread does.  Reported: the thread's CPU per exchange (``thread_time``),
its wall time, the rows it wrote (bucket upserts and client rows), and that CPU
spread over the second's sessions.  ``bench.compare --limits-ab`` runs it with
the rate it measured.
"""

from __future__ import annotations

import argparse
import gc
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from smtpauth_milter.core.loginpolicy import login_key
from smtpauth_milter.core.networks import parse_ip
from smtpauth_milter.core.policy import Request, Verdict, decide
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.core.window import BUCKETS
from smtpauth_milter.daemon.logins import LoginLimiter
from smtpauth_milter.daemon.loginsync import LoginSync
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.loginstate import Batch
from tests.harness.pgserver import PgServer
from tests.support.clock import Clock

from .workload import REALISTIC, Scenario, build_store, load_snapshot, scenarios

DBNAME = "flush"
Decided = list[tuple[Request, list[tuple[str, Verdict]]]]


def fill(target: Path | PgServer, plays: list[Scenario], now: float, minutes: int) -> int:
    """The last ``minutes`` of an hour in which every login sent a message each minute and
    tried a sender it does not own every 6th (one row per login, kind and 60 s bucket: the
    shipped 1h windows), as the state store holds them then.  Returns the rows added."""
    logins = sorted({login_key(sc.login) for sc in plays if sc.login})
    clients = {login_key(sc.login): sc.client for sc in plays if sc.login}
    width = 3600 // BUCKETS
    last = int(now) // width
    counts = [
        (login, kind, width, last - k, 1)
        for login in logins
        for kind in ("messages", "recipients", "mismatches")
        for k in range(1, minutes + 1)
        if kind != "mismatches" or k % 6 == 0  # 10 an hour: under login-max-mismatches 20/1h
    ]
    seen = [
        (login, width, last - k, clients[login]) for login in logins for k in range(1, minutes + 1)
    ]
    if isinstance(target, PgServer):
        with target.connect(DBNAME) as pg, pg.cursor() as cursor:
            for table, rows in (("login_count", counts), ("login_client", seen)):
                with cursor.copy(f"COPY {table} FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            cursor.execute("ANALYZE")  # as autovacuum would have after that hour
    else:
        with sqlite3.connect(target) as db:
            db.executemany("INSERT INTO login_count VALUES (?, ?, ?, ?, ?)", counts)
            db.executemany("INSERT INTO login_client VALUES (?, ?, ?, ?)", seen)
    return len(counts) + len(seen)


def measure(
    snapshot: Snapshot,
    plays: list[Scenario],
    rate: float,
    seconds: int,
    minutes: int = 0,
    pg: bool = False,
) -> list[tuple[float, float, int]]:
    """(CPU s, wall s, rows written) of each exchange, one per simulated second; the state
    store holds ``minutes`` of earlier traffic of every login first (:func:`fill`).
    ``pg``: on a private PostgreSQL (this process's CPU only, not the server's)."""
    decided: Decided = []
    for sc in plays:
        request = Request(parse_ip(sc.client), sc.login, sc.sender)
        decided.append((request, [(r, decide(snapshot, request, r)) for r in sc.rcpts]))
    gc.collect()
    gc.freeze()  # the bench's own objects (the decided sessions): not the milter's heap
    clock = Clock(time.time())
    limiter = LoginLimiter("milter@bench", clock=clock)
    written: list[int] = []
    take = limiter.take

    def counted_take() -> Batch:
        batch = take()
        written.append(len(batch.counts) + len(batch.clients))
        return batch

    limiter.take = counted_take  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="smtpauth-flush-") as tmp, ExitStack() as stack:
        target: Path | PgServer = Path(tmp) / "state.sqlite"
        url = f"sqlite:///{target}"
        if pg:
            target = stack.enter_context(PgServer(Path(tmp) / "pg"))
            target.create_database(DBNAME)
            url = target.url(DBNAME)
        Store(url).create()
        if minutes:
            fill(target, plays, clock.now, minutes)
        state = Store(url, serving=True)
        sync = LoginSync(limiter, state, clock=clock)
        out: list[tuple[float, float, int]] = []
        n = 0
        try:
            for _ in range(seconds):
                for _ in range(int(rate)):
                    request, rcpts = decided[n % len(decided)]
                    n += 1
                    first = True
                    for rcpt, verdict in rcpts:
                        got = limiter.apply(snapshot, request, verdict, first, None, None, rcpt)
                        first = first and got.refuses
                clock.now += 1.0
                cpu0, wall0 = time.thread_time(), time.perf_counter()
                if not sync.cycle():
                    raise RuntimeError("the exchange with the state store failed")
                out.append((time.thread_time() - cpu0, time.perf_counter() - wall0, written[-1]))
        finally:
            state.dispose()
            gc.unfreeze()
    return out


def report(
    snapshot: Snapshot,
    plays: list[Scenario],
    rate: float,
    seconds: int = 40,
    minutes: int = 0,
    pg: bool = False,
) -> list[str]:
    cycles = measure(snapshot, plays, rate, seconds, minutes, pg)
    steady = cycles[len(cycles) // 2 :]  # every login has counts in its windows by then
    cpu = statistics.median(c for c, _w, _r in steady)
    wall = statistics.median(w for _c, w, _r in steady)
    rows = statistics.median(r for _c, _w, r in steady)
    return [
        f"login-sync exchange ({'PostgreSQL' if pg else 'SQLite'}, in process,"
        f" {rate:.0f} sessions/s, {seconds} s"
        f"{f' after {minutes} filled minutes' if minutes else ''}; median"
        f" of the last {len(steady)}): CPU {1000 * cpu:.1f} ms per exchange (max"
        f" {1000 * max(c for c, _w, _r in steady):.1f}), wall {1000 * wall:.1f} ms,"
        f" {rows:.0f} rows written per second; {1e6 * cpu / rate:.1f} µs CPU per session",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=2000.0, help="sessions per second")
    parser.add_argument("--seconds", type=int, default=40, help="exchanges (simulated seconds)")
    parser.add_argument("--pg", action="store_true", help="a private PostgreSQL, not SQLite")
    parser.add_argument(
        "--fill-minutes", type=int, default=0, help="earlier minutes of every login's traffic"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="smtpauth-flush-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'store.sqlite'}"
        build_store(url, REALISTIC)
        snapshot = load_snapshot(url)
    plays = scenarios(snapshot, REALISTIC)
    print("\n".join(report(snapshot, plays, args.rate, args.seconds, args.fill_minutes, args.pg)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
