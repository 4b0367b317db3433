"""A milter-protocol (version 6) client that speaks to a milter as an MTA does.

Pure Python over a TCP or unix socket; no pymilter.  The wire format follows
Sendmail's libmilter ``include/libmilter/mfdef.h``: every packet is a 4-byte
big-endian length (command byte + data), one command byte, then the data.

Usage::

    with MilterClient("inet:9999@127.0.0.1", timeout=5) as client:
        client.negotiate()
        client.connect("client.test", "4", 40000, "203.0.113.9")
        client.helo("client.test")
        client.mail("<alice@example.com>", macros={"{auth_authen}": "alice"})
        reply = client.rcpt("<bob@example.net>")
        client.abort()
        client.quit()

or in one call: ``session("inet:9999@127.0.0.1", sender=..., rcpts=[...])``.
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

# -- protocol constants (mfdef.h) ---------------------------------------------

PROTOCOL_VERSION = 6
MILTER_CHUNK_SIZE = 65535
MAX_PACKET = 1024 * 1024 * 64  # libmilter refuses anything larger than this

# MTA -> milter commands (SMFIC_*)
SMFIC_ABORT = b"A"
SMFIC_BODY = b"B"
SMFIC_CONNECT = b"C"
SMFIC_MACRO = b"D"
SMFIC_BODYEOB = b"E"
SMFIC_HELO = b"H"
SMFIC_QUIT_NC = b"K"
SMFIC_HEADER = b"L"
SMFIC_MAIL = b"M"
SMFIC_EOH = b"N"
SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
SMFIC_RCPT = b"R"
SMFIC_DATA = b"T"
SMFIC_UNKNOWN = b"U"

# milter -> MTA replies (SMFIR_*)
SMFIR_ADDRCPT = b"+"
SMFIR_DELRCPT = b"-"
SMFIR_ADDRCPT_PAR = b"2"
SMFIR_SHUTDOWN = b"4"
SMFIR_ACCEPT = b"a"
SMFIR_REPLBODY = b"b"
SMFIR_CONTINUE = b"c"
SMFIR_DISCARD = b"d"
SMFIR_CHGFROM = b"e"
SMFIR_CONN_FAIL = b"f"
SMFIR_ADDHEADER = b"h"
SMFIR_INSHEADER = b"i"
SMFIR_SETSYMLIST = b"l"
SMFIR_CHGHEADER = b"m"
SMFIR_PROGRESS = b"p"
SMFIR_QUARANTINE = b"q"
SMFIR_REJECT = b"r"
SMFIR_SKIP = b"s"
SMFIR_TEMPFAIL = b"t"
SMFIR_REPLYCODE = b"y"

# connect address families (SMFIA_*)
SMFIA_UNKNOWN = "U"
SMFIA_UNIX = "L"
SMFIA_INET = "4"
SMFIA_INET6 = "6"

# action flags (SMFIF_*)
SMFIF_ADDHDRS = 0x001
SMFIF_CHGBODY = 0x002
SMFIF_ADDRCPT = 0x004
SMFIF_DELRCPT = 0x008
SMFIF_CHGHDRS = 0x010
SMFIF_QUARANTINE = 0x020
SMFIF_CHGFROM = 0x040
SMFIF_ADDRCPT_PAR = 0x080
SMFIF_SETSYMLIST = 0x100
ALL_ACTIONS = 0x1FF  # SMFI_CURR_ACTS

# protocol flags (SMFIP_*)
SMFIP_NOCONNECT = 0x000001
SMFIP_NOHELO = 0x000002
SMFIP_NOMAIL = 0x000004
SMFIP_NORCPT = 0x000008
SMFIP_NOBODY = 0x000010
SMFIP_NOHDRS = 0x000020
SMFIP_NOEOH = 0x000040
SMFIP_NR_HDR = 0x000080
SMFIP_NOUNKNOWN = 0x000100
SMFIP_NODATA = 0x000200
SMFIP_SKIP = 0x000400
SMFIP_RCPT_REJ = 0x000800
SMFIP_NR_CONN = 0x001000
SMFIP_NR_HELO = 0x002000
SMFIP_NR_MAIL = 0x004000
SMFIP_NR_RCPT = 0x008000
SMFIP_NR_DATA = 0x010000
SMFIP_NR_UNKN = 0x020000
SMFIP_NR_EOH = 0x040000
SMFIP_NR_BODY = 0x080000
SMFIP_HDR_LEADSPC = 0x100000
SMFIP_MDS_256K = 0x10000000
SMFIP_MDS_1M = 0x20000000
ALL_PROTOCOL = 0x1FFFFF  # everything Postfix 3.x offers (no MDS_* sizes)

# macro stages (SMFIM_*): index in the SETSYMLIST payload
SMFIM_CONNECT = 0
SMFIM_HELO = 1
SMFIM_ENVFROM = 2
SMFIM_ENVRCPT = 3
SMFIM_DATA = 4
SMFIM_EOM = 5
SMFIM_EOH = 6
STAGE_NAMES: dict[int, str] = {
    SMFIM_CONNECT: "connect",
    SMFIM_HELO: "helo",
    SMFIM_ENVFROM: "mail",
    SMFIM_ENVRCPT: "rcpt",
    SMFIM_DATA: "data",
    SMFIM_EOM: "eom",
    SMFIM_EOH: "eoh",
}


@dataclass(frozen=True)
class Step:
    """One MTA -> milter step: its command, macro stage, skip and no-reply flags."""

    name: str
    command: bytes
    macro_stage: int | None
    skip_flag: int
    noreply_flag: int


STEPS: dict[str, Step] = {
    "connect": Step("connect", SMFIC_CONNECT, SMFIM_CONNECT, SMFIP_NOCONNECT, SMFIP_NR_CONN),
    "helo": Step("helo", SMFIC_HELO, SMFIM_HELO, SMFIP_NOHELO, SMFIP_NR_HELO),
    "mail": Step("mail", SMFIC_MAIL, SMFIM_ENVFROM, SMFIP_NOMAIL, SMFIP_NR_MAIL),
    "rcpt": Step("rcpt", SMFIC_RCPT, SMFIM_ENVRCPT, SMFIP_NORCPT, SMFIP_NR_RCPT),
    "data": Step("data", SMFIC_DATA, SMFIM_DATA, SMFIP_NODATA, SMFIP_NR_DATA),
    "header": Step("header", SMFIC_HEADER, None, SMFIP_NOHDRS, SMFIP_NR_HDR),
    "eoh": Step("eoh", SMFIC_EOH, SMFIM_EOH, SMFIP_NOEOH, SMFIP_NR_EOH),
    "body": Step("body", SMFIC_BODY, None, SMFIP_NOBODY, SMFIP_NR_BODY),
    "eom": Step("eom", SMFIC_BODYEOB, SMFIM_EOM, 0, 0),
    "unknown": Step("unknown", SMFIC_UNKNOWN, None, SMFIP_NOUNKNOWN, SMFIP_NR_UNKN),
}

ReplyKind = Literal[
    "continue",
    "accept",
    "reject",
    "tempfail",
    "replycode",
    "discard",
    "skip",
    "conn_fail",
    "shutdown",
    "skipped",
    "noreply",
    "not-sent",
]

VERDICTS: dict[bytes, ReplyKind] = {
    SMFIR_CONTINUE: "continue",
    SMFIR_ACCEPT: "accept",
    SMFIR_REJECT: "reject",
    SMFIR_TEMPFAIL: "tempfail",
    SMFIR_REPLYCODE: "replycode",
    SMFIR_DISCARD: "discard",
    SMFIR_SKIP: "skip",
    SMFIR_CONN_FAIL: "conn_fail",
    SMFIR_SHUTDOWN: "shutdown",
}

# Replies a milter may send at end of message before its verdict.
MODIFICATIONS = frozenset(
    {
        SMFIR_ADDRCPT,
        SMFIR_DELRCPT,
        SMFIR_ADDRCPT_PAR,
        SMFIR_REPLBODY,
        SMFIR_CHGFROM,
        SMFIR_ADDHEADER,
        SMFIR_INSHEADER,
        SMFIR_CHGHEADER,
        SMFIR_QUARANTINE,
    }
)

_REPLY_LINE = re.compile(
    r"^(?P<code>[2-5]\d\d)(?:[ -](?:(?P<xcode>[245]\.\d{1,3}\.\d{1,3})(?: |$))?)?"
)


class MilterProtocolError(Exception):
    """The milter sent something a real MTA would not accept."""


# -- results --------------------------------------------------------------------


@dataclass(frozen=True)
class Modification:
    """A message modification sent at end of message (add header, ...)."""

    command: bytes
    data: bytes


@dataclass(frozen=True)
class Reply:
    """The milter's answer to one step.

    ``kind`` is the verdict (``continue``, ``reject``, ...), or ``skipped``
    (the milter negotiated this step away), ``noreply`` (no-reply step) or
    ``not-sent`` (an earlier verdict ended the session before this step).
    For ``replycode`` the reply string ``"550 5.7.1 no"`` is parsed into
    ``code=550``, ``xcode="5.7.1"``, ``text="no"``; ``message`` keeps it whole.
    """

    kind: ReplyKind
    code: int | None = None
    text: str | None = None
    xcode: str | None = None
    message: str | None = None
    modifications: tuple[Modification, ...] = ()

    @property
    def continues(self) -> bool:
        """True when an MTA would carry on as if the milter said continue."""
        return self.kind in ("continue", "skipped", "noreply")

    @property
    def action(self) -> str:
        """``reject``/``tempfail`` for reply codes (5xx/4xx), else ``kind``."""
        if self.kind == "replycode" and self.code is not None:
            return "reject" if self.code >= 500 else "tempfail"
        return self.kind

    @property
    def ends_message(self) -> bool:
        """The milter has decided the whole message/session (no more steps)."""
        return self.kind in ("accept", "discard", "conn_fail", "shutdown")


def parse_replycode(payload: bytes) -> Reply:
    """Parse an SMFIR_REPLYCODE payload (``b"550 5.7.1 text\\0"``, maybe multi-line)."""
    message = payload.rstrip(b"\0").decode("utf-8", errors="surrogateescape")
    lines = message.split("\r\n")
    match = _REPLY_LINE.match(lines[0])
    if match is None:
        raise MilterProtocolError(f"bad reply code string: {message!r}")
    code = int(match.group("code"))
    xcode = match.group("xcode")
    texts = [_REPLY_LINE.sub("", line, count=1) for line in lines]
    return Reply("replycode", code=code, text="\n".join(texts), xcode=xcode, message=message)


@dataclass(frozen=True)
class Negotiated:
    """The milter's answer to OPTNEG."""

    version: int
    actions: int
    protocol: int
    macros: dict[int, tuple[str, ...]] = field(default_factory=dict)

    def skips(self, step: str) -> bool:
        return bool(self.protocol & STEPS[step].skip_flag)

    def no_reply(self, step: str) -> bool:
        return bool(self.protocol & STEPS[step].noreply_flag)

    def macros_for(self, step: str) -> tuple[str, ...] | None:
        """Macro names the milter asked for at this step, None if it sent no list."""
        stage = STEPS[step].macro_stage
        return None if stage is None else self.macros.get(stage)

    @property
    def skipped_steps(self) -> frozenset[str]:
        return frozenset(name for name in STEPS if self.skips(name))

    @property
    def noreply_steps(self) -> frozenset[str]:
        return frozenset(name for name in STEPS if self.no_reply(name))

    @property
    def macros_by_name(self) -> dict[str, tuple[str, ...]]:
        return {STAGE_NAMES.get(stage, str(stage)): names for stage, names in self.macros.items()}


@dataclass
class SessionResult:
    """Replies of one SMTP session as ``session()`` drove it."""

    negotiated: Negotiated
    connect: Reply
    helo: Reply
    mail: Reply
    rcpts: list[Reply]
    data: Reply | None = None
    eom: Reply | None = None


# -- packet encoding --------------------------------------------------------------


def encode_packet(command: bytes, data: bytes = b"") -> bytes:
    if len(command) != 1:
        raise ValueError("a milter command is exactly one byte")
    return struct.pack("!I", len(data) + 1) + command + data


def cstring(value: str | bytes) -> bytes:
    """NUL-terminated string; str is encoded as UTF-8."""
    raw = value.encode("utf-8", errors="surrogateescape") if isinstance(value, str) else value
    return raw + b"\0"


def encode_optneg(version: int, actions: int, protocol: int) -> bytes:
    return struct.pack("!III", version, actions, protocol)


def decode_optneg(data: bytes) -> Negotiated:
    if len(data) < 12:
        raise MilterProtocolError(f"short OPTNEG reply: {data!r}")
    version, actions, protocol = struct.unpack("!III", data[:12])
    return Negotiated(version, actions, protocol, decode_symlists(data[12:]))


def decode_symlists(data: bytes) -> dict[int, tuple[str, ...]]:
    """Parse the optional OPTNEG payload: (uint32 stage, NUL-terminated list)*."""
    macros: dict[int, tuple[str, ...]] = {}
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise MilterProtocolError(f"truncated macro list: {data!r}")
        (stage,) = struct.unpack("!I", data[offset : offset + 4])
        end = data.find(b"\0", offset + 4)
        if end < 0:
            raise MilterProtocolError(f"macro list without NUL: {data!r}")
        names = data[offset + 4 : end].decode("ascii", errors="replace")
        macros[stage] = tuple(n for n in re.split(r"[\s,]+", names) if n)
        offset = end + 1
    return macros


def encode_connect(hostname: str, family: str, port: int | None, address: str | None) -> bytes:
    """SMFIC_CONNECT data: hostname NUL, family char, [port uint16, address NUL]."""
    if family not in (SMFIA_UNKNOWN, SMFIA_UNIX, SMFIA_INET, SMFIA_INET6):
        raise ValueError(f"unknown address family {family!r}")
    data = cstring(hostname) + family.encode("ascii")
    if family == SMFIA_UNKNOWN:
        return data
    return data + struct.pack("!H", port or 0) + cstring(address or "")


def encode_args(args: Iterable[str | bytes]) -> bytes:
    """MAIL/RCPT data: every argument NUL-terminated."""
    return b"".join(cstring(arg) for arg in args)


def encode_macros(stage_command: bytes, macros: Mapping[str, str]) -> bytes:
    """SMFIC_MACRO data: the command it belongs to, then name NUL value NUL pairs."""
    return stage_command + b"".join(cstring(k) + cstring(v) for k, v in macros.items())


def bare_macro_name(name: str) -> str:
    """``{auth_authen}`` -> ``auth_authen``; ``i`` stays ``i``."""
    return name[1:-1] if name.startswith("{") and name.endswith("}") else name


def filter_macros(macros: Mapping[str, str], wanted: Sequence[str] | None) -> dict[str, str]:
    """Only the macros in ``wanted`` (braces optional on either side); all if None."""
    if wanted is None:
        return dict(macros)
    wanted_bare = {bare_macro_name(n) for n in wanted}
    return {k: v for k, v in macros.items() if bare_macro_name(k) in wanted_bare}


# -- the client ----------------------------------------------------------------------


def open_socket(socket_spec: str, timeout: float) -> socket.socket:
    """Connect to ``inet:PORT@HOST``, ``inet6:PORT@HOST``, ``unix:/path``, ``HOST:PORT`` or a path."""
    _kind, address = parse_socket_spec(socket_spec)
    if not isinstance(address, str):
        inet = socket.create_connection(address, timeout=timeout)
        # Small request/reply packets: without this every step waits on a delayed ACK.
        inet.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return inet
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def parse_socket_spec(spec: str) -> tuple[str, str | tuple[str, int]]:
    """``("unix", path)`` or ``("inet", (host, port))``."""
    if spec.startswith(("unix:", "local:")):
        return "unix", spec.split(":", 1)[1]
    if spec.startswith("/"):
        return "unix", spec
    for prefix in ("inet:", "inet6:"):
        if spec.startswith(prefix):
            port, _, host = spec[len(prefix) :].partition("@")
            return "inet", (host.strip("[]") or "127.0.0.1", int(port))
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad milter socket spec: {spec!r}")
    return "inet", (host.strip("[]"), int(port))


def wait_for_milter(
    socket_spec: str, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll until something accepts connections on ``socket_spec``.

    Only connects and closes (no OPTNEG), so the milter runs no callback.
    Fails early if ``process`` (the milter being started) has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"milter exited with status {process.returncode} before listening")
        try:
            open_socket(socket_spec, timeout=1.0).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {socket_spec} after {timeout}s") from exc
        time.sleep(0.02)


class MilterClient:
    """One milter connection, driven step by step like an MTA.

    ``send_only_requested_macros``: when the milter sent a macro list for a
    stage, send only those of the given macros (what Postfix and Sendmail do);
    when False, always send every macro given.
    """

    def __init__(
        self, socket_spec: str, timeout: float = 10.0, *, send_only_requested_macros: bool = True
    ) -> None:
        self.socket_spec = socket_spec
        self.timeout = timeout
        self.send_only_requested_macros = send_only_requested_macros
        self.negotiated: Negotiated | None = None
        self.sent: list[tuple[bytes, bytes]] = []  # every packet sent, for debugging
        self._sock: socket.socket | None = open_socket(socket_spec, timeout)
        self._buffer = b""

    # -- context management ---------------------------------------------------

    def __enter__(self) -> MilterClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def closed(self) -> bool:
        return self._sock is None

    # -- raw access ----------------------------------------------------------------

    def send_raw(self, command: bytes, data: bytes = b"") -> None:
        """Send one packet as is (for fuzzing)."""
        self._socket().sendall(encode_packet(command, data))
        self.sent.append((command, data))

    def send_bytes(self, raw: bytes) -> None:
        """Send arbitrary bytes, not even framed (for fuzzing)."""
        self._socket().sendall(raw)

    def read_packet(self) -> tuple[bytes, bytes]:
        """One packet ``(command, data)``; raises ConnectionError at EOF."""
        (length,) = struct.unpack("!I", self._read_exactly(4))
        if length < 1 or length > MAX_PACKET:
            raise MilterProtocolError(f"bad packet length {length}")
        body = self._read_exactly(length)
        return body[:1], body[1:]

    def read_reply(self) -> Reply:
        """Read until a verdict, skipping progress packets and collecting modifications."""
        modifications: list[Modification] = []
        while True:
            command, data = self.read_packet()
            if command == SMFIR_PROGRESS:
                continue
            if command in MODIFICATIONS:
                modifications.append(Modification(command, data))
                continue
            return self._verdict(command, data, tuple(modifications))

    def at_eof(self, timeout: float = 1.0) -> bool:
        """True when the milter has closed the connection (waits up to ``timeout``)."""
        sock = self._socket()
        sock.settimeout(timeout)
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (TimeoutError, BlockingIOError):
            return False
        except ConnectionResetError:
            return True
        finally:
            sock.settimeout(self.timeout)

    # -- protocol steps ----------------------------------------------------------

    def negotiate(
        self,
        version: int = PROTOCOL_VERSION,
        actions: int = ALL_ACTIONS,
        protocol: int = ALL_PROTOCOL,
    ) -> Negotiated:
        self.send_raw(SMFIC_OPTNEG, encode_optneg(version, actions, protocol))
        command, data = self.read_packet()
        if command != SMFIC_OPTNEG:
            raise MilterProtocolError(f"expected OPTNEG reply, got {command!r} {data!r}")
        self.negotiated = decode_optneg(data)
        return self.negotiated

    def connect(
        self,
        hostname: str,
        family: str = SMFIA_INET,
        port: int | None = 0,
        address: str | None = None,
        macros: Mapping[str, str] | None = None,
    ) -> Reply:
        return self._step("connect", encode_connect(hostname, family, port, address), macros)

    def helo(self, name: str, macros: Mapping[str, str] | None = None) -> Reply:
        return self._step("helo", cstring(name), macros)

    def mail(
        self,
        sender: str,
        esmtp_args: Sequence[str] = (),
        macros: Mapping[str, str] | None = None,
    ) -> Reply:
        """``sender`` as the client typed it, with its brackets: ``<a@b>``."""
        return self._step("mail", encode_args([sender, *esmtp_args]), macros)

    def rcpt(
        self,
        rcpt: str,
        macros: Mapping[str, str] | None = None,
        esmtp_args: Sequence[str] = (),
    ) -> Reply:
        return self._step("rcpt", encode_args([rcpt, *esmtp_args]), macros)

    def data(self, macros: Mapping[str, str] | None = None) -> Reply:
        return self._step("data", b"", macros)

    def header(self, name: str, value: str) -> Reply:
        return self._step("header", cstring(name) + cstring(value), None)

    def eoh(self, macros: Mapping[str, str] | None = None) -> Reply:
        return self._step("eoh", b"", macros)

    def body(self, chunk: bytes) -> Reply:
        """One body chunk (an MTA sends at most 65535 bytes per chunk)."""
        return self._step("body", chunk, None)

    def eom(self, macros: Mapping[str, str] | None = None) -> Reply:
        return self._step("eom", b"", macros)

    def unknown(self, command_line: str) -> Reply:
        return self._step("unknown", cstring(command_line), None)

    def abort(self) -> None:
        """End the current message (no reply)."""
        self.send_raw(SMFIC_ABORT)

    def quit(self) -> None:
        """End the session (no reply); the milter closes its side."""
        self.send_raw(SMFIC_QUIT)

    def quit_keep_connection(self) -> None:
        """SMFIC_QUIT_NC: end the session, keep the connection for a new one."""
        self.send_raw(SMFIC_QUIT_NC)

    def send_macros(self, stage_command: bytes, macros: Mapping[str, str]) -> None:
        self.send_raw(SMFIC_MACRO, encode_macros(stage_command, macros))

    # -- whole sessions ----------------------------------------------------------

    def run_session(
        self,
        *,
        sender: str,
        rcpts: Sequence[str],
        login: str | None = None,
        client_addr: str = "203.0.113.9",
        client_name: str = "client.example.test",
        client_port: int = 40000,
        helo_name: str = "client.example.test",
        queue_id: str | None = "4ABCDEF0123",
        family: str | None = None,
        connect_macros: Mapping[str, str] | None = None,
        mail_macros: Mapping[str, str] | None = None,
        rcpt_macros: Mapping[str, str] | None = None,
        message: Sequence[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> SessionResult:
        """negotiate, connect, helo, mail, every rcpt, then abort (or DATA..EOM
        when ``message`` headers are given) and quit.

        ``sender``/``rcpts`` are wrapped in ``<>`` unless they already are.
        The login goes into ``{auth_authen}`` (plus ``{auth_type}=PLAIN``).
        """
        negotiated = self.negotiated or self.negotiate()
        default_connect = _connect_macros(client_addr, client_name, client_port)
        connect = self.connect(
            client_name,
            family or _family_of(client_addr),
            client_port,
            client_addr,
            {**default_connect, **(connect_macros or {})},
        )
        helo = _unless_stopped(connect, lambda: self.helo(helo_name))
        mail_macros = {**_mail_macros(login, queue_id), **(mail_macros or {})}
        mail = _unless_stopped(helo, lambda: self.mail(_bracketed(sender), macros=mail_macros))
        result = SessionResult(negotiated, connect, helo, mail, [])
        if mail.kind != "not-sent":
            result.rcpts = self._send_rcpts(mail, rcpts, queue_id, rcpt_macros)
            self._finish_transaction(result, message, body, queue_id)
        else:
            result.rcpts = [Reply("not-sent") for _ in rcpts]
        self.quit()
        return result

    def _send_rcpts(
        self,
        mail: Reply,
        rcpts: Sequence[str],
        queue_id: str | None,
        extra_macros: Mapping[str, str] | None,
    ) -> list[Reply]:
        """One reply per recipient; a rejected recipient does not stop the others."""
        replies: list[Reply] = []
        stopped = not mail.continues
        for rcpt in rcpts:
            if stopped:
                replies.append(Reply("not-sent"))
                continue
            macros = {**_rcpt_macros(rcpt, queue_id), **(extra_macros or {})}
            reply = self.rcpt(_bracketed(rcpt), macros)
            replies.append(reply)
            stopped = reply.ends_message
        return replies

    def _finish_transaction(
        self,
        result: SessionResult,
        message: Sequence[tuple[str, str]] | None,
        body: bytes,
        queue_id: str | None,
    ) -> None:
        """DATA..EOM when a message is given and some recipient was accepted, else ABORT."""
        accepted = any(r.continues for r in result.rcpts)
        if message is None or not result.mail.continues or not accepted:
            self.abort()
            return
        qid = {"i": queue_id} if queue_id else {}
        result.data = self.data(qid)
        if not result.data.continues:
            self.abort()
            return
        for name, value in message:
            self.header(name, value)
        self.eoh(qid)
        for offset in range(0, len(body), MILTER_CHUNK_SIZE):
            self.body(body[offset : offset + MILTER_CHUNK_SIZE])
        result.eom = self.eom(qid)

    # -- internals -------------------------------------------------------------

    def _step(self, name: str, data: bytes, macros: Mapping[str, str] | None) -> Reply:
        step = STEPS[name]
        negotiated = self._negotiated()
        if negotiated.skips(name):
            return Reply("skipped")
        if step.macro_stage is not None and macros:
            wanted = negotiated.macros_for(name) if self.send_only_requested_macros else None
            selected = filter_macros(macros, wanted)
            if selected:
                self.send_macros(step.command, selected)
        self.send_raw(step.command, data)
        if negotiated.no_reply(name):
            return Reply("noreply")
        return self.read_reply()

    def _negotiated(self) -> Negotiated:
        if self.negotiated is None:
            raise MilterProtocolError("negotiate() first")
        return self.negotiated

    def _verdict(self, command: bytes, data: bytes, mods: tuple[Modification, ...]) -> Reply:
        if command == SMFIR_REPLYCODE:
            parsed = parse_replycode(data)
            return Reply("replycode", parsed.code, parsed.text, parsed.xcode, parsed.message, mods)
        kind = VERDICTS.get(command)
        if kind is None:
            raise MilterProtocolError(f"unexpected reply {command!r} {data!r}")
        return Reply(kind, modifications=mods)

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionError("client is closed")
        return self._sock

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self._socket().recv(max(size - len(self._buffer), 65536))
            if not chunk:
                raise ConnectionError("milter closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def _unless_stopped(previous: Reply, step: Callable[[], Reply]) -> Reply:
    """Connect/HELO/MAIL: anything but continue ends the milter's part of the session."""
    return step() if previous.continues else Reply("not-sent")


def _bracketed(address: str) -> str:
    return address if address.startswith("<") else f"<{address}>"


def _family_of(address: str) -> str:
    if address.startswith("/"):
        return SMFIA_UNIX
    return SMFIA_INET6 if ":" in address else SMFIA_INET


def _connect_macros(client_addr: str, client_name: str, client_port: int) -> dict[str, str]:
    return {
        "j": "mx.example.test",
        "{daemon_name}": "smtpd",
        "{daemon_addr}": "127.0.0.1",
        "v": "Postfix 3.7.11",
        "_": f"{client_name} [{client_addr}]",
        "{client_addr}": client_addr,
        "{client_name}": client_name,
        "{client_port}": str(client_port),
    }


def _mail_macros(login: str | None, queue_id: str | None) -> dict[str, str]:
    macros: dict[str, str] = {"{mail_mailer}": "smtp"}
    if queue_id:
        macros["i"] = queue_id
    if login:
        macros.update({"{auth_type}": "PLAIN", "{auth_authen}": login})
    return macros


def _rcpt_macros(rcpt: str, queue_id: str | None) -> dict[str, str]:
    macros = {"{rcpt_addr}": rcpt.strip("<>"), "{rcpt_mailer}": "smtp"}
    if queue_id:
        macros["i"] = queue_id
    return macros


def session(
    socket_spec: str,
    *,
    sender: str,
    rcpts: Sequence[str],
    login: str | None = None,
    timeout: float = 10.0,
    send_only_requested_macros: bool = True,
    **kwargs: object,
) -> SessionResult:
    """Open a connection, run one whole SMTP session, close; see ``run_session``."""
    with MilterClient(
        socket_spec, timeout, send_only_requested_macros=send_only_requested_macros
    ) as client:
        return client.run_session(sender=sender, rcpts=rcpts, login=login, **kwargs)  # type: ignore[arg-type]


# -- the libmilter crash -----------------------------------------------------------

# Debian's libmilter walks the macros of an SMFIC_MACRO packet as name/value
# pairs until a NULL; with an odd number of strings it steps over the NULL and
# reads past the end of its argv.  A 20-byte HELO first leaves "AAAAAAAA" in
# exactly the heap slot it then reads, so the next getsymval() (our envfrom
# looks up {auth_authen}) dereferences 0x4141... and the process dies with
# SIGSEGV, every time.  No MTA sends this; any peer that reaches the socket can.
CRASH_OPTNEG = encode_optneg(6, 0x1FF, 0)
CRASH_CONNECT = b"client.example\0" + b"4" + struct.pack("!H", 25) + b"192.0.2.1\0"
CRASH_HELO = b"A" * 20 + b"\0"
CRASH_MACROS = SMFIC_MAIL + b"x" * 40 + b"0\0"


def send_crash_packets(socket_spec: str, timeout: float = 5.0) -> bool:
    """Send the crashing packets; True when the milter hung up instead of answering MAIL."""
    with MilterClient(socket_spec, timeout) as client:
        for command, data in (
            (SMFIC_OPTNEG, CRASH_OPTNEG),
            (SMFIC_CONNECT, CRASH_CONNECT),
            (SMFIC_HELO, CRASH_HELO),
        ):
            client.send_raw(command, data)
            client.read_packet()
        client.send_bytes(
            encode_packet(SMFIC_MACRO, CRASH_MACROS)
            + encode_packet(SMFIC_MAIL, b"<a@example.com>\0")
        )
        try:
            client.read_packet()
        except (ConnectionError, OSError):
            return True
        return False
