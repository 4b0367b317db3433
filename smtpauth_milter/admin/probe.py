"""A minimal milter-protocol client: option negotiation only (``doctor``).

Sends what an MTA sends first (SMFIC_OPTNEG, protocol version 6, every action
and step offered) and reads the milter's answer: its version, the actions and
steps it wants, and the macros it asks for per stage.
"""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass, field

SMFIC_OPTNEG = b"O"
SMFIC_QUIT = b"Q"
PROTOCOL_VERSION = 6
ALL_ACTIONS = 0x1FF
ALL_PROTOCOL = 0x1FFFFF
STAGES = {0: "connect", 1: "helo", 2: "mail", 3: "rcpt", 4: "data", 5: "eom", 6: "eoh"}
MAX_REPLY = 65536


class ProbeError(Exception):
    """The socket did not answer like a milter."""


@dataclass(frozen=True)
class Negotiated:
    version: int
    actions: int
    protocol: int
    macros: dict[str, tuple[str, ...]] = field(default_factory=dict)


def address(spec: str) -> tuple[int, str | tuple[str, int]]:
    """libmilter notation -> (address family, connect() argument)."""
    kind, _, rest = spec.partition(":")
    if kind in ("unix", "local"):
        return socket.AF_UNIX, rest
    if kind in ("inet", "inet6"):
        port, _, host = rest.partition("@")
        family = socket.AF_INET6 if kind == "inet6" else socket.AF_INET
        return family, (host.strip("[]"), int(port))
    raise ProbeError(f"unsupported socket {spec!r}")


def negotiate(spec: str, timeout: float = 5.0) -> Negotiated:
    """Connect to ``spec``, negotiate like Postfix does, then say QUIT."""
    family, target = address(spec)
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(target)
            offer = struct.pack("!III", PROTOCOL_VERSION, ALL_ACTIONS, ALL_PROTOCOL)
            sock.sendall(_packet(SMFIC_OPTNEG, offer))
            command, data = _read_packet(sock)
            sock.sendall(_packet(SMFIC_QUIT))
    except OSError as exc:
        raise ProbeError(f"cannot talk to {spec}: {exc.strerror or exc}") from exc
    if command != SMFIC_OPTNEG or len(data) < 12:
        raise ProbeError(f"{spec} answered {command!r} instead of option negotiation")
    version, actions, protocol = struct.unpack("!III", data[:12])
    return Negotiated(version, actions, protocol, _macros(data[12:]))


def _packet(command: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + command + data


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = b""
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ProbeError("the milter closed the connection during option negotiation")
        chunks += chunk
    return chunks


def _read_packet(sock: socket.socket) -> tuple[bytes, bytes]:
    (length,) = struct.unpack("!I", _read_exactly(sock, 4))
    if not 1 <= length <= MAX_REPLY:
        raise ProbeError(f"bad packet length {length} in the milter's answer")
    body = _read_exactly(sock, length)
    return body[:1], body[1:]


def _macros(data: bytes) -> dict[str, tuple[str, ...]]:
    """The optional macro lists: (uint32 stage, NUL-terminated names)*."""
    macros: dict[str, tuple[str, ...]] = {}
    offset = 0
    while offset + 4 <= len(data):
        (stage,) = struct.unpack("!I", data[offset : offset + 4])
        end = data.find(b"\0", offset + 4)
        if end < 0:
            raise ProbeError("the milter's macro list is not NUL-terminated")
        names = data[offset + 4 : end].decode("ascii", "replace")
        macros[STAGES.get(stage, str(stage))] = tuple(n for n in re.split(r"[\s,]+", names) if n)
        offset = end + 1
    return macros
