"""End to end through a private Postfix: messages/s with no milter, the no-op milter and ours.

    python -m bench.postfix_e2e [--messages 2000] [--sessions 8] [--rounds 3]

Postfix's own ``smtp-source`` sends ``--messages`` messages over ``--sessions``
parallel SMTP sessions to a private Postfix (``tests.harness.mta``, the one the
integration tests use) that delivers to ``discard:``; milters are started with
``tests.harness.milter``.  Each configuration is run
``--rounds`` times, alternating: no milter, no-op and ours on an inet socket and
on a unix socket, and the no-op negotiating "skip DATA" (the 37 ms
stall) on both sockets.  Every message must be accepted (a reject or tempfail
in the log fails the run).  Needs root, postfix and dovecot.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.harness.milter import SOCKET, MilterProcess, ours
from tests.harness.mta import Sandbox, libmilter_socket, start_sandbox

from . import procstat
from .compare import REPO, machine
from .workload import REALISTIC, build_store

SMTP_SOURCE = "/usr/sbin/smtp-source"
SENDER = "bench@remote.test"  # not local: every message is accepted and delivered
RCPT = "someone@d00001.example"

# cleanup(8) noticing the queue file system's clock a second ahead of the host's
# (the sandbox's disk): about file time stamps, not about any message.
CLOCK_WARNING = re.compile(r"file system clock is \d+ seconds? ahead|resetting file time stamps")


@dataclass
class Config:
    label: str
    postfix_spec: str | None  # None: no milter
    milter: MilterProcess | None = None  # started by main()


@dataclass
class Result:
    label: str
    rate: float
    cpu_ms: float
    seconds: float


def configs(sandbox: Sandbox, db: str, workdir: Path) -> list[Config]:
    """No milter; ours (logging at info, as deployed), the no-op and the no-op skipping DATA."""
    out = [Config("no milter", None)]
    noop = [sys.executable, "-m", "bench.noop_milter", SOCKET]
    for kind in ("inet", "unix"):
        for label in ("no-op", "ours", "no-op, skips DATA"):
            name = label.split(",")[0].replace("-", "") + ("-nodata" if "DATA" in label else "")
            unix = sandbox.unix_milter_socket(name)
            spec = sandbox.inet_milter_socket() if kind == "inet" else unix
            socket, log = libmilter_socket(spec), workdir / f"{name}-{kind}.log"
            if label == "ours":
                milter = ours(db, log, "--log-level", "info", socket=socket, postfix_group=True)
            else:
                argv = [*noop, "--skip-data"] if "DATA" in label else noop
                milter = MilterProcess(argv, log, socket, postfix_group=True, cwd=REPO)
            out.append(Config(f"{label} ({kind})", spec, milter))
    return out


def send(port: int, messages: int, sessions: int, size: int) -> float:
    argv = [
        SMTP_SOURCE, "-s", str(sessions), "-m", str(messages), "-l", str(size),
        "-f", SENDER, "-t", RCPT, "-M", "client.bench.test", f"127.0.0.1:{port}",
    ]  # fmt: skip
    t0 = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0 or done.stderr.strip():
        raise RuntimeError(f"smtp-source failed: {done.returncode} {done.stderr[-500:]}")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=8, help="parallel SMTP sessions")
    parser.add_argument("--size", type=int, default=1024, help="message length in bytes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", nargs="*", help="only the configurations whose label has this")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="smtpauth-e2e-"))
    (workdir / "mta").mkdir()
    sandbox = start_sandbox(workdir / "mta")
    results: list[Result] = []
    cfgs: list[Config] = []
    try:
        db = f"sqlite:///{workdir / 'store.sqlite'}"
        build_store(db, REALISTIC)
        cfgs = configs(sandbox, db, workdir)
        if args.only:
            cfgs = [c for c in cfgs if c.milter is None or any(o in c.label for o in args.only)]
        for cfg in cfgs:
            if cfg.milter is not None:
                cfg.milter.start()
        send(sandbox.port, 200, args.sessions, args.size)  # warm-up
        for rnd in range(args.rounds):
            for cfg in cfgs if rnd % 2 == 0 else cfgs[::-1]:
                sandbox.postfix.use_milter(cfg.postfix_spec)
                send(sandbox.port, 50, args.sessions, args.size)  # new smtpd processes
                pid = cfg.milter.pid if cfg.milter else None
                cpu0 = procstat.cpu_seconds(pid) if pid else 0.0
                mark = sandbox.maillog.mark()
                seconds = send(sandbox.port, args.messages, args.sessions, args.size)
                cpu = (procstat.cpu_seconds(pid) - cpu0) if pid else 0.0
                found = sandbox.maillog.find(r"reject|milter-|warning|fatal|panic", mark)
                bad = [line for line in found if not CLOCK_WARNING.search(line)]
                if bad:
                    raise RuntimeError(f"{cfg.label}: {bad[:3]}")
                result = Result(
                    cfg.label, args.messages / seconds, 1000 * cpu / args.messages, seconds
                )
                results.append(result)
                print(f"  round {rnd} {cfg.label:28} {result.rate:7.1f} msg/s"
                      f"  milter CPU {result.cpu_ms:.3f} ms/msg", flush=True)  # fmt: skip
    finally:
        for cfg in cfgs:
            if cfg.milter is not None:
                cfg.milter.stop()
        sandbox.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print("\n".join(report(results, cfgs, args)))
    return 0


def report(results: list[Result], cfgs: list[Config], args: argparse.Namespace) -> list[str]:
    postfix = subprocess.run(
        ["postconf", "-d", "-h", "mail_version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    lines = [
        *machine(),
        f"Postfix {postfix}; smtp-source -s {args.sessions} -m {args.messages} -l {args.size};"
        f" {args.rounds} alternating rounds",
        "",
        "| configuration | msg/s (median) | min-max | milter CPU ms/msg | vs no-op, same socket |",
        "|---|---:|---|---:|---:|",
    ]
    med = {c.label: statistics.median(r.rate for r in results if r.label == c.label) for c in cfgs}
    for cfg in cfgs:
        mine = [r for r in results if r.label == cfg.label]
        kind = cfg.label.rpartition("(")[2].rstrip(")")
        base = med.get(f"no-op ({kind})")
        ratio = f"{med[cfg.label] / base:.3f}" if base and cfg.milter else ""
        lines.append(
            f"| {cfg.label} | {med[cfg.label]:.1f} | {min(r.rate for r in mine):.1f}-"
            f"{max(r.rate for r in mine):.1f} | {statistics.median(r.cpu_ms for r in mine):.3f}"
            f" | {ratio} |"
        )
    return lines


if __name__ == "__main__":
    sys.exit(main())
