"""A load driver that speaks milter protocol v6 to a milter as Postfix does.

One milter connection per SMTP session: OPTNEG, connect, HELO (unless
skipped), MAIL with Postfix's MAIL macros (``{auth_authen}`` when the session
logged in), 1-3 RCPT, ABORT, QUIT.  Each session honours what the milter
negotiated on *that* connection: skipped steps are not sent, no-reply steps
are not waited for, and only the macros the milter asked for are sent (Postfix's
defaults for stages it did not ask about).  Every RCPT reply is checked against
the verdict ``policy.decide`` gives for the store in force (``Scenario.expected``).

``drive()`` runs in one process: ``connections`` asyncio tasks, each running
sessions back to back until ``duration`` seconds or ``sessions`` sessions.
``bench.compare`` forks several of these when one process cannot keep up.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from smtpauth_milter.admin.milterproto.codec import (
    HEADER_SIZE,
    MilterProtocolError,
    Negotiated,
    cstring,
    decode_length,
    decode_optneg,
    encode_args,
    encode_connect,
    encode_macros,
    encode_optneg,
    encode_packet,
    filter_macros,
    reply_text,
)
from smtpauth_milter.admin.milterproto.transport import PacketReader, open_socket, parse_socket_spec
from smtpauth_milter.admin.milterproto.wire import (
    ALL_ACTIONS,
    ALL_PROTOCOL,
    PROTOCOL_VERSION,
    SMFIA_INET,
    SMFIC_ABORT,
    SMFIC_MACRO,
    SMFIC_OPTNEG,
    SMFIC_QUIT,
    SMFIR_PROGRESS,
    SMFIR_REPLYCODE,
    STEPS,
)

from .workload import Scenario

OPTNEG = encode_packet(SMFIC_OPTNEG, encode_optneg(PROTOCOL_VERSION, ALL_ACTIONS, ALL_PROTOCOL))
END = encode_packet(SMFIC_ABORT) + encode_packet(SMFIC_QUIT)
HOSTNAME = "client.example.test"


@dataclass(frozen=True)
class Step:
    """Bytes to write (macros + command), whether a reply comes, and the reply wanted."""

    data: bytes
    reply: bool
    expected: str  # "c" or the exact reply string ("530 5.7.0 Authentication required")


@dataclass
class Result:
    sessions: int = 0
    elapsed: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    mismatches: int = 0
    examples: list[str] = field(default_factory=list)
    errors: int = 0
    error_examples: list[str] = field(default_factory=list)
    cpu_s: float = 0.0  # this driver process's own CPU time


def _step(neg: Negotiated, name: str, data: bytes, macros: dict[str, str], expected: str) -> Step:
    if neg.skips(name):
        return Step(b"", False, expected)
    stage = STEPS[name]
    wanted = filter_macros(macros, neg.macros_for(name))
    head = encode_packet(SMFIC_MACRO, encode_macros(stage.command, wanted)) if wanted else b""
    return Step(head + encode_packet(stage.command, data), not neg.no_reply(name), expected)


def session_steps(neg: Negotiated, sc: Scenario, queue_id: str) -> list[Step]:
    """The packets of one session as Postfix 3.7 would send them, given the negotiation."""
    steps = [
        _step(
            neg,
            "connect",
            encode_connect(HOSTNAME, SMFIA_INET, sc.port, sc.client),
            {
                "j": "mx.example.test",
                "{daemon_name}": "smtpd",
                "{daemon_addr}": "127.0.0.1",
                "v": "Postfix 3.7.11",
                "_": f"{HOSTNAME} [{sc.client}]",
            },
            "c",
        ),
        _step(neg, "helo", cstring(HOSTNAME), {}, "c"),
    ]
    mail = {"{mail_addr}": sc.sender.strip("<>"), "{mail_host}": "", "{mail_mailer}": "smtp"}
    if sc.login:
        mail |= {"{auth_type}": "PLAIN", "{auth_authen}": sc.login, "{auth_author}": ""}
    steps.append(_step(neg, "mail", encode_args([sc.sender]), mail, "c"))
    for n, (rcpt, expected) in enumerate(zip(sc.rcpts, sc.expected, strict=True)):
        macros = {"{rcpt_addr}": rcpt.strip("<>"), "{rcpt_host}": "", "{rcpt_mailer}": "smtp"}
        if n:  # Postfix has no queue id at MAIL and at the first RCPT
            macros = {"i": queue_id, **macros}
        steps.append(_step(neg, "rcpt", encode_args([rcpt]), macros, expected))
    return [s for s in steps if s.data]


_PLANS: dict[tuple[int, bool], Plans] = {}  # kept across runs in a long-lived worker


class Plans:
    """Encoded sessions per negotiation answer: encoding is done once, not per session."""

    def __init__(self, scenarios: Sequence[Scenario], check: bool) -> None:
        self.scenarios = scenarios
        self.check = check
        self._cache: dict[bytes, list[list[Step]]] = {}

    def for_answer(self, answer: bytes) -> list[list[Step]]:
        plans = self._cache.get(answer)
        if plans is None:
            neg = decode_optneg(answer)
            plans = []
            for n, sc in enumerate(self.scenarios):
                steps = session_steps(neg, sc, f"4B{n:08X}")
                if not self.check:  # the no-op continues everything
                    steps = [Step(s.data, s.reply, "c") for s in steps]
                plans.append(steps)
            self._cache[answer] = plans
        return plans


async def _read_packet(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    length = decode_length(await reader.readexactly(HEADER_SIZE))
    body = await reader.readexactly(length)
    return body[:1], body[1:]


def _verdict_text(command: bytes, data: bytes) -> str:
    """``"c"`` (or another one-letter verdict) or the SMFIR_REPLYCODE string."""
    if command == SMFIR_REPLYCODE:
        return reply_text(data)
    return command.decode("ascii", "replace")


async def _verdict(reader: asyncio.StreamReader) -> str:
    while True:
        command, data = await _read_packet(reader)
        if command != SMFIR_PROGRESS:
            return _verdict_text(command, data)


async def _open(spec: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    kind, address = parse_socket_spec(spec)
    if kind == "unix":
        assert isinstance(address, str)
        return await asyncio.open_unix_connection(address)
    assert isinstance(address, tuple)
    reader, writer = await asyncio.open_connection(*address)
    # Postfix sets no TCP_NODELAY on milter sockets; neither do we, to see the same stalls.
    return reader, writer


async def _one_session(spec: str, plans: Plans, index: int, result: Result) -> None:
    reader, writer = await _open(spec)
    try:
        writer.write(OPTNEG)
        command, answer = await _read_packet(reader)
        if command != SMFIC_OPTNEG:
            raise ConnectionError(f"OPTNEG answered with {command!r}")
        steps = plans.for_answer(answer)[index % len(plans.scenarios)]
        for step in steps:
            writer.write(step.data)
            if step.reply:
                got = await _verdict(reader)
                if got != step.expected:
                    result.mismatches += 1
                    if len(result.examples) < 5:
                        sc = plans.scenarios[index % len(plans.scenarios)]
                        result.examples.append(f"{sc}: wanted {step.expected!r}, got {got!r}")
        writer.write(END)
    finally:
        writer.close()


async def _connection(
    spec: str, plans: Plans, start: int, stride: int, deadline: float, budget: int, result: Result
) -> None:
    index = start
    done = 0
    while done < budget and time.monotonic() < deadline:
        t0 = time.perf_counter()
        try:
            await _one_session(spec, plans, index, result)
        except (OSError, asyncio.IncompleteReadError, MilterProtocolError) as exc:
            result.errors += 1
            if len(result.error_examples) < 3:
                result.error_examples.append(repr(exc))
            await asyncio.sleep(0.01)
        else:
            result.latencies_ms.append((time.perf_counter() - t0) * 1000.0)
            result.sessions += 1
        index += stride
        done += 1


async def _drive(
    spec: str, plans: Plans, connections: int, offset: int, stride: int, duration: float,
    sessions: int,
) -> Result:  # fmt: skip
    result = Result()
    deadline = time.monotonic() + duration
    per_connection = -(-sessions // connections)
    t0 = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(spec, plans, offset + n, stride, deadline, per_connection, result)
            for n in range(connections)
        )
    )
    result.elapsed = time.perf_counter() - t0
    return result


def drive(
    spec: str,
    scenarios: Sequence[Scenario],
    check: bool,
    connections: int,
    duration: float,
    sessions: int,
    offset: int = 0,
    all_connections: int | None = None,
) -> Result:
    """Run ``connections`` concurrent session loops against ``spec`` in this process.

    Connection ``n`` plays scenarios ``offset + n``, then every ``all_connections``-th
    after it: with several driver processes (each given its own ``offset`` and the total
    count) every scenario is played by exactly one connection.
    """
    key = (id(scenarios), check)
    plans = _PLANS.get(key)
    if plans is None:
        plans = _PLANS[key] = Plans(scenarios, check)
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(
        _drive(spec, plans, connections, offset, all_connections or connections, duration, sessions)
    )
    after = resource.getrusage(resource.RUSAGE_SELF)
    result.cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result


def _blocking_verdict(reader: PacketReader, timeout: float) -> str:
    while True:
        command, data = reader.read(timeout)
        if command != SMFIR_PROGRESS:
            return _verdict_text(command, data)


def run_blocking(spec: str, scenario: Scenario, timeout: float) -> list[str]:
    """One session on a blocking socket (for threads): the verdict of every step that replies.

    Each read has ``timeout`` seconds; a verdict is ``"c"`` or the reply string.
    """
    with open_socket(spec, timeout) as sock:
        reader = PacketReader(sock)
        sock.sendall(OPTNEG)
        command, answer = reader.read(timeout)
        if command != SMFIC_OPTNEG:
            raise MilterProtocolError(f"OPTNEG answered with {command!r}")
        verdicts: list[str] = []
        for step in session_steps(decode_optneg(answer), scenario, "4ABCDEF0123"):
            sock.sendall(step.data)
            if step.reply:
                verdicts.append(_blocking_verdict(reader, timeout))
        sock.sendall(END)
    return verdicts
