"""``doctor``'s option-negotiation probe, spoken through ``milterproto``.

Sends what an MTA sends first (SMFIC_OPTNEG, protocol version 6, every action
and step offered) and reads the milter's answer: its version, the actions and
steps it wants, and the macros it asks for per stage.
"""

from __future__ import annotations

from smtpauth_milter.admin.milterproto.codec import (
    MilterProtocolError,
    Negotiated,
    decode_optneg,
    encode_optneg,
    encode_packet,
)
from smtpauth_milter.admin.milterproto.transport import PacketReader, open_socket
from smtpauth_milter.admin.milterproto.wire import (
    ALL_ACTIONS,
    ALL_PROTOCOL,
    PROTOCOL_VERSION,
    SMFIC_OPTNEG,
    SMFIC_QUIT,
)

MAX_REPLY = 65536  # an OPTNEG answer is small; a bigger length means no milter answers


class ProbeError(Exception):
    """The socket did not answer like a milter."""


def negotiate(spec: str, timeout: float = 5.0) -> Negotiated:
    """Connect to ``spec``, negotiate like Postfix does, then say QUIT; all within ``timeout``."""
    offer = encode_optneg(PROTOCOL_VERSION, ALL_ACTIONS, ALL_PROTOCOL)
    try:
        with open_socket(spec, timeout) as sock:
            sock.sendall(encode_packet(SMFIC_OPTNEG, offer))
            command, data = PacketReader(sock, MAX_REPLY).read(timeout)
            sock.sendall(encode_packet(SMFIC_QUIT))
        if command != SMFIC_OPTNEG:
            raise ProbeError(f"{spec} answered {command!r} instead of option negotiation")
        return decode_optneg(data)
    except ValueError as exc:
        raise ProbeError(f"unsupported socket {spec!r}") from exc
    except MilterProtocolError as exc:
        raise ProbeError(f"{spec} does not answer like a milter: {exc}") from exc
    except OSError as exc:
        raise ProbeError(f"cannot talk to {spec}: {exc.strerror or exc}") from exc
