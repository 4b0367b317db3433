"""Where a milter's CPU goes under load: user/system split per session and a py-spy profile.

    python -m bench.profile                       # ours, 8 connections, GIL-holding samples
    python -m bench.profile --milter noop --connections 32
    python -m bench.profile --mode wall           # every thread, waiting or not

Starts the milter as ``bench.compare`` does (same store, same driver, every
verdict checked), drives it for ``--duration`` seconds while ``py-spy record``
samples it, then prints the milter's user and system CPU per session and the
frames that hold the most samples: by themselves (self) and with what they call
(total).  ``--raw FILE`` keeps py-spy's collapsed stacks (flamegraph input).
py-spy is on PyPI (``pip install py-spy``); it needs ptrace rights (root).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from . import compare, procstat
from .workload import REALISTIC, build_store, load_snapshot, scenarios

MODES = {"gil": ["--gil"], "wall": ["--idle"], "cpu": []}


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of every thread of ``pid`` so far."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) / procstat.TICKS, int(fields[12]) / procstat.TICKS


def summarise(raw: Path, top: int) -> list[str]:
    """Self and total sample counts per frame from py-spy's collapsed stacks."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [re.sub(r":\d+\)$", ")", f) for f in frames if not f.startswith("thread ")]
        samples += n
        if frames:
            own[frames[-1]] += n
        for frame in set(frames):  # a recursive frame counts once per sample
            total[frame] += n
    out = [f"{samples} samples", "", "self %  frame"]
    out += [f"{100 * n / samples:5.1f}  {f}" for f, n in own.most_common(top)]
    out += ["", "total %  frame"]
    out += [f"{100 * n / samples:5.1f}  {f}" for f, n in total.most_common(top)]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--milter", choices=compare.NAMES, default="ours")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--drivers", type=int, default=2)
    parser.add_argument("--mode", choices=sorted(MODES), default="gil")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--native", action="store_true", help="also C frames (slower sampling)")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--raw", metavar="FILE", help="keep py-spy's collapsed stacks here")
    args = parser.parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    workdir = Path(tempfile.mkdtemp(prefix="smtpauth-profile-"))
    raw = Path(args.raw) if args.raw else workdir / "stacks.txt"
    try:
        db = f"sqlite:///{workdir / 'store.sqlite'}"
        build_store(db, REALISTIC)
        key = "profile"
        compare.SCENARIOS[key] = scenarios(load_snapshot(db), REALISTIC)
        milter = compare.milters(workdir, db, "inet")[args.milter]
        with multiprocessing.get_context("fork").Pool(args.drivers) as pool:
            milter.start()
            try:
                compare.measure(
                    pool, args.milter, milter, key, args.drivers, args.drivers, 1.0, 10**9
                )
                spy_argv = [spy, "record", "--nonblocking", "--threads", "--format", "raw"]
                spy_argv += MODES[args.mode] + (["--native"] if args.native else [])
                spy_argv += ["-r", str(args.rate), "-d", str(int(args.duration) + 1)]
                pid = procstat.serving(milter.pid)  # the child under auto-restart
                spy_argv += ["-o", str(raw), "-p", str(pid)]
                profiler = subprocess.Popen(spy_argv, stdout=subprocess.DEVNULL)
                user0, sys0 = cpu_split(pid)
                run = compare.measure(
                    pool,
                    args.milter,
                    milter,
                    key,
                    args.connections,
                    args.drivers,
                    args.duration,
                    10**9,
                )
                user1, sys1 = cpu_split(pid)
                profiler.wait(timeout=60 + args.duration)
            finally:
                milter.stop()
        per = 1000.0 / max(run.sessions, 1)
        print(
            f"{args.milter}, {args.connections} connections: {run.rate:.0f} sessions/s,"
            f" p99 {run.p99_ms:.2f} ms, wrong {run.mismatches + run.errors};"
            f" CPU ms/session user {per * (user1 - user0):.3f} system {per * (sys1 - sys0):.3f}"
            f" (under py-spy, mode {args.mode})"
        )
        print("\n".join(summarise(raw, args.top)))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
