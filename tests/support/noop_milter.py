"""A no-op pymilter milter: every callback returns CONTINUE.

    python tests/support/noop_milter.py inet:PORT@127.0.0.1

A baseline for measurements and a peer for testing ``milterclient``.  Optional
switches turn it into small test doubles (all off by default):

  --reject-rcpt ADDR    answer RCPT TO:<ADDR> with --reply (default "550 5.7.1 no")
  --symlist STAGE=LIST  ask the MTA for these macros at STAGE (connect, helo,
                        mail, rcpt, data, eom, eoh), e.g. mail="{auth_authen} i"
  --skip STEP           also ask the MTA to skip STEP (connect, helo, mail, rcpt,
                        data, header, eoh, body, unknown)
  --no-reply STEP       negotiate "no reply" for STEP and answer NOREPLY there
  --record FILE         append one JSON line per callback: its arguments and
                        the values of --record-macros it could see

It negotiates itself (pymilter's own symlist handling is broken on Python 3:
docs/internals.md#setsymlist-is-broken-on-python-3) and always asks to skip
the header, EOH, body and unknown steps.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Any, ClassVar

import Milter

STAGES: dict[str, int] = {
    "connect": Milter.M_CONNECT,
    "helo": Milter.M_HELO,
    "mail": Milter.M_ENVFROM,
    "rcpt": Milter.M_ENVRCPT,
    "data": Milter.M_DATA,
    "eom": Milter.M_EOM,
    "eoh": Milter.M_EOH,
}
# step -> (skip flag, no-reply flag)
STEP_FLAGS: dict[str, tuple[int, int]] = {
    "connect": (Milter.P_NOCONNECT, Milter.P_NR_CONN),
    "helo": (Milter.P_NOHELO, Milter.P_NR_HELO),
    "mail": (Milter.P_NOMAIL, Milter.P_NR_MAIL),
    "rcpt": (Milter.P_NORCPT, Milter.P_NR_RCPT),
    "data": (Milter.P_NODATA, Milter.P_NR_DATA),
    "header": (Milter.P_NOHDRS, Milter.P_NR_HDR),
    "eoh": (Milter.P_NOEOH, Milter.P_NR_EOH),
    "body": (Milter.P_NOBODY, Milter.P_NR_BODY),
    "unknown": (Milter.P_NOUNKNOWN, Milter.P_NR_UNKN),
}
DEFAULT_SKIPS = ("header", "eoh", "body", "unknown")
CONTINUE: int = Milter.CONTINUE
NOREPLY: int = Milter.NOREPLY
REJECT: int = Milter.REJECT
DEFAULT_RECORD_MACROS = (
    "j",
    "_",
    "{daemon_name}",
    "{client_addr}",
    "{client_name}",
    "i",
    "{auth_type}",
    "{auth_authen}",
    "{mail_addr}",
    "{rcpt_addr}",
)


class Recorder:
    """Thread-safe JSON-lines writer (callbacks run on libmilter's worker threads)."""

    def __init__(self, path: str | None) -> None:
        self._path = path
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        if self._path is None:
            return
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, open(self._path, "a", encoding="utf-8") as out:
            out.write(line)


class NoopMilter(Milter.Base):  # type: ignore[misc]
    reject_rcpts: ClassVar[frozenset[str]] = frozenset()
    reply: ClassVar[tuple[str, str, str]] = ("550", "5.7.1", "no")
    symlists: ClassVar[dict[int, str]] = {}
    record_macros: ClassVar[tuple[str, ...]] = DEFAULT_RECORD_MACROS
    recorder: ClassVar[Recorder] = Recorder(None)
    protocol: ClassVar[int] = 0  # P_NO* / P_NR* flags to negotiate
    noreply_steps: ClassVar[frozenset[str]] = frozenset()

    def negotiate(self, opts: list[int]) -> int:
        actions, offered, _f1, _f2 = opts
        if self.symlists and actions & Milter.SETSYMLIST:
            for stage, names in self.symlists.items():
                self._ctx.setsymlist(stage, names)
        opts[0] = actions & Milter.SETSYMLIST if self.symlists else 0
        opts[1] = offered & self.protocol
        opts[2] = opts[3] = 0
        self._record("negotiate", offered_actions=actions, offered_protocol=offered)
        return CONTINUE

    def connect(self, hostname: str, family: int, hostaddr: Any) -> int:
        self._record("connect", hostname=hostname, family=family, hostaddr=repr(hostaddr))
        return self._answer("connect")

    def hello(self, name: str) -> int:
        self._record("helo", name=name)
        return self._answer("helo")

    def envfrom(self, sender: str, *args: str) -> int:
        self._record("mail", sender=sender, args=list(args))
        return self._answer("mail")

    def envrcpt(self, rcpt: str, *args: str) -> int:
        self._record("rcpt", rcpt=rcpt, args=list(args))
        if rcpt.strip("<>").lower() in self.reject_rcpts:
            self.setreply(*self.reply)
            return REJECT
        return self._answer("rcpt")

    def data(self) -> int:
        self._record("data")
        return self._answer("data")

    def eom(self) -> int:
        self._record("eom")
        return CONTINUE

    def abort(self) -> int:
        self._record("abort")
        return CONTINUE

    def close(self) -> int:
        self._record("close")
        return CONTINUE

    def _answer(self, step: str) -> int:
        return NOREPLY if step in self.noreply_steps else CONTINUE

    def _record(self, event: str, **fields: Any) -> None:
        macros = {name: self._macro(name) for name in self.record_macros}
        fields["macros"] = {k: v for k, v in macros.items() if v is not None}
        self.recorder.write({"event": event, **fields})

    def _macro(self, name: str) -> str | None:
        try:
            return self.getsymval(name)  # type: ignore[no-any-return]
        except (TypeError, AttributeError):
            return None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("socket", help="inet:PORT@HOST, inet6:PORT@HOST or unix:/path")
    parser.add_argument("--reject-rcpt", action="append", default=[], metavar="ADDR")
    parser.add_argument("--reply", default="550 5.7.1 no", help='"CODE X.Y.Z text"')
    parser.add_argument("--symlist", action="append", default=[], metavar="STAGE=LIST")
    parser.add_argument("--skip", action="append", default=[], choices=STEP_FLAGS)
    parser.add_argument("--no-reply", action="append", default=[], choices=STEP_FLAGS)
    parser.add_argument("--record", metavar="FILE")
    parser.add_argument("--record-macros", default=" ".join(DEFAULT_RECORD_MACROS))
    parser.add_argument("--timeout", type=int, default=30, help="libmilter I/O timeout (s)")
    return parser.parse_args(argv)


def parse_symlists(specs: list[str]) -> dict[int, str]:
    symlists: dict[int, str] = {}
    for spec in specs:
        stage, _, names = spec.partition("=")
        if stage not in STAGES:
            raise SystemExit(f"unknown stage {stage!r}; use one of {', '.join(STAGES)}")
        symlists[STAGES[stage]] = names.strip().strip('"')
    return symlists


def configure(args: argparse.Namespace) -> None:
    code, xcode, text = [*args.reply.split(" ", 2), "", ""][:3]
    NoopMilter.reject_rcpts = frozenset(a.strip("<>").lower() for a in args.reject_rcpt)
    NoopMilter.reply = (code, xcode, text)
    NoopMilter.symlists = parse_symlists(args.symlist)
    NoopMilter.record_macros = tuple(args.record_macros.replace(",", " ").split())
    NoopMilter.recorder = Recorder(args.record)
    NoopMilter.protocol = protocol_flags(DEFAULT_SKIPS + tuple(args.skip), args.no_reply)
    NoopMilter.noreply_steps = frozenset(args.no_reply)


def protocol_flags(skips: tuple[str, ...], noreplies: list[str]) -> int:
    flags = 0
    for step in skips:
        flags |= STEP_FLAGS[step][0]
    for step in noreplies:
        flags |= STEP_FLAGS[step][1]
    return flags


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    configure(args)
    Milter.factory = NoopMilter
    Milter.runmilter("noop-milter", args.socket, timeout=args.timeout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
