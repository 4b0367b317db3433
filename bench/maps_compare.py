"""sender-login-maps against in-store grants: the same ownership, the same sessions.

    python -m bench.maps_compare              # texthash: and sql: (PostgreSQL), 1/8/32 connections

The realistic store of ``bench.compare`` (4,000 send-as grants) is built once
with its grants ("grants") and twice without them, the same ownership then
coming from ``sender-login-maps``: a ``texthash:`` table read with Postfix's
``postmap`` ("texthash") and a ``sql:`` map on a private PostgreSQL
("sql").  The maps answer exactly what the grants say (an address's owners
are its exact grantees plus the grantees of its ``@domain``), so every
verdict is checked against ``policy.decide`` on the grants store, for all three
milters.  The cache is warm (every session run once before measuring, TTL one
hour): the runs compare sessions/s with the target maps >= 0.90 x grants.
Cold lookups (no cache: one ``postmap -q -`` batch, or the SQL queries, per
sender) are timed separately, in process, for 500 senders that need a map.
Needs root (PostgreSQL runs as ``postgres``), ``postmap`` and PostgreSQL.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy import delete

from smtpauth_milter.core.addresses import parse_address
from smtpauth_milter.core.ownermaps import parse_map_list
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.lookups.keys import lookup_keys
from smtpauth_milter.lookups.ownership import find_owners, make_source
from smtpauth_milter.store import editing
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.models import SendAsGrant
from tests.harness.milter import ours
from tests.harness.pgserver import PgServer

from . import compare
from .compare import Run, measure, percentile
from .workload import REALISTIC, build_store, load_snapshot, scenarios

NAMES = ("grants", "texthash", "sql")
TARGET = 0.90  # maps sessions/s >= 0.90 x grants
COLD_SENDERS = 500
SQL_QUERY = "SELECT login FROM owners WHERE address = :sender"


def owner_table(grants: Mapping[str, frozenset[str]]) -> dict[str, set[str]]:
    """Address or ``@domain`` -> logins, answering in Postfix's key order what grants say."""
    table: dict[str, set[str]] = {}
    for login, targets in grants.items():
        for target in targets:
            table.setdefault(target, set()).add(login)
    for key in list(table):
        if not key.startswith("@"):
            table[key] |= table.get("@" + key.rpartition("@")[2], set())
    return table


def without_grants(source: str, target: Path, maps: str) -> str:
    """A copy of the store at ``source`` with no grants and ``sender-login-maps`` = ``maps``."""
    shutil.copy(source.removeprefix("sqlite:///"), target)
    url = f"sqlite:///{target}"
    store = Store(url)
    with store.write() as session:
        session.execute(delete(SendAsGrant))
        editing.set_setting(session, "sender-login-maps", maps)
        editing.set_setting(session, "sender-login-maps-ttl", "3600")
    store.dispose()
    return url


def write_texthash(path: Path, table: Mapping[str, set[str]]) -> Path:
    path.write_text("".join(f"{k}\t{', '.join(sorted(v))}\n" for k, v in sorted(table.items())))
    return path


def write_sql(pg: PgServer, workdir: Path, table: Mapping[str, set[str]]) -> Path:
    pg.create_database("owners")
    with pg.connect("owners") as conn:
        conn.execute("CREATE TABLE owners (address text NOT NULL, login text NOT NULL)")
        with conn.cursor() as cur:
            rows = [(k, login) for k, logins in table.items() for login in logins]
            cur.executemany("INSERT INTO owners VALUES (%s, %s)", rows)
        conn.execute("CREATE INDEX owners_address ON owners (address)")
    path = workdir / "owners.toml"
    path.write_text(f'url = "{pg.url("owners")}"\nquery = "{SQL_QUERY}"\n')
    path.chmod(0o600)
    return path


def cold_lookups(maps: str, senders: Sequence[str], settings: Settings) -> tuple[float, float]:
    """p50 and p99 in ms of one uncached lookup (every key of a sender, all maps)."""
    sources = [make_source(spec, settings) for spec in parse_map_list(maps)]
    times = []
    for sender in senders:
        probes = lookup_keys(parse_address(sender), "+")
        started = time.perf_counter()
        find_owners(sources, probes, settings.sender_login_maps_timeout)
        times.append(1000 * (time.perf_counter() - started))
    for source in sources:
        getattr(source, "dispose", lambda: None)()
    return percentile(times, 0.50), percentile(times, 0.99)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--drivers", type=int, default=2)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="smtpauth-maps-bench-"))
    workdir.chmod(0o755)
    pg = PgServer(workdir / "pg")
    try:
        return run(args, workdir, pg)
    finally:
        pg.close()
        shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path, pg: PgServer) -> int:
    etc = workdir / "postfix"
    etc.mkdir()
    (etc / "main.cf").write_text("compatibility_level = 3.6\n")
    os.environ["MAIL_CONFIG"] = str(etc)  # postmap (in the milters too) reads this main.cf
    grants_url = f"sqlite:///{workdir / 'grants.sqlite'}"
    build_store(grants_url, REALISTIC)
    snapshot = load_snapshot(grants_url)
    table = owner_table(snapshot.grants)
    pg.start()
    texthash = f"texthash:{write_texthash(workdir / 'owners', table)}"
    sql = f"sql:{write_sql(pg, workdir, table)}"
    urls = {
        "grants": grants_url,
        "texthash": without_grants(grants_url, workdir / "texthash.sqlite", texthash),
        "sql": without_grants(grants_url, workdir / "sql.sqlite", sql),
    }
    key = "maps"
    compare.SCENARIOS[key] = scenarios(snapshot, REALISTIC, count=4000)  # warm-up: each once
    procs = {
        name: ours(url, workdir / f"{name}.log", "--log-level", "info")
        for name, url in urls.items()
    }
    runs: list[Run] = []
    with multiprocessing.get_context("fork").Pool(args.drivers) as pool:
        try:
            for name, proc in procs.items():
                proc.start()
                # warm: every scenario once, in order, on one connection
                warm = measure(pool, name, proc, key, 1, 1, 600, 4000, check=True)
                print(f"# warm-up {name}: {warm.sessions} sessions, wrong {warm.mismatches}")
            for c in args.connections:
                for rnd in range(args.rounds):
                    order = NAMES if rnd % 2 == 0 else NAMES[::-1]
                    for name in order:
                        procs[name].log.truncate()
                        r = measure(
                            pool,
                            name,
                            procs[name],
                            key,
                            c,
                            args.drivers,
                            args.duration,
                            10**9,
                            True,
                        )
                        runs.append(r)
                        print(f"  c={c:<3} {name:8} {r.rate:7.0f}/s p50 {r.p50_ms:.2f} "
                              f"p99 {r.p99_ms:.2f} ms wrong {r.mismatches} errors {r.errors}",
                              flush=True)  # fmt: skip
        finally:
            for proc in procs.values():
                proc.stop()
    rng = random.Random(3)  # noqa: S311 - a reproducible sample
    needing = sorted(k for k in table if not k.startswith("@"))
    senders = rng.sample(needing, COLD_SENDERS)
    settings = Settings.resolve({"postfix-config-dir": str(etc)})
    cold = {
        name: cold_lookups(maps, senders, settings)
        for name, maps in (("texthash", texthash), ("sql", sql))
    }
    print("\n".join(report(runs, args.connections, cold)))
    return 0


def report(
    runs: list[Run], connections: Sequence[int], cold: Mapping[str, tuple[float, float]]
) -> list[str]:
    lines = [
        "| conns | grants sessions/s | texthash sessions/s | ratio"
        " | sql sessions/s | ratio | wrong |",
        "|---:|---:|---:|---|---:|---|---:|",
    ]
    for c in connections:
        rate = {
            n: statistics.median(r.rate for r in runs if r.milter == n and r.connections == c)
            for n in NAMES
        }
        wrong = sum(r.mismatches + r.errors for r in runs if r.connections == c)
        ratios = {n: rate[n] / rate["grants"] for n in ("texthash", "sql")}
        lines.append(
            f"| {c} | {rate['grants']:.0f} | {rate['texthash']:.0f} | {ratios['texthash']:.3f} "
            f"{'PASS' if ratios['texthash'] >= TARGET else 'FAIL'} | {rate['sql']:.0f} | "
            f"{ratios['sql']:.3f} {'PASS' if ratios['sql'] >= TARGET else 'FAIL'} | {wrong} |"
        )
    lines += ["", "| cold lookup (no cache) | p50 ms | p99 ms |", "|---|---:|---:|"]
    lines += [f"| {name} | {p50:.2f} | {p99:.2f} |" for name, (p50, p99) in cold.items()]
    return lines


if __name__ == "__main__":
    sys.exit(main())
