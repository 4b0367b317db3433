"""The keys Postfix's smtpd asks ``smtpd_sender_login_maps`` for, in its order. Pure.

``postmap -q`` and a SQL query do one literal lookup each, so the sequence
smtpd would try (mail_addr_find with its default flags, Postfix 3.7) is built
here; docs/mail-system-data.md#the-keys-asked-for lists it for admins.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from smtpauth_milter.core.addresses import Address

# Local parts never split at a delimiter (postmaster, mailer-daemon, $double_bounce_sender).
UNSPLIT = frozenset({"postmaster", "mailer-daemon", "double-bounce"})
_NEEDS_QUOTES = re.compile(r'[ \x00-\x1f\x7f()<>@,;:\\"\[\]]')
_UNUSABLE = re.compile(r"[\x00\r\n]")  # a postmap batch is one key per line


@dataclass(frozen=True, slots=True)
class Probe:
    """One key to ask for. ``partial`` keys are never sent to regexp/pcre tables."""

    key: str
    partial: bool


def _fold(text: str) -> str:
    """smtpd case-folds the whole key (full Unicode folding, smtputf8_enable=yes)."""
    return text.casefold()


def split_local(local: str, delimiters: str) -> str | None:
    """The local part cut at the first delimiter character; None when Postfix does not cut."""
    if not delimiters:
        return None
    lowered = local.lower()
    if lowered in UNSPLIT:
        return None
    if "-" in delimiters and (
        lowered.startswith("owner-") or (len(local) > 8 and lowered.endswith("-request"))
    ):
        return None
    cut = next((i for i, ch in enumerate(local) if ch in delimiters), len(local))
    if cut in (0, len(local)):
        return None
    return local[:cut]


def quote_local(local: str) -> str:
    """RFC 822 external form: quoted unless it is a plain dot-string (8-bit allowed)."""
    if (
        local
        and not local.startswith(".")
        and not local.endswith(".")
        and ".." not in local
        and _NEEDS_QUOTES.search(local) is None
    ):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lookup_keys(
    sender: Address, delimiters: str, local_domains: Collection[str] = ()
) -> tuple[Probe, ...]:
    """Every key for ``sender``, first to last; the first key with an answer wins.

    1. ``user+ext@domain``; 2. ``user@domain`` (cut at the first delimiter);
    3. ``user+ext`` then ``user``, only when ``domain`` is in ``local_domains``
    (Postfix: $myorigin and $mydestination); 4. ``@domain``.  Each address key
    is asked in its quoted form first and, when that differs, unquoted.
    """
    local = _fold(sender.local or "MAILER-DAEMON")
    domain = _fold(sender.domain)
    probes: list[Probe] = []

    def add(local_part: str, at_domain: str | None, partial: bool) -> None:
        suffix = f"@{at_domain}" if at_domain is not None else ""
        quoted = quote_local(local_part) + suffix
        probes.append(Probe(quoted, partial))
        raw = local_part + suffix
        if raw != quoted:
            probes.append(Probe(raw, partial))

    add(local, domain, False)
    bare = split_local(local, delimiters)
    if bare is not None:
        add(bare, domain, True)
    if domain in local_domains:
        add(local, None, True)
        if bare is not None:
            add(bare, None, True)
    probes.append(Probe(f"@{domain}", True))
    return tuple(p for p in probes if _UNUSABLE.search(p.key) is None)
