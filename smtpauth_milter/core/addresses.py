"""Parse envelope addresses the way the MTA does, and normalise them. Pure.

Postfix and Sendmail hand the milter the MAIL FROM / RCPT TO argument as the
client typed it: ``<alice@example.com>``, ``<The Postmaster <pm@example.com>>``,
``<@relay.test:pm@example.com>``, ``alice@example.com``.  The address the MTA
will use is the innermost bracketed one with any source route dropped.
Anything we cannot read with certainty raises :class:`AddressError`; callers
must refuse such a sender rather than treat it as "not local".
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from email import errors as email_errors
from email.header import decode_header, make_header
from email.headerregistry import HeaderRegistry

import idna

from smtpauth_milter.core.subaddress import split_local

__all__ = [
    "Address",
    "AddressError",
    "domain_name",
    "header_domains",
    "normalise",
    "normalise_local",
    "parse_address",
    "parse_header_addresses",
    "parse_header_list",
    "parse_path",
    "render_local",
    "split_local",
    "strip_batv",
    "unicode_domain",
]

MAX_PATH_LENGTH = 1024
_SMTP_SPACE = " \t"  # only these surround a path; Unicode spaces belong to the address
MAX_DOMAIN_LENGTH = 253

# Characters that may not stand unquoted in a local part (RFC 5322 specials
# plus white space).  Everything else, including UTF-8 (SMTPUTF8), is allowed:
# the MTA accepted the address, so a stricter parser would only bounce mail.
_UNQUOTED_SPECIALS = frozenset('()<>[]\\,;:@" \t')
_ATEXT_RE = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]+")
_LDH_LABEL_RE = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")


class AddressError(ValueError):
    """An address, path or domain that cannot be parsed with certainty."""


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed address: the local part as sent (unquoted), the domain normalised.

    ``domain_as_sent`` keeps a domain written in Unicode as the client wrote it
    (without a trailing dot), for lookups that must ask that spelling first;
    None when it was ASCII.  It never takes part in comparisons.
    """

    local: str
    domain: str
    domain_as_sent: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{render_local(self.local)}@{self.domain}"


_ASCII_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def _has_control(text: str) -> bool:
    """Control, format, surrogate (undecodable byte), private or unassigned characters."""
    if text.isascii():
        return _ASCII_CONTROL_RE.search(text) is not None
    return any(unicodedata.category(ch).startswith("C") for ch in text)


def domain_name(name: str) -> str:
    """Normalise a domain name: lower case, one trailing dot dropped, IDNA (xn--)."""
    text = name.strip()
    text = text.removesuffix(".")
    if not text or _has_control(text):
        raise AddressError(f"not a domain name: {name!r}")
    if text.isascii():
        ascii_name = text.lower()
    else:
        try:
            ascii_name = idna.encode(text, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError) as exc:
            raise AddressError(f"not a valid internationalised domain name: {name!r}") from exc
    labels = ascii_name.split(".")
    if len(ascii_name) > MAX_DOMAIN_LENGTH or not all(_LDH_LABEL_RE.fullmatch(x) for x in labels):
        raise AddressError(f"not a domain name: {name!r}")
    return ascii_name


def unicode_domain(name: str) -> str:
    """The Unicode (U-label) spelling of a normalised domain; ``name`` itself when it has
    no ``xn--`` label or one that does not decode."""
    if "xn--" not in name:
        return name
    try:
        return str(idna.decode(name, uts46=True))
    except (idna.IDNAError, UnicodeError):
        return name


def _domain_part(text: str) -> str:
    if text.startswith("[") and text.endswith("]") and len(text) > 2:
        literal = text[1:-1]
        if any(ch in "[]\\" or ch.isspace() for ch in literal):
            raise AddressError(f"bad address literal: {text!r}")
        return "[" + literal.lower() + "]"
    return domain_name(text)


def _quote_scan(text: str) -> list[tuple[int, str]]:
    """Positions of the characters of ``text`` that stand outside quoted strings."""
    outside: list[tuple[int, str]] = []
    quoted = escaped = False
    for pos, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif not quoted:
            outside.append((pos, ch))
    if quoted or escaped:
        raise AddressError("unterminated quoted string")
    return outside


def _innermost_bracketed(text: str) -> str:
    brackets = [(pos, ch) for pos, ch in _quote_scan(text) if ch in "<>"]
    if not brackets:
        return text
    depth = 0
    innermost: list[tuple[int, int]] = []
    for index, (pos, ch) in enumerate(brackets):
        depth += 1 if ch == "<" else -1
        if depth < 0:
            raise AddressError("unbalanced angle brackets")
        if ch == "<" and index + 1 < len(brackets) and brackets[index + 1][1] == ">":
            innermost.append((pos, brackets[index + 1][0]))
    if depth != 0 or len(innermost) != 1:
        raise AddressError("angle brackets do not enclose exactly one address")
    start, end = innermost[0]
    return text[start + 1 : end]


def _drop_source_route(text: str) -> str:
    if not text.startswith("@"):
        return text
    route, sep, rest = text.partition(":")
    if not sep:
        raise AddressError("source route without ':'")
    for hop in route.split(","):
        if not hop.startswith("@"):
            raise AddressError("bad source route")
        _domain_part(hop[1:])
    return rest


def _unquote(quoted: str) -> str:
    body = quoted[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


def _split_local_domain(text: str) -> tuple[str, str, str | None]:
    if text.startswith('"'):
        outside = _quote_scan(text)
        close = next((pos for pos, ch in outside if ch == "@"), -1)
        if close < 2 or text[close - 1] != '"' or any(pos < close for pos, _ in outside):
            raise AddressError("a quoted local part must be followed by '@'")
        local = _unquote(text[:close])
        domain = text[close + 1 :]
    else:
        local, sep, domain = text.partition("@")
        if not sep:
            raise AddressError("address has no domain")
        if not local or any(ch in _UNQUOTED_SPECIALS for ch in local):
            raise AddressError("bad characters in local part")
    if "@" in domain:
        raise AddressError("more than one '@'")
    as_sent = None if domain.isascii() else domain.strip().removesuffix(".")
    return local, _domain_part(domain), as_sent


@functools.lru_cache(maxsize=4096)
def parse_address(text: str) -> Address:
    """Parse a bare ``local@domain`` (no brackets, no route).

    Cached: the milter asks for the same login once per recipient.
    """
    if len(text) > MAX_PATH_LENGTH or _has_control(text):
        raise AddressError("address too long or contains control characters")
    return Address(*_split_local_domain(text.strip(_SMTP_SPACE)))


@functools.lru_cache(maxsize=4096)
def parse_path(raw: str) -> Address | None:
    """Parse a MAIL FROM / RCPT TO argument. ``None`` is the null sender ``<>``.

    Cached: the milter asks for the same sender once per recipient.
    """
    if len(raw) > MAX_PATH_LENGTH or _has_control(raw):
        raise AddressError("path too long or contains control characters")
    inner = _innermost_bracketed(raw.strip(_SMTP_SPACE)).strip(_SMTP_SPACE)
    if not inner:
        return None
    return parse_address(_drop_source_route(inner))


_BATV_RE = re.compile(r"prvs=[0-9a-z]{4,16}=(.+)", re.IGNORECASE)


def strip_batv(address: Address) -> Address:
    """``prvs=TAG=user@domain`` (BATV, a signed bounce address) is ``user@domain``."""
    match = _BATV_RE.fullmatch(address.local)
    return replace(address, local=match.group(1)) if match else address


def render_local(local: str) -> str:
    plain = all(_ATEXT_RE.fullmatch(atom) for atom in local.split("."))
    if plain and not any(ch.isspace() for ch in local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def normalise_local(local: str, delimiter: str) -> str:
    """Lower-case a local part and cut a sub-address the way Postfix does (:func:`split_local`)."""
    folded = local.lower()
    return split_local(folded, delimiter) or folded


@functools.lru_cache(maxsize=4096)
def normalise(address: Address, delimiter: str) -> str:
    """The canonical form of an address: ``Alice+x@Ex.com`` -> ``alice+x@ex.com``; with
    ``delimiter`` ``+`` its sub-address cut too: ``alice@ex.com``.

    Cached: the milter compares the same sender and login once per recipient.
    """
    return f"{render_local(normalise_local(address.local, delimiter))}@{address.domain}"


# Header parsing (RFC 5322 ``From:`` / ``Sender:``), for require-header-from-match.
# The stdlib parser records what it had to guess as defects: an obsolete form
# (a source route, CFWS in a domain) still names one address with certainty,
# and so does a non-ASCII local part (SMTPUTF8); any other defect means the
# address a mail reader shows may not be the one we read, so it is refused.
_HEADERS = HeaderRegistry()
_HARMLESS_DEFECTS = (email_errors.ObsoleteHeaderDefect, email_errors.NonASCIILocalPartDefect)
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
MAX_HEADER_LENGTH = 8192


def parse_header_addresses(value: str) -> list[Address]:
    """Every address in one address-list header value (groups flattened, display names,
    comments and encoded words ignored); AddressError when any part is not certain."""
    text = _FOLD_RE.sub("", value)
    if len(text) > MAX_HEADER_LENGTH or _has_control(text.replace("\t", " ")):
        raise AddressError("header too long or contains control characters")
    try:
        header = _HEADERS("From", text)
        addresses = header.addresses  # type: ignore[attr-defined]
    except Exception as exc:  # the stdlib parser raises IndexError & co. on some garbage
        raise AddressError(f"unparseable header: {exc}") from exc
    if any(not isinstance(d, _HARMLESS_DEFECTS) for d in header.defects):
        raise AddressError(f"unparseable header: {header.defects[0]}")
    parsed: list[Address] = []
    for address in addresses:
        if not address.username or not address.domain:
            raise AddressError("header address without local part or domain")
        parsed.append(Address(address.username, _domain_part(address.domain)))
    return parsed


def parse_header_list(values: Sequence[str]) -> list[Address]:
    """The addresses of every occurrence of one header field, in order."""
    return [address for value in values for address in parse_header_addresses(value)]


# Where a From: cannot be parsed with certainty, we still need to know whether it
# may name a local domain: require-header-from-match applies to a message only
# when one of its domains has the rule on.  The guess errs towards finding more:
# every name after an '@', in the value as sent, without comments and spaces,
# and with encoded words decoded (what a mail reader might show).
_AT_WORD_RE = re.compile(r"@[ \t]*([^\s<>()\[\]@,;:\"\\]+)")
_LDH_PREFIX_RE = re.compile(r"[A-Za-z0-9._-]+")
_COMMENT_OR_SPACE_RE = re.compile(r"\([^()]*\)|\s+")


def _readings(value: str) -> list[str]:
    flat = value
    for _ in range(8):  # nested comments, innermost first; a bound, not a parser
        stripped = _COMMENT_OR_SPACE_RE.sub("", flat)
        if stripped == flat:
            break
        flat = stripped
    try:
        decoded = str(make_header(decode_header(value)))
    except Exception:  # a bad charset or encoding: the other readings remain
        decoded = value
    return [value, flat, decoded]


def _guess_domains(value: str) -> list[str]:
    found: list[str] = []
    for text in _readings(value):
        for match in _AT_WORD_RE.finditer(text):
            prefix = _LDH_PREFIX_RE.match(match[1])
            for word in (match[1], prefix[0] if prefix else ""):
                try:
                    name = domain_name(word)
                except AddressError:
                    continue
                if name not in found:
                    found.append(name)
    return found


def header_domains(values: Sequence[str]) -> list[str]:
    """The domains a header field names, in order: parsed where certain, else guessed."""
    found: list[str] = []
    for value in values:
        try:
            names = [address.domain for address in parse_header_addresses(value)]
        except AddressError:
            names = _guess_domains(value)
        found += [name for name in dict.fromkeys(names) if name not in found]
    return found
