"""Hostile envelopes through a real socket: the milter stays up, answers sensibly,
and every line of its log stays one line with no forged field.

One ``smtpauth-milter run`` process serves the whole module.  Each case runs
its own milter-protocol session, then checks the replies, the log lines the
case produced, and that a normal session still gets the right verdict.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.admin.milterproto.codec import (
    MilterProtocolError,
    encode_connect,
    encode_optneg,
)
from smtpauth_milter.admin.milterproto.wire import (
    SMFIC_CONNECT,
    SMFIC_HELO,
    SMFIC_MACRO,
    SMFIC_MAIL,
    SMFIC_OPTNEG,
    SMFIC_RCPT,
)
from tests.harness.milter import MilterProcess, ours
from tests.reliability.logcheck import LogLine, parse_log
from tests.support.milterclient import MilterClient, Reply, SessionResult

AUTH_REQUIRED = (530, "5.7.0")
BAD_SENDER = (553, "5.1.7")
MISMATCH = (553, "5.7.1")
# The milter's own fault (here: a macro pymilter cannot decode) is a 4xx at MAIL FROM.
TEMPFAIL_AT_MAIL = (451, "4.3.0")
CONTINUE = None
FORGED = "\r\n2026-01-01 00:00:00,000 INFO queue=X action=continue rule=authenticated"
_MARKERS = itertools.count()


@pytest.fixture(scope="module")
def milter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilterProcess]:
    workdir = tmp_path_factory.mktemp("hostile")
    url = f"sqlite:///{workdir / 'store.sqlite'}"
    for args in (
        ["db", "init"],
        ["domain", "add", "example.com", "bücher.example"],
        ["settings", "set", "require-auth-local", "on"],
        ["settings", "set", "require-sender-match", "on"],
        ["settings", "set", "exempt-local-recipients", "on"],
    ):
        assert run_cli(["--db", url, *args]) == 0
    milter = ours(url, workdir / "milter.log", graceful_stop=False)
    with milter.start(ready="loaded") as proc:
        yield proc
        assert proc.alive, "the milter died during the module"


@pytest.fixture
def log_since(milter: MilterProcess) -> Iterator[LogReader]:
    reader = LogReader(milter, milter.log.mark())
    yield reader
    # Whatever the case did, the milter still decides, and every line it logged is clean.
    assert_still_deciding(milter)
    reader.lines()


@dataclass
class LogReader:
    milter: MilterProcess
    offset: int

    def lines(self) -> list[LogLine]:
        """The lines logged since ``offset``, once the milter's writer thread has
        written them: one writer writes in order, so they are all there once the
        decision of a later marker session is (the marker's lines are left out)."""
        marker = f"<marker-{next(_MARKERS)}@evil.test>"
        session(self.milter, sender="<>", rcpts=[marker])
        self.milter.log.wait_for(f"rcpt={re.escape(marker)}", self.offset)
        lines = parse_log(self.milter.log.data(self.offset))
        return [line for line in lines if line.fields.get("rcpt") != marker]

    def decisions(self) -> list[LogLine]:
        return [line for line in self.lines() if "action" in line.fields]


def client_for(milter: MilterProcess, timeout: float = 10) -> MilterClient:
    """A client without Nagle's delay: an MTA writes macros and command back to back."""
    client = MilterClient(milter.socket, timeout=timeout)
    assert client._sock is not None
    client._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return client


def session(milter: MilterProcess, **kwargs: Any) -> SessionResult:
    with client_for(milter) as client:
        return client.run_session(**kwargs)


def assert_still_deciding(milter: MilterProcess) -> None:
    assert milter.alive
    refused = session(milter, sender="alice@example.com", rcpts=["bob@evil.test"])
    assert (refused.rcpts[0].code, refused.rcpts[0].xcode) == AUTH_REQUIRED
    allowed = session(milter, sender="alice@example.com", rcpts=["bob@evil.test"], login="alice")
    assert allowed.rcpts[0].kind == "replycode"  # bare login does not own (bare-login-match off)
    owner = session(
        milter,
        sender="alice@example.com",
        rcpts=["bob@evil.test"],
        login="alice@example.com",
    )
    assert owner.rcpts[0].kind == "continue"


# --- one session with raw bytes ------------------------------------------------


def raw_macros(stage: bytes, macros: Mapping[bytes, bytes]) -> bytes:
    return stage + b"".join(name + b"\0" + value + b"\0" for name, value in macros.items())


def raw_session(
    milter: MilterProcess,
    sender: bytes,
    rcpts: list[bytes],
    mail_macros: Mapping[bytes, bytes] | None = None,
) -> list[Reply]:
    """negotiate, connect, helo, MAIL and RCPTs with the bytes exactly as given."""
    with client_for(milter) as client:
        client.negotiate()
        client.connect("client.test", "4", 40000, "203.0.113.9")
        client.helo("client.test")
        macros = {b"i": b"4QUEUE1"} if mail_macros is None else mail_macros
        if macros:
            client.send_raw(SMFIC_MACRO, raw_macros(SMFIC_MAIL, macros))
        client.send_raw(SMFIC_MAIL, sender + b"\0")
        mail = client.read_reply()
        if mail.kind != "continue":  # the milter refused at MAIL: the MTA sends no RCPT
            client.abort()
            client.quit()
            return [mail]
        replies = []
        for rcpt in rcpts:
            client.send_raw(SMFIC_RCPT, rcpt + b"\0")
            replies.append(client.read_reply())
        client.abort()
        client.quit()
    return replies


def verdict(reply: Reply) -> tuple[int, str | None] | None:
    if reply.kind == "continue":
        return None
    assert reply.kind == "replycode", reply
    assert reply.code is not None
    return reply.code, reply.xcode


def check_case(
    log: LogReader, replies: list[Reply], expected: list[tuple[int, str] | None]
) -> None:
    assert [verdict(r) for r in replies] == expected
    decisions = log.decisions()
    if expected == [TEMPFAIL_AT_MAIL]:
        assert decisions == []
        errors = [line for line in log.lines() if line.fields.get("event") == "internal-error"]
        assert len(errors) == 1 and "Traceback" in errors[0].raw
        return
    assert len(decisions) == len(replies), [d.raw for d in decisions]
    for line, reply in zip(decisions, replies, strict=True):
        assert line.fields["action"] == ("continue" if reply.kind == "continue" else "reject")


# --- MAIL FROM -------------------------------------------------------------------

LONG = "a" * 10_000
SENDERS: dict[str, tuple[bytes, tuple[int, str] | None]] = {
    "plain local": (b"<alice@example.com>", AUTH_REQUIRED),
    "CRLF inside": (b"<alice@example.com>\r\nRCPT TO:<x@evil.test>", BAD_SENDER),
    "CRLF forged log": (f"<alice@example.com>{FORGED}".encode(), BAD_SENDER),
    "LF in local part": (b"<ali\nce@example.com>", BAD_SENDER),
    "bare CR at end": (b"<alice@example.com\r>", BAD_SENDER),
    "invalid UTF-8 local": (b"<\xff\xfealice@example.com>", BAD_SENDER),
    "invalid UTF-8 domain": (b"<alice@ex\xc3ample.com>", BAD_SENDER),
    "overlong UTF-8 @": (b"<alice\xc0\x80@example.com>", BAD_SENDER),
    "10 kB local, local domain": (f"<{LONG}@example.com>".encode(), BAD_SENDER),
    "10 kB local, foreign domain": (f"<{LONG}@evil.test>".encode(), BAD_SENDER),
    "10 kB domain": (f"<alice@{'a.' * 5000}example.com>".encode(), BAD_SENDER),
    "no angle brackets": (b"alice@example.com", AUTH_REQUIRED),
    "no brackets, upper case": (b"ALICE+tag@EXAMPLE.COM.", AUTH_REQUIRED),
    "only an opening bracket": (b"<alice@example.com", BAD_SENDER),
    "two @, local last": (b"<alice@evil.test@example.com>", BAD_SENDER),
    "two @, local first": (b"<alice@example.com@evil.test>", BAD_SENDER),
    "@ at the end": (b"<alice@example.com@>", BAD_SENDER),
    "quoted local": (b'<"alice"@example.com>', AUTH_REQUIRED),
    "quoted @ inside": (b'<"alice@evil.test"@example.com>', AUTH_REQUIRED),
    "quoted, foreign": (b'<"alice@example.com"@evil.test>', CONTINUE),
    "quoted, unterminated": (b'<"alice@example.com>', BAD_SENDER),
    "quoted, forged field": (
        b'<"x\\" action=continue rule=trusted-network y=\\""@example.com>',
        AUTH_REQUIRED,
    ),
    "quoted, backslashes": (b'<"a\\\\\\" action=continue b=\\\\"@example.com>', AUTH_REQUIRED),
    "quoted with CRLF": (b'<"ali\r\nce"@example.com>', BAD_SENDER),
    "display name form": (b"<The Boss <alice@example.com>>", AUTH_REQUIRED),
    "source route": (b"<@relay.test:alice@example.com>", AUTH_REQUIRED),
    "IDN unicode": ("<alice@bücher.example>".encode(), AUTH_REQUIRED),
    "IDN upper case": ("<alice@BÜCHER.EXAMPLE>".encode(), AUTH_REQUIRED),
    "IDN punycode": (b"<alice@xn--bcher-kva.example>", AUTH_REQUIRED),
    "SMTPUTF8 local": ("<jösé@bücher.example>".encode(), AUTH_REQUIRED),
    "SMTPUTF8 foreign": ("<jösé@exämple.net>".encode(), CONTINUE),
    "fullwidth @": ("<alice\uff20example.com>".encode(), BAD_SENDER),
    "U+2028 line separator": ("<alice\u2028@example.com>".encode(), AUTH_REQUIRED),
    "role sender, no brackets": (b"Postmaster@example.com", AUTH_REQUIRED),
    "unqualified": (b"<postmaster>", BAD_SENDER),
    "null sender": (b"<>", CONTINUE),
}


@pytest.mark.parametrize("sender", [v[0] for v in SENDERS.values()], ids=list(SENDERS))
def test_hostile_mail_from(milter: MilterProcess, log_since: LogReader, sender: bytes) -> None:
    expected = next(v[1] for v in SENDERS.values() if v[0] == sender)
    replies = raw_session(milter, sender, [b"<bob@evil.test>"])
    check_case(log_since, replies, [expected])


# --- RCPT TO ---------------------------------------------------------------------

# From an unauthenticated local sender: only a recipient that is surely local is exempt.
RCPTS: dict[str, tuple[bytes, tuple[int, str] | None]] = {
    "local": (b"<bob@example.com>", CONTINUE),
    "local, no brackets": (b"bob@example.com", CONTINUE),
    "local IDN": ("<bob@bücher.example>".encode(), CONTINUE),
    "local SMTPUTF8": ("<bøb@BÜCHER.example>".encode(), CONTINUE),
    "foreign": (b"<bob@evil.test>", AUTH_REQUIRED),
    "CRLF after local": (b"<bob@example.com>\r\n", AUTH_REQUIRED),
    "NUL-free CR inside": (b"<bob@example.com\r>", AUTH_REQUIRED),
    "two @": (b"<bob@evil.test@example.com>", AUTH_REQUIRED),
    "quoted local domain": (b'<"bob@example.com"@evil.test>', AUTH_REQUIRED),
    "invalid UTF-8": (b"<b\xffob@example.com>", AUTH_REQUIRED),
    "10 kB": (f"<{LONG}@example.com>".encode(), AUTH_REQUIRED),
    "forged log": (f"<bob@evil.test>{FORGED}".encode(), AUTH_REQUIRED),
    "empty": (b"", AUTH_REQUIRED),
    "brackets only": (b"<>", AUTH_REQUIRED),
}


@pytest.mark.parametrize("rcpt", [v[0] for v in RCPTS.values()], ids=list(RCPTS))
def test_hostile_rcpt_to(milter: MilterProcess, log_since: LogReader, rcpt: bytes) -> None:
    expected = next(v[1] for v in RCPTS.values() if v[0] == rcpt)
    replies = raw_session(milter, b"<alice@example.com>", [rcpt])
    check_case(log_since, replies, [expected])


def test_many_hostile_recipients_in_one_session(
    milter: MilterProcess, log_since: LogReader
) -> None:
    rcpts = [v[0] for v in RCPTS.values()]
    replies = raw_session(milter, b"<alice@example.com>", rcpts)
    check_case(log_since, replies, [v[1] for v in RCPTS.values()])


# --- the login macro ---------------------------------------------------------------

LOGINS: dict[str, tuple[Mapping[bytes, bytes], tuple[int, str] | None]] = {
    "absent": ({b"i": b"4Q1"}, AUTH_REQUIRED),
    "empty": ({b"{auth_authen}": b""}, AUTH_REQUIRED),
    "white space only": ({b"{auth_authen}": b" \t "}, AUTH_REQUIRED),
    "owner": ({b"{auth_authen}": b"alice@example.com"}, CONTINUE),
    "owner, other case": ({b"{auth_authen}": b"ALICE@Example.COM"}, CONTINUE),
    # a login is never cut at a delimiter (docs/policy.md#sub-addresses)
    "owner's sub-address as login": ({b"{auth_authen}": b"ALICE+x@Example.COM"}, MISMATCH),
    "someone else": ({b"{auth_authen}": b"bob@example.com"}, MISMATCH),
    "owner plus CRLF forgery": (
        {b"{auth_authen}": f"alice@example.com{FORGED}".encode()},
        MISMATCH,
    ),
    "invalid UTF-8": ({b"{auth_authen}": b"alice@example.com\xff"}, TEMPFAIL_AT_MAIL),
    "invalid UTF-8 queue id": ({b"i": b"Q\xff"}, TEMPFAIL_AT_MAIL),
    "60 kB login": ({b"{auth_authen}": b"a" * 60_000}, MISMATCH),
    "60 kB queue id": ({b"i": b"Q" * 60_000}, AUTH_REQUIRED),
    "queue id with CRLF": ({b"i": FORGED.encode()}, AUTH_REQUIRED),
}


@pytest.mark.parametrize("macros", [v[0] for v in LOGINS.values()], ids=list(LOGINS))
def test_hostile_login_and_queue_macros(
    milter: MilterProcess, log_since: LogReader, macros: Mapping[bytes, bytes]
) -> None:
    expected = next(v[1] for v in LOGINS.values() if v[0] is macros)
    replies = raw_session(milter, b"<alice@example.com>", [b"<bob@evil.test>"], macros)
    check_case(log_since, replies, [expected])


def test_a_64_kib_macro_is_refused_by_libmilter_not_accepted(
    milter: MilterProcess, log_since: LogReader
) -> None:
    """A packet over libmilter's 64 KiB limit ends the connection: the MTA then applies
    milter_default_action (tempfail). It must never turn into a continue."""
    with client_for(milter) as client:
        client.negotiate()
        client.connect("client.test", "4", 40000, "203.0.113.9")
        client.helo("client.test")
        outcome: Reply | str = "closed"
        try:
            client.send_raw(SMFIC_MACRO, raw_macros(SMFIC_MAIL, {b"{auth_authen}": b"a" * 65_536}))
            client.send_raw(SMFIC_MAIL, b"<alice@example.com>\0")
            outcome = _reply_or_eof(client)
            if isinstance(outcome, Reply):
                client.send_raw(SMFIC_RCPT, b"<bob@evil.test>\0")
                outcome = _reply_or_eof(client)
        except ConnectionError:  # the milter hung up while we were still writing
            outcome = "closed"
        assert outcome == "closed" or verdict(outcome) in (MISMATCH, AUTH_REQUIRED), outcome
    assert all(line.fields.get("action") != "continue" for line in log_since.decisions())


def _reply_or_eof(client: MilterClient) -> Reply | str:
    """The next reply, or "closed" when the milter hung up (TimeoutError if neither comes)."""
    try:
        return client.read_reply()
    except (ConnectionError, MilterProtocolError):
        return "closed"


def _end_of_input(client: MilterClient) -> None:
    """Tell the milter we send nothing more (FIN): libmilter answers whatever whole packets
    it read, then hangs up, so the test waits for that event instead of for silence."""
    sock = client._sock
    assert sock is not None
    # ENOTCONN: it already hung up (reset the connection); the next read says "closed".
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


# --- broken sessions and garbage packets -------------------------------------------


def _negotiated(milter: MilterProcess) -> MilterClient:
    client = client_for(milter)
    client.negotiate()
    client.connect("client.test", "4", 40000, "203.0.113.9")
    return client


def _disconnect_after_optneg(milter: MilterProcess) -> None:
    with client_for(milter) as client:
        client.negotiate()


def _disconnect_after_mail(milter: MilterProcess) -> None:
    client = _negotiated(milter)
    client.mail("<alice@example.com>")
    client.close()


def _disconnect_mid_packet(milter: MilterProcess) -> None:
    client = _negotiated(milter)
    packet = struct.pack("!I", 100) + SMFIC_MAIL + b"<alice@exa"
    client.send_bytes(packet)
    client.close()


def _reset_mid_session(milter: MilterProcess) -> None:
    client = _negotiated(milter)
    client.mail("<alice@example.com>")
    sock = client._sock
    assert sock is not None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()  # RST instead of FIN


GARBAGE: dict[str, tuple[bool, bytes]] = {
    "zero length": (True, struct.pack("!I", 0)),
    "length 2^32-1": (True, struct.pack("!I", 0xFFFFFFFF) + SMFIC_MAIL),
    "length over 64 MiB": (True, struct.pack("!I", 70 * 1024 * 1024) + SMFIC_MAIL + b"x" * 100),
    "unknown command": (True, struct.pack("!I", 5) + b"Z" + b"junk"),
    "not a packet at all": (True, b"EHLO evil.test\r\nMAIL FROM:<alice@example.com>\r\n"),
    "garbage before OPTNEG": (False, b"\x00\x00\x00\x05Xjunk"),
    "MAIL before OPTNEG": (False, struct.pack("!I", 21) + SMFIC_MAIL + b"<alice@example.com>\0"),
    "bad OPTNEG": (False, struct.pack("!I", 4) + SMFIC_OPTNEG + b"\x00\x00\x00"),
    "OPTNEG version 1": (False, struct.pack("!I", 13) + SMFIC_OPTNEG + encode_optneg(1, 0, 0)),
    "connect without NULs": (True, struct.pack("!I", 6) + SMFIC_CONNECT + b"hosty"),
    "bad connect family": (True, struct.pack("!I", 8) + SMFIC_CONNECT + b"host\0Z\0\0"),
    "HELO without NUL": (True, struct.pack("!I", 5) + SMFIC_HELO + b"evil"),
    "MAIL without NUL": (True, struct.pack("!I", 20) + SMFIC_MAIL + b"<alice@example.com>"),
    "empty MAIL": (True, struct.pack("!I", 1) + SMFIC_MAIL),
    "macro for no stage": (True, struct.pack("!I", 2) + SMFIC_MACRO + b"\0"),
    "truncated then close": (True, struct.pack("!I", 1000) + SMFIC_RCPT + b"<bob@"),
}


@pytest.mark.parametrize("optneg_first,payload", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_packets_never_take_the_milter_down(
    milter: MilterProcess, log_since: LogReader, optneg_first: bool, payload: bytes
) -> None:
    with client_for(milter, timeout=5) as client:
        if optneg_first:
            client.negotiate()
            client.send_raw(SMFIC_CONNECT, encode_connect("client.test", "4", 40000, "203.0.113.9"))
            assert client.read_reply().kind == "continue"
        client.send_bytes(payload)
        _end_of_input(client)
        # Whatever comes back before the milter hangs up must not be a verdict that
        # lets mail through unchecked (a packet cut short gets no answer at all).
        while True:
            outcome = _reply_or_eof(client)
            if outcome == "closed":
                break
            assert isinstance(outcome, Reply)
            assert outcome.kind in ("continue", "tempfail", "replycode"), outcome
            if outcome.kind == "replycode":
                assert outcome.code is not None and outcome.code < 500, outcome
    assert log_since.decisions() == []


@pytest.mark.parametrize(
    "drop",
    [_disconnect_after_optneg, _disconnect_after_mail, _disconnect_mid_packet, _reset_mid_session],
)
def test_a_client_that_disconnects_mid_session(
    milter: MilterProcess, log_since: LogReader, drop: object
) -> None:
    assert callable(drop)
    for _ in range(20):
        drop(milter)


def test_rcpt_before_mail_is_never_a_verdict(milter: MilterProcess, log_since: LogReader) -> None:
    """libmilter's state machine refuses the step: no decision, no continue."""
    with _negotiated(milter) as client:
        client.helo("client.test")
        client.send_raw(SMFIC_RCPT, b"<bob@evil.test>\0")
        _end_of_input(client)
        outcome = _reply_or_eof(client)
    assert outcome == "closed" or (isinstance(outcome, Reply) and outcome.kind == "tempfail"), (
        outcome
    )
    assert log_since.decisions() == []


def test_the_whole_log_is_one_line_per_record(milter: MilterProcess) -> None:
    lines = parse_log(milter.log.data())
    assert lines, "the milter logged nothing"
    assert any(line.fields.get("event") == "start" for line in lines)
