"""SPF as an input to the decision: results, answers, the settings that aim the lookups. Pure.

The lookup itself (DNS, deadlines, caching) lives in ``smtpauth_milter.lookups``
(``spf`` caches and schedules, ``spfdns`` evaluates; both use the values here);
the decision only ever sees a :class:`SpfResult`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.values import seconds

DNS_PORT = 53
MAX_SPF_TIMEOUT = 30.0
MAX_TTL = 3600.0  # cache an answer at most this long, whatever DNS says


class SpfResult(StrEnum):
    """RFC 7208 section 2.6 results; only ``pass`` lets a sender through."""

    PASS = "pass"  # noqa: S105 -- an SPF result, not a password
    FAIL = "fail"
    SOFTFAIL = "softfail"
    NEUTRAL = "neutral"
    NONE = "none"
    PERMERROR = "permerror"
    TEMPERROR = "temperror"


@dataclass(frozen=True, slots=True)
class SpfAnswer:
    result: SpfResult
    record: str | None  # the sender domain's own SPF record, when one was found
    ttl: float  # how long the answer may be cached; 0 for temperror
    detail: str  # pyspf's explanation or error, for ``check`` and the log
    timed_out: bool = False  # some DNS query ran out of time
    local_part: bool = False  # a record read used the sender's local part (see below)


# RFC 7208 section 7.2: of the macro letters, only s (<sender>) and l (its local part)
# carry the local part; upper case (URL-escaped) and transformers (%{l1r-}) included.
_LOCAL_PART_MACRO = re.compile(r"%\{[slSL]")


def uses_local_part(record: str) -> bool:
    """Whether an SPF record's answer may depend on the sender's local part: it holds
    a ``%{s}`` or ``%{l}`` macro (any case, any transformer), wherever it stands."""
    return _LOCAL_PART_MACRO.search(record) is not None


def split_sender(sender: str) -> tuple[str, str] | None:
    """``local@domain`` as SPF wants it: domain lower-case, no trailing dot; None when
    there is no domain (the null sender, a bare local part)."""
    local, at, domain = sender.rpartition("@")
    domain = domain.lower().rstrip(".")
    if not at or not domain:
        return None
    return local, domain


@dataclass(frozen=True, slots=True)
class SystemResolvers:
    """Where DNS goes when ``dns-resolver`` is empty: the ``nameserver`` lines of
    ``path``, each asked on ``port`` (tests aim it at their private server)."""

    path: str = "/etc/resolv.conf"
    port: int = DNS_PORT


SYSTEM_RESOLVERS = SystemResolvers()


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
