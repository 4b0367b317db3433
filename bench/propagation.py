"""How fast a change reaches running milters, and what their polling costs PostgreSQL.

    python -m bench.propagation [--changes 10] [--refresh 0.5] [--idle 4]

Starts a private PostgreSQL with pg_stat_statements (``tests.harness.pgstatements``) and two
``smtpauth-milter run`` processes on it (``tests.harness.milter``), then:

- ``--changes`` times flips ``require-auth-local`` with the CLI's own entry point
  and measures, per milter, the seconds until its verdict for an unauthenticated
  local sender changes (sessions over the milter protocol, back to back);
- counts the statements both milters send during ``--idle`` seconds with no
  change: serial polls per milter per second (one per ``--refresh`` expected),
  anything else (none expected), connections held.

The tests prove the properties (tests/store/test_propagation.py; the 2 s bound
through Postfix in tests/integration/test_milter_lifecycle.py); this prints figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from bench.driver import run_blocking
from bench.workload import Scenario
from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.store.engine import Store
from tests.harness.milter import MilterProcess, MilterProcesses
from tests.harness.pgstatements import StatementsPgServer
from tests.harness.waiting import wait_until

SESSION = Scenario("203.0.113.9", 40000, None, "<alice@example.com>", ("<x@remote.test>",), ("c",))


def cli(url: str, *args: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        if run_cli(["--db", url, *args]) != 0:
            raise SystemExit(f"smtpauth-milter {' '.join(args)} failed")


def reply(milter: MilterProcess) -> str:
    """``c`` (continue) or the RCPT reply code of an unauthenticated local sender."""
    return run_blocking(milter.socket, SESSION, timeout=10)[-1][:3]


def propagation(url: str, milters: list[MilterProcess], changes: int) -> list[float]:
    seconds: list[float] = []
    for n in range(changes):
        on = n % 2 == 0
        cli(url, "settings", "set", "require-auth-local", "on" if on else "off")
        changed = time.monotonic()
        for milter in milters:
            want = "530" if on else "c"
            wait_until(lambda m=milter, w=want: reply(m) == w, 30, "the change")  # type: ignore[misc]
            seconds.append(time.monotonic() - changed)
    return seconds


def idle_cost(
    server: StatementsPgServer, dbname: str, idle: float
) -> tuple[dict[str, int], float, int]:
    with server.connect() as admin:
        admin.execute("SELECT pg_stat_statements_reset()")
        started = time.monotonic()
        time.sleep(idle)  # measuring an idle interval: nothing to wait for
        rows = admin.execute(
            "SELECT query, calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid "
            "WHERE d.datname = %s AND s.query NOT LIKE %s",
            (dbname, "%pg_stat_statements%"),
        ).fetchall()
        elapsed = time.monotonic() - started
        found = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (dbname,)
        ).fetchone()
    calls: dict[str, int] = {}
    for query, number in rows:
        calls[str(query)] = calls.get(str(query), 0) + int(str(number))
    return calls, elapsed, int(str(found[0])) if found else -1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--refresh", type=float, default=0.5)
    parser.add_argument("--idle", type=float, default=4.0, help="seconds of idle polling")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-propagation-") as root:
        server = StatementsPgServer(Path(root) / "pg")
        server.start()
        try:
            with server.connect() as conn:
                conn.execute("CREATE EXTENSION pg_stat_statements")
            server.create_database("propagation")
            url = server.url("propagation")
            store = Store(url)
            store.upgrade()
            store.dispose()
            cli(url, "domain", "add", "example.com")
            with MilterProcesses(Path(root)) as group:
                milters = [group.start(url, "--refresh", str(args.refresh)) for _ in range(2)]
                took = propagation(url, milters, args.changes)
                calls, elapsed, connections = idle_cost(server, "propagation", args.idle)
                trouble = [line for m in milters for line in m.trouble()]
        except psycopg.Error as exc:
            raise SystemExit(f"PostgreSQL: {exc}") from exc
        finally:
            server.close()
    polls = sum(n for q, n in calls.items() if "FROM store_state" in q)
    others = {q: n for q, n in calls.items() if "FROM store_state" not in q}
    print(
        f"propagation over {args.changes} changes x 2 milters, --refresh {args.refresh:g}:"
        f" median {statistics.median(took):.2f}s, max {max(took):.2f}s"
    )
    print(
        f"idle {elapsed:.1f}s: {polls / elapsed / 2:.2f} serial polls per milter per second"
        f" (expected {1 / args.refresh:.2f}); other statements {others or 'none'};"
        f" connections held {connections}; trouble lines {len(trouble)}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
