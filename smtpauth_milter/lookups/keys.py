"""The keys Postfix's smtpd asks ``smtpd_sender_login_maps`` for, in its order. Pure.

``postmap -q`` and a SQL query do one literal lookup each, so the sequence
smtpd would try (mail_addr_find with its default flags, Postfix 3.7) is built
here; docs/mail-system-data.md#the-keys-asked-for lists it for admins.  Unlike
Postfix, a domain with an internationalised name is asked in both spellings:
each key as the client wrote it, then in the other (``xn--`` A-label or
Unicode U-label), so a row written either way answers.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from smtpauth_milter.core.addresses import Address, unicode_domain
from smtpauth_milter.core.subaddress import split_local

__all__ = ["Probe", "domain_spellings", "lookup_keys", "quote_local", "split_local"]

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


def domain_spellings(sender: Address) -> tuple[str, ...]:
    """The sender's domain as sent (case-folded, as Postfix asks it), then its other
    IDNA spelling when it has one: ``bücher.example``, ``xn--bcher-kva.example``."""
    normal = _fold(sender.domain)
    sent = _fold(sender.domain_as_sent or normal)
    return tuple(dict.fromkeys((sent, normal, _fold(unicode_domain(normal)))))


def lookup_keys(
    sender: Address, delimiters: str, local_domains: Collection[str] = ()
) -> tuple[Probe, ...]:
    """Every key for ``sender``, first to last; the first key with an answer wins.

    1. ``user+ext@domain``; 2. ``user@domain`` (cut at the first delimiter);
    3. ``user+ext`` then ``user``, only when ``domain`` is in ``local_domains``
    (Postfix: $myorigin and $mydestination; normalised names); 4. ``@domain``.
    Each address key is asked in its quoted form first and, when that differs,
    unquoted; each key with a domain in every spelling (:func:`domain_spellings`).
    """
    local = _fold(sender.local or "MAILER-DAEMON")
    domains = domain_spellings(sender)
    probes: list[Probe] = []

    def add(local_part: str, with_domain: bool, partial: bool) -> None:
        for text in dict.fromkeys((quote_local(local_part), local_part)):
            suffixes = [f"@{d}" for d in domains] if with_domain else [""]
            probes.extend(Probe(text + suffix, partial) for suffix in suffixes)

    add(local, True, False)
    bare = split_local(local, delimiters)
    if bare is not None:
        add(bare, True, True)
    if _fold(sender.domain) in local_domains:
        add(local, False, True)
        if bare is not None:
            add(bare, False, True)
    probes.extend(Probe(f"@{domain}", True) for domain in domains)
    return tuple(p for p in probes if _UNUSABLE.search(p.key) is None)
