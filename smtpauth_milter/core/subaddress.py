"""Where Postfix cuts a sub-address off a local part (``recipient_delimiter``). Pure.

One place for the rule: the sender-login-maps keys (lookups/keys.py), the
normalised address (:func:`smtpauth_milter.core.addresses.normalise`) and the
sender's own sub-address in ownership (core/ownership.py) all cut here.
"""

from __future__ import annotations

# Local parts Postfix never splits at a delimiter (postmaster, mailer-daemon,
# $double_bounce_sender); with ``-`` a delimiter, nor ``owner-*`` and ``*-request``.
UNSPLIT = frozenset({"postmaster", "mailer-daemon", "double-bounce"})


def split_local(local: str, delimiters: str) -> str | None:
    """The local part cut at its first delimiter character, as Postfix's split_addr
    cuts it; None when Postfix does not cut (no delimiter, nothing before it, or one
    of the local parts it never splits)."""
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
