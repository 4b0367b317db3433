"""External ownership maps (``sender-login-maps``): their names and their answers. Pure.

A map is named ``TYPE:NAME`` the way Postfix names a lookup table
(``texthash:/etc/postfix/sender_owners``), or ``sql:/path/to/file.toml`` for
our own SQL source.  A map answers a sender with a list of owners (logins);
the lookup itself happens outside the decision (``smtpauth_milter.lookups``)
and its result is handed to :func:`~smtpauth_milter.core.policy.decide` as a
:class:`MapAnswer`.  See docs/policy.md#ownership-from-your-mail-systems-maps.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from smtpauth_milter.core.addresses import Address, AddressError, domain_name
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.values import seconds

# Postfix table types whose NAME is a file: postmap reads them (hash, btree,
# lmdb and cdb through their built database file NAME.db / .lmdb / .cdb).
POSTFIX_TYPES = frozenset(
    {"texthash", "hash", "btree", "lmdb", "cdb", "regexp", "pcre", "pgsql", "mysql", "ldap"}
)
# Tables of patterns: Postfix asks them only with the full address (the first key).
PATTERN_TYPES = frozenset({"regexp", "pcre"})
SQL_TYPE = "sql"
MAP_TYPES = POSTFIX_TYPES | {SQL_TYPE}
# The file postmap opens for each type, as a suffix of NAME ("" = NAME itself).
DATABASE_SUFFIX = {"hash": ".db", "btree": ".db", "lmdb": ".lmdb", "cdb": ".cdb"}
_OWNER_SPLIT = re.compile(r"[,\s]+")
_SPEC_SPLIT = re.compile(r"[,\s]+")
_QUOTED_PAIR = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class MapSpec:
    """One map of ``sender-login-maps``: its type and its (absolute) file name."""

    type: str
    name: str

    @property
    def text(self) -> str:
        return f"{self.type}:{self.name}"

    @property
    def pattern(self) -> bool:
        return self.type in PATTERN_TYPES

    @property
    def database_file(self) -> str:
        """The file that must exist for this map to answer."""
        return self.name + DATABASE_SUFFIX.get(self.type, "")

    def __str__(self) -> str:
        return self.text


def parse_map_spec(text: str) -> MapSpec:
    """``TYPE:/absolute/file``; one clear SettingError otherwise."""
    kind, colon, name = text.strip().partition(":")
    kind = kind.lower()
    if not colon or not kind:
        raise SettingError(f"bad map {text!r}: expected TYPE:/path, e.g. texthash:/etc/postfix/x")
    if kind == "proxy":
        raise SettingError(
            f"bad map {text!r}: write the table without 'proxy:' (the milter reads it itself)"
        )
    if kind not in MAP_TYPES:
        known = ", ".join(sorted(MAP_TYPES))
        raise SettingError(f"bad map {text!r}: unknown type {kind!r}; known: {known}")
    if not name.startswith("/") or not name.isprintable():
        raise SettingError(f"bad map {text!r}: NAME must be an absolute file path")
    return MapSpec(kind, name)


def parse_map_list(text: str) -> tuple[MapSpec, ...]:
    """An ordered list of maps, separated by commas or white space, duplicates dropped."""
    specs: list[MapSpec] = []
    for item in _SPEC_SPLIT.split(text.strip()):
        if item:
            spec = parse_map_spec(item)
            if spec not in specs:
                specs.append(spec)
    return tuple(specs)


def canonical_map_list(text: str) -> str:
    return ", ".join(spec.text for spec in parse_map_list(text))


MAX_MAP_TTL = 86400


def canonical_ttl(text: str) -> str:
    word = text.strip().lower().removesuffix("s")
    if not word.isdigit() or int(word) > MAX_MAP_TTL:
        raise SettingError(f"bad time to live {text!r}: whole seconds from 0 to {MAX_MAP_TTL}")
    return str(int(word))


MAX_MAP_TIMEOUT = 30.0
canonical_map_timeout = seconds("sender-login-maps-timeout", MAX_MAP_TIMEOUT)


def canonical_config_dir(text: str) -> str:
    """Empty (Postfix's own default), or an absolute directory path, without a trailing '/'."""
    path = text.strip()
    if not path:
        return ""
    if not path.startswith("/") or not path.isprintable() or any(c.isspace() for c in path):
        raise SettingError(f"bad directory {text!r}: an absolute path such as /etc/postfix")
    return path.rstrip("/") or "/"


def canonical_domains(text: str) -> str:
    names: list[str] = []
    for raw in text.replace(",", " ").split():
        try:
            name = domain_name(raw)
        except AddressError as exc:
            raise SettingError(f"bad domain {raw!r}: {exc}") from exc
        if name not in names:
            names.append(name)
    return ", ".join(names)


def garbage(value: str) -> str | None:
    """Why a map's value cannot be a list of logins (None when it can).

    Bytes that were not UTF-8 (decoded as U+FFFD) and control or format
    characters other than the separators mean a broken map or the wrong
    column, not an owner: the lookup fails (tempfail), it is not read as
    "owned by nobody".
    """
    if "\ufffd" in value:
        return "a value that is not UTF-8"
    if any(unicodedata.category(ch) in ("Cc", "Cf") and ch not in " \t" for ch in value):
        return "a value with control characters"
    return None


def split_owners(value: str) -> tuple[str, ...]:
    """A map's value as Postfix reads it: names separated by commas and white space."""
    return tuple(name for name in _OWNER_SPLIT.split(value) if name)


def same_login(login: str, owner: str) -> bool:
    """Postfix's strcasecmp_utf8: ASCII case-insensitive, else full Unicode case folding.

    Nothing else is normalised: ``alice+tag@x`` is not ``alice@x``.
    """
    return login.casefold() == owner.casefold()


class MapOutcome(StrEnum):
    FOUND = "found"
    NOT_FOUND = "not-found"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class MapAnswer:
    """What ``sender-login-maps`` said about one sender.

    FOUND: ``map`` answered ``key`` with ``owners`` (possibly none: a value of
    separators only).  NOT_FOUND: no map had any of the sender's keys.
    FAILED: a map could not be read in time (``error`` says why); the
    decision then fails closed.
    """

    outcome: MapOutcome
    owners: tuple[str, ...] = ()
    map: str | None = None
    key: str | None = None
    error: str | None = None

    def owned_by(self, login: str) -> bool:
        login = login.strip()
        return self.outcome is MapOutcome.FOUND and any(same_login(login, o) for o in self.owners)

    def names(self, sender: Address) -> bool:
        """The answer is for ``sender``'s full address itself, not for its cut
        sub-address, a bare local part or ``@domain``: the sender has owners of its
        own, and is never judged as its sub-address (docs/policy.md#sub-addresses)."""
        local, at, domain = (self.key or "").rpartition("@")
        if self.outcome is not MapOutcome.FOUND or not at or not local:
            return False
        if len(local) > 1 and local[0] == local[-1] == '"':
            local = _QUOTED_PAIR.sub(r"\1", local[1:-1])
        try:
            same_domain = domain_name(domain) == sender.domain
        except AddressError:
            return False
        return same_domain and local.casefold() == sender.local.casefold()


NOT_FOUND = MapAnswer(MapOutcome.NOT_FOUND)


def found(map_name: str, key: str, value: str) -> MapAnswer:
    return MapAnswer(MapOutcome.FOUND, split_owners(value), map_name, key)


def failed(error: str) -> MapAnswer:
    return MapAnswer(MapOutcome.FAILED, error=error)
