"""Reading Postfix's configuration: ``postconf``, ``postmap`` and its domain lists.

Used by ``doctor`` (to compare) and ``domain sync --from-postfix`` (to copy).
Every program runs with a timeout; a failure is one :class:`SmtpauthError` line.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from smtpauth_milter.core.addresses import AddressError, domain_name
from smtpauth_milter.core.errors import SmtpauthError

POSTCONF_TIMEOUT = 10.0
MAX_LIST_FILE = 4 * 1024 * 1024  # a /file domain list larger than this is not read
# The domains Postfix delivers for itself: its local domains.
LOCAL_DOMAIN_PARAMS = ("mydestination", "virtual_mailbox_domains", "virtual_alias_domains")
# ... and the ones it relays for, which doctor also compares.
DOMAIN_PARAMS = (*LOCAL_DOMAIN_PARAMS, "relay_domains")
_SPLIT = re.compile(r"[\s,]+")
_LOOKUP = re.compile(r"^[a-z0-9_-]+:")


def run(argv: Sequence[str]) -> str:
    """Run a Postfix tool; its stdout, or one error line."""
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=POSTCONF_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SmtpauthError(f"cannot run {argv[0]}: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise SmtpauthError(f"{' '.join(argv)}: {detail}")
    return done.stdout


def default_config_dir() -> str:
    return run(["postconf", "-h", "config_directory"]).strip()


def postconf(config_dir: str, names: Sequence[str]) -> dict[str, str]:
    """Each parameter's value, ``$name`` references expanded (``postconf -x``)."""
    return {name: run(["postconf", "-c", config_dir, "-x", "-h", name]).strip() for name in names}


def postmap_has(config_dir: str, key: str, table: str) -> bool | None:
    """``postmap -q``: found, not found, or None when the table cannot be queried.

    postmap exits 1 both for "not found" and for a fatal error (a missing or
    unreadable table): only a quiet exit 1 means "not found".
    """
    try:
        done = subprocess.run(
            ["postmap", "-c", config_dir, "-q", key, table],
            capture_output=True, timeout=POSTCONF_TIMEOUT, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode == 1 and done.stderr.strip():
        return None
    return {0: True, 1: False}.get(done.returncode)


def read_list_file(path: str) -> str | None:
    """The text of a ``/file`` domain list; None when it cannot be read."""
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_LIST_FILE + 1)
    except OSError:
        return None
    if len(data) > MAX_LIST_FILE:
        return None
    return data.decode("utf-8", errors="replace")


def domain_tokens(value: str) -> tuple[list[str], list[str]]:
    """A Postfix domain list: (literal names, ``type:table`` or ``/file`` lookups)."""
    names: list[str] = []
    lookups: list[str] = []
    for token in _SPLIT.split(value.strip()):
        if not token:
            continue
        if token.startswith("/") or _LOOKUP.match(token):
            lookups.append(token)
        else:
            names.append(token)
    return names, lookups


def _file_tokens(text: str) -> str:
    """A ``/file`` list's text without its ``#`` comments, as one domain list."""
    return " ".join(line.split("#", 1)[0] for line in text.splitlines())


@dataclass
class PostfixDomains:
    """What Postfix's domain parameters say.

    ``domains``: each listable domain and the parameter naming it; ``lookups``:
    (table, parameter) pairs whose domains cannot be listed (``hash:`` ...,
    an unreadable ``/file``); ``skipped``: (token, parameter) that are no
    domain name (``*.example.com``, a broken entry).
    """

    domains: dict[str, str] = field(default_factory=dict)
    lookups: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _is_localhost(name: str) -> bool:
    return name == "localhost" or name.startswith("localhost.")


def postfix_domains(
    params: Mapping[str, str],
    names: Sequence[str] = DOMAIN_PARAMS,
    read_list: Callable[[str], str | None] = read_list_file,
) -> PostfixDomains:
    """The domains of ``names`` in ``params`` (values as ``postconf -x`` prints them).

    A ``/file`` list is read with ``read_list`` (one level: a lookup inside it is
    not listed); ``localhost`` and ``localhost.*`` are never domains of ours.
    """
    found = PostfixDomains()

    def take(value: str, param: str, files: bool) -> None:
        literal, lookups = domain_tokens(value)
        for token in literal:
            try:
                if token.startswith((".", "!")):  # subdomain and negation patterns
                    raise AddressError(token)
                name = domain_name(token)
            except AddressError:
                found.skipped.append((token, param))
                continue
            if not _is_localhost(name):
                found.domains.setdefault(name, param)
        for table in lookups:
            text = read_list(table) if files and table.startswith("/") else None
            if text is None:
                found.lookups.append((table, param))
            else:
                take(_file_tokens(text), param, files=False)

    for param in names:
        take(params.get(param, ""), param, files=True)
    return found
