"""Milter protocol constants (libmilter's ``mfdef.h``) and the steps of a session.

Every packet is a 4-byte big-endian length (command byte + data), one command
byte, then the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PROTOCOL_VERSION = 6
MILTER_CHUNK_SIZE = 65535  # an MTA sends at most this many body bytes per packet
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
FAMILIES = frozenset({SMFIA_UNKNOWN, SMFIA_UNIX, SMFIA_INET, SMFIA_INET6})

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

# macro stages (SMFIM_*): the uint32 before each list in the OPTNEG answer
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

Verdict = Literal[
    "continue",
    "accept",
    "reject",
    "tempfail",
    "replycode",
    "discard",
    "skip",
    "conn_fail",
    "shutdown",
]

VERDICTS: dict[bytes, Verdict] = {
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
