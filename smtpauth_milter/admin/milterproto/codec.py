"""Encoding and decoding of milter packets: pure functions over bytes, no I/O."""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from smtpauth_milter.admin.milterproto.wire import (
    FAMILIES,
    MAX_PACKET,
    SMFIA_UNKNOWN,
    STAGE_NAMES,
    STEPS,
)

HEADER_SIZE = 4  # the uint32 length in front of every packet

_REPLY_LINE = re.compile(
    r"^(?P<code>[2-5]\d\d)(?:[ -](?:(?P<xcode>[245]\.\d{1,3}\.\d{1,3})(?: |$))?)?"
)


class MilterProtocolError(Exception):
    """The peer sent something a real MTA or milter would not accept."""


# -- framing ----------------------------------------------------------------------


def encode_packet(command: bytes, data: bytes = b"") -> bytes:
    if len(command) != 1:
        raise ValueError("a milter command is exactly one byte")
    return struct.pack("!I", len(data) + 1) + command + data


def decode_length(header: bytes, limit: int = MAX_PACKET) -> int:
    """The packet length (command byte + data) from its 4-byte header, checked."""
    if len(header) != HEADER_SIZE:
        raise MilterProtocolError(f"a packet header is {HEADER_SIZE} bytes, not {len(header)}")
    (length,) = struct.unpack("!I", header)
    if not 1 <= length <= limit:
        raise MilterProtocolError(f"bad packet length {length}")
    return int(length)


def split_packet(buffer: bytes, limit: int = MAX_PACKET) -> tuple[bytes, bytes, bytes] | None:
    """``(command, data, rest)`` of the first packet in ``buffer``; None while incomplete."""
    if len(buffer) < HEADER_SIZE:
        return None
    end = HEADER_SIZE + decode_length(buffer[:HEADER_SIZE], limit)
    if len(buffer) < end:
        return None
    return buffer[HEADER_SIZE : HEADER_SIZE + 1], buffer[HEADER_SIZE + 1 : end], buffer[end:]


def cstring(value: str | bytes) -> bytes:
    """NUL-terminated string; str is encoded as UTF-8."""
    raw = value.encode("utf-8", errors="surrogateescape") if isinstance(value, str) else value
    return raw + b"\0"


# -- option negotiation --------------------------------------------------------------


@dataclass(frozen=True)
class Negotiated:
    """The milter's answer to OPTNEG: version, actions, protocol flags, macro lists."""

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


def encode_optneg(version: int, actions: int, protocol: int) -> bytes:
    return struct.pack("!III", version, actions, protocol)


def decode_optneg(data: bytes) -> Negotiated:
    if len(data) < 12:
        raise MilterProtocolError(f"short OPTNEG reply: {data!r}")
    version, actions, protocol = struct.unpack("!III", data[:12])
    return Negotiated(version, actions, protocol, decode_symlists(data[12:]))


def decode_symlists(data: bytes) -> dict[int, tuple[str, ...]]:
    """The optional OPTNEG payload: (uint32 stage, NUL-terminated list)*."""
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


# -- MTA -> milter data -----------------------------------------------------------------


def encode_connect(hostname: str, family: str, port: int | None, address: str | None) -> bytes:
    """SMFIC_CONNECT data: hostname NUL, family char, [port uint16, address NUL]."""
    if family not in FAMILIES:
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


# -- milter -> MTA replies ------------------------------------------------------------


@dataclass(frozen=True)
class ReplyCode:
    """An SMFIR_REPLYCODE string: ``"550 5.7.1 no"`` -> 550, ``"5.7.1"``, ``"no"``."""

    code: int
    xcode: str | None
    text: str
    message: str


def reply_text(payload: bytes) -> str:
    """The SMFIR_REPLYCODE payload as the string the milter set (NUL dropped)."""
    return payload.rstrip(b"\0").decode("utf-8", errors="surrogateescape")


def parse_replycode(payload: bytes) -> ReplyCode:
    """Parse an SMFIR_REPLYCODE payload (``b"550 5.7.1 text\\0"``, maybe multi-line)."""
    message = reply_text(payload)
    lines = message.split("\r\n")
    match = _REPLY_LINE.match(lines[0])
    if match is None:
        raise MilterProtocolError(f"bad reply code string: {message!r}")
    texts = [_REPLY_LINE.sub("", line, count=1) for line in lines]
    return ReplyCode(int(match.group("code")), match.group("xcode"), "\n".join(texts), message)
