"""Soak: many sessions at 32 connections while a writer changes settings every second.

    python -m bench.soak [--sessions 1000000] [--connections 32] [--duration 900]
                         [--db URL] [--socket-kind inet|unix]
                         [--out bench/results/soak-last-run.json]

Starts one ``smtpauth-milter run`` through the one harness (``tests.harness.milter``;
SQLite store in a temporary directory unless ``--db`` is given), waits until it
loaded its first snapshot, then runs sessions as Postfix does (one milter
connection per SMTP session: negotiate, connect, helo, mail, rcpt, abort,
quit) from ``--connections`` concurrent clients, spread over worker processes
so the Python client is not the bottleneck.  Meanwhile a writer flips
``require-auth-local`` and ``require-sender-match`` once a second through the
same store API the CLI uses, recording when each change started and committed.

Every verdict is checked afterwards against the settings that could have been
in force during that request: a state counts from the moment its write began
until 2 s (the documented propagation window) after the next write committed.
Reported: sessions, rate, wrong verdicts, client errors, milter crashes (exit
status, and the harness's trouble lines: errors or tracebacks in its log), and
the milter's RSS at start and end.  Stops at ``--sessions`` or ``--duration``.
"""

from __future__ import annotations

import argparse
import bisect
import json
import multiprocessing as mp
import random
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

from bench.driver import run_blocking
from bench.workload import Scenario
from smtpauth_milter.store import editing
from smtpauth_milter.store.engine import Store
from tests.harness.milter import MilterProcess, ours
from tests.harness.waiting import wait_until

RESULTS = Path(__file__).resolve().parent / "results"
PROPAGATION = 2.0  # docs/operations.md: a change reaches every milter within 2 seconds
PER_LOGIN = 20  # sessions per login at most (one recipient each): under every default limit
RECORD = struct.Struct("!ddBH")  # t0, t1, case, reply code (0 = continue, 1 = client error)

# (sender, login, rcpt): the cases each session picks from; {n} is the session's login
# number: a login has at most PER_LOGIN sessions, so no per-login limit is ever crossed
# with the shipped defaults (docs/policy.md#stolen-logins: 20 mismatches, 200 messages).
CASES = [
    ("alice@example.com", None, "bob@evil.test"),  # 0 unauthenticated local sender
    ("alice{n}@example.com", "alice{n}@example.com", "bob@evil.test"),  # 1 owner
    ("alice@example.com", "mallory{n}@example.com", "bob@evil.test"),  # 2 someone else's login
    ("postmaster@example.com", None, "bob@evil.test"),  # 3 role sender, no login
    ("someone@elsewhere.test", None, "bob@example.com"),  # 4 non-local sender
    ("ALICE+tag@Example.COM", None, "carol@example.com"),  # 5 local -> local, no login
]


@dataclass(frozen=True)
class State:
    require_auth_local: bool
    require_sender_match: bool


def expected_code(case: int, state: State) -> int:
    """The envelope decision (docs/policy.md) for the soak's settings; 0 means continue."""
    _sender, login, _rcpt = CASES[case]
    if case == 4:
        return 0
    if login is not None:
        return 553 if state.require_sender_match and case == 2 else 0
    if case == 3:
        return 530  # require-auth-role is on by default
    return 530 if state.require_auth_local else 0


# --- the writer ------------------------------------------------------------------


def writer(url: str, stop: threading.Event, timeline: list[tuple[float, float, State]]) -> None:
    store = Store(url)
    rng = random.Random(7)  # noqa: S311 - a test schedule
    state = timeline[-1][2]
    while not stop.wait(1.0):
        state = State(rng.random() < 0.5, rng.random() < 0.5)
        began = time.monotonic()
        with store.write() as session:
            editing.set_setting(
                session, "require-auth-local", "on" if state.require_auth_local else "off"
            )
            editing.set_setting(
                session, "require-sender-match", "on" if state.require_sender_match else "off"
            )
        timeline.append((began, time.monotonic(), state))
    store.dispose()


class Timeline:
    """Which states could have been in force during a request, found by bisection.

    State j counts from the start of its write until PROPAGATION after the next
    write committed; both ends grow with j, so the answer is a contiguous range.
    """

    def __init__(self, timeline: list[tuple[float, float, State]]) -> None:
        self.states = [state for _b, _c, state in timeline]
        self.began = [began for began, _c, _s in timeline]
        self.superseded = [committed + PROPAGATION for _b, committed, _s in timeline[1:]]
        self.superseded.append(float("inf"))

    def possible(self, t0: float, t1: float) -> list[State]:
        first = bisect.bisect_left(self.superseded, t0)
        last = bisect.bisect_right(self.began, t1)
        return self.states[first:last]


# --- the clients -------------------------------------------------------------------


def one_session(socket_spec: str, case: int, n: int = 0) -> int:
    """The RCPT's reply code (0 = continue; 2 = the session ended before RCPT)."""
    sender, login, rcpt = (x.format(n=n) if x else x for x in CASES[case])
    assert sender is not None and rcpt is not None
    scenario = Scenario("203.0.113.9", 40000, login, f"<{sender}>", (f"<{rcpt}>",), ("c",))
    *before, last = run_blocking(socket_spec, scenario, timeout=30)
    if any(verdict != "c" for verdict in before) or (last != "c" and not last[:3].isdigit()):
        return 2
    return 0 if last == "c" else int(last[:3])


def worker(
    socket_spec: str,
    threads: int,
    budget: Synchronized[int],
    deadline: float,
    out_path: str,
    seed: int,
    logins: int,
) -> None:
    lock = threading.Lock()
    records: list[bytes] = []

    def loop(thread_seed: int) -> None:
        rng = random.Random(thread_seed)  # noqa: S311
        while time.monotonic() < deadline:
            with budget.get_lock():
                if budget.value <= 0:
                    return
                budget.value -= 1
                n = budget.value % logins
            case = rng.randrange(len(CASES))
            t0 = time.monotonic()
            try:
                code = one_session(socket_spec, case, n)
            except Exception:  # counted as a client error; the milter may be gone
                code = 1
            t1 = time.monotonic()
            with lock:
                records.append(RECORD.pack(t0, t1, case, code))

    pool = [threading.Thread(target=loop, args=(seed * 1000 + i,)) for i in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    Path(out_path).write_bytes(b"".join(records))


# --- the milter ----------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def prepare_store(url: str) -> None:
    store = Store(url)
    store.create()  # what `smtpauth-milter db init` does (a no-op on an existing store)
    with store.write() as session:
        editing.add_domains(session, ["example.com"])
        editing.set_setting(session, "require-auth-local", "on")
        editing.set_setting(session, "require-sender-match", "on")
    store.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--duration", type=float, default=float("inf"), help="seconds, at most")
    parser.add_argument("--db", help="store URL (default: a new SQLite file)")
    parser.add_argument("--socket-kind", choices=["inet", "unix"], default="inet")
    parser.add_argument("--out", default=str(RESULTS / "soak-last-run.json"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="smtpauth-soak-"))
    url = args.db or f"sqlite:///{workdir / 'store.sqlite'}"
    prepare_store(url)
    socket_spec = None if args.socket_kind == "inet" else f"unix:{workdir / 'milter.sock'}"
    milter = ours(url, workdir / "milter.log", "--log-level", "error", socket=socket_spec)
    try:
        milter.start(timeout=30)
        # The first snapshot is loaded once the initial state's verdict comes back
        # (the log is at "error": no snapshot-loaded line to wait for).
        first = expected_code(0, State(True, True))
        wait_until(lambda: one_session(milter.socket, 0) == first, 30, "the first snapshot")
        return soak(args, url, milter, workdir)
    finally:
        milter.stop(15)


def soak(args: argparse.Namespace, url: str, milter: MilterProcess, workdir: Path) -> int:
    socket_spec = milter.socket
    rss_start = rss_kib(milter.pid)
    timeline: list[tuple[float, float, State]] = [(0.0, 0.0, State(True, True))]
    stop = threading.Event()
    write_thread = threading.Thread(target=writer, args=(url, stop, timeline), daemon=True)
    started = time.monotonic()
    deadline = started + args.duration
    budget = mp.Value("q", args.sessions)
    logins = max(1, -(-args.sessions // PER_LOGIN))
    per_process = max(1, args.connections // args.processes)
    outs = [str(workdir / f"worker-{i}.bin") for i in range(args.processes)]
    ctx = mp.get_context("fork")
    workers = [
        ctx.Process(
            target=worker, args=(socket_spec, per_process, budget, deadline, out, i, logins)
        )
        for i, out in enumerate(outs)
    ]
    write_thread.start()
    for proc in workers:
        proc.start()
    rss_samples = [rss_start]
    next_report = started + 10
    while any(proc.is_alive() for proc in workers):
        time.sleep(0.2)
        if time.monotonic() < next_report:
            continue
        next_report += 10
        if milter.alive:
            rss_samples.append(rss_kib(milter.pid))
        done = args.sessions - budget.value
        print(
            f"{time.monotonic() - started:7.0f}s  sessions {done:>9}  "
            f"rate {done / (time.monotonic() - started):7.0f}/s  rss {rss_samples[-1]} KiB",
            flush=True,
        )
    for proc in workers:
        proc.join()
    elapsed = time.monotonic() - started
    stop.set()
    write_thread.join(10)
    alive = milter.alive
    rss_end = rss_kib(milter.pid) if alive else -1
    return report(args, timeline, outs, elapsed, alive, milter, rss_start, rss_end, rss_samples)


def report(
    args: argparse.Namespace,
    timeline: list[tuple[float, float, State]],
    outs: list[str],
    elapsed: float,
    alive: bool,
    milter: MilterProcess,
    rss_start: int,
    rss_end: int,
    rss_samples: list[int],
) -> int:
    sessions = wrong = errors = 0
    by_code: dict[int, int] = {}
    examples: list[dict[str, object]] = []
    windows = Timeline(timeline)
    for out in outs:
        data = Path(out).read_bytes() if Path(out).exists() else b""
        for t0, t1, case, code in RECORD.iter_unpack(data):
            sessions += 1
            by_code[code] = by_code.get(code, 0) + 1
            if code == 1:
                errors += 1
                continue
            allowed = {expected_code(case, s) for s in windows.possible(t0, t1)}
            if code not in allowed:
                wrong += 1
                if len(examples) < 10:
                    examples.append({"case": case, "code": code, "allowed": sorted(allowed)})
    log_text = milter.log_text()
    result = {
        "command": " ".join(sys.argv),
        "sessions": sessions,
        "connections": args.connections,
        "elapsed_s": round(elapsed, 1),
        "rate_per_s": round(sessions / elapsed, 1) if elapsed else 0,
        "settings_changes": len(timeline) - 1,
        "wrong_verdicts": wrong,
        "wrong_examples": examples,
        "client_errors": errors,
        "replies": {str(k): v for k, v in sorted(by_code.items())},
        "milter_alive_at_end": alive,
        "milter_exit": milter.returncode,
        "milter_trouble": milter.trouble()[:10],
        "internal_errors_logged": log_text.count("event=internal-error"),
        "rss_kib_start": rss_start,
        "rss_kib_end": rss_end,
        "rss_kib_max": max(rss_samples),
    }
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0 if wrong == 0 and errors == 0 and alive else 1


if __name__ == "__main__":
    sys.exit(main())
