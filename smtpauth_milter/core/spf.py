"""SPF as an input to the decision: its results and the settings that aim the lookups. Pure.

The lookup itself (DNS, deadlines, caching) lives in ``smtpauth_milter.lookups``;
the decision only ever sees a :class:`SpfResult`.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum

from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.values import seconds

DNS_PORT = 53
MAX_SPF_TIMEOUT = 30.0


class SpfResult(StrEnum):
    """RFC 7208 section 2.6 results; only ``pass`` lets a sender through."""

    PASS = "pass"  # noqa: S105 -- an SPF result, not a password
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    PERMERROR = "permerror"
    TEMPERROR = "temperror"


def parse_resolver(text: str) -> tuple[str, int] | None:
    """``HOST[:PORT]`` (HOST an IP address, IPv6 as ``[ADDR]:PORT``) -> (host, port).

    Empty text means "the system's resolvers" and gives None.
    """
    spec = text.strip()
    if not spec:
        return None
    host, port = spec, str(DNS_PORT)
    if spec.startswith("["):
        host, bracket, rest = spec[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise SettingError(f"bad dns-resolver {text!r}: write an IPv6 host as [ADDR]:PORT")
        port = rest[1:] if rest else port
    elif spec.count(":") == 1:
        host, _, port = spec.partition(":")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise SettingError(
            f"bad dns-resolver {text!r}: use IP[:PORT] or [IPV6]:PORT, e.g. 127.0.0.1:53"
        ) from None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise SettingError(f"bad dns-resolver {text!r}: the port must be 1-65535")
    return str(address), int(port)


def canonical_resolver(text: str) -> str:
    parsed = parse_resolver(text)
    if parsed is None:
        return ""
    host, port = parsed
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


canonical_timeout = seconds("spf-timeout", MAX_SPF_TIMEOUT)
