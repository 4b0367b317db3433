"""The differences from Postfix that docs/mail-system-data.md lists, as predictions.

Each :class:`Difference` names a kind of pair on which our milter is *meant*
to decide unlike Postfix's ``reject_authenticated_sender_login_mismatch``,
and predicts our verdict for it.  The differential test expects, for every
pair, the prediction of the first difference that applies, and Postfix's own
verdict for every other pair: any other disagreement fails.  ``doc`` is a
phrase that must appear in the "Differences from Postfix" section.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from smtpauth_milter.core.addresses import (
    AddressError,
    domain_name,
    normalise,
    parse_address,
    parse_path,
)

from .login_corpus import MailSystem, Pair
from .login_maps_harness import ACCEPT, REFUSE

DELIMITER = "+"
Predict = Callable[[Pair], str | None]


@dataclass(frozen=True)
class Difference:
    name: str
    doc: str  # a phrase of docs/mail-system-data.md#differences-from-postfix
    predict: Predict  # our verdict for the pair, or None: this difference does not apply


def _domain(sender: str) -> str | None:
    """The sender's domain as the milter reads it (xn-- form); None without one."""
    try:
        parsed = parse_path(f"<{sender}>")
    except AddressError:
        return None
    return parsed.domain if parsed is not None else None


def no_domain() -> Difference:
    return Difference(
        "no-domain",
        "without a domain",
        lambda pair: REFUSE if "@" not in pair.sender else None,
    )


def not_local(store_domains: Collection[str]) -> Difference:
    local = {domain_name(d) for d in store_domains}

    def predict(pair: Pair) -> str | None:
        domain = _domain(pair.sender)
        return ACCEPT if domain is not None and domain not in local else None

    return Difference("not-local", "Only local senders", predict)


def own_address() -> Difference:
    """The login, read as an address, is the sender (case, sub-address, IDN form aside)."""

    def predict(pair: Pair) -> str | None:
        try:
            login = normalise(parse_address(pair.login), DELIMITER)
            sender = normalise(parse_address(pair.sender), DELIMITER)
        except AddressError:
            return None
        return ACCEPT if login == sender else None

    return Difference("own-address", "its own address", predict)


def unicode_domain() -> Difference:
    """A domain in Unicode is looked up in its xn-- form, which no table here lists."""
    return Difference(
        "unicode-domain",
        "looked up in its\n  `xn--` form",
        lambda pair: REFUSE if not pair.sender.rpartition("@")[2].isascii() else None,
    )


def latin1(utf8_reference: Mapping[Pair, str]) -> Difference:
    """Postfix's pgsql: client never matches a non-ASCII key; we do, as Postfix's texthash."""

    def predict(pair: Pair) -> str | None:
        return utf8_reference[pair] if not pair.sender.isascii() else None

    return Difference("pgsql-latin1", "in\nLATIN1", predict)


def store_catch_all(system: MailSystem) -> Difference:
    """A ``@domain`` grant covers every address of the domain (and of its alias domains);
    Postfix's ``@domain`` key only answers for addresses without an entry of their own."""
    owners_of: dict[str, set[str]] = {}
    for address, goto in system.aliases.items():
        if address.startswith("@"):
            for owner in goto:
                owners_of.setdefault(address[1:], set()).add(owner.lower())

    def predict(pair: Pair) -> str | None:
        domain = _domain(pair.sender)
        if domain is None:
            return None
        domain = system.alias_domains.get(domain, domain)
        return ACCEPT if pair.login.lower() in owners_of.get(domain, set()) else None

    return Difference("catch-all", "covers every address", predict)


def store_alias_own_address(system: MailSystem) -> Difference:
    """A login owns its own address in every alias domain of its domain, whatever a map
    says of its mailbox (inactive) or of its sub-address: the built-in forms answer."""

    def predict(pair: Pair) -> str | None:
        domain = _domain(pair.sender)
        target = system.alias_domains.get(domain) if domain is not None else None
        if target is None:
            return None
        try:
            login = normalise(parse_address(pair.login), DELIMITER)
            sender = normalise(parse_address(pair.sender), DELIMITER)
        except AddressError:
            return None
        local = sender.rpartition("@")[0]
        return ACCEPT if login == f"{local}@{target}" else None

    return Difference("alias-own-address", "own address in every alias domain", predict)


def store_idn(system: MailSystem) -> Difference:
    """The store knows a Unicode domain and its xn-- form as one domain."""
    owners_of: dict[str, set[str]] = {}
    for address, goto in system.aliases.items():
        if not address.isascii():
            key = normalise(parse_address(address), DELIMITER)
            owners_of.setdefault(key, set()).update(o.lower() for o in goto)

    def predict(pair: Pair) -> str | None:
        domain = pair.sender.rpartition("@")[2]
        if domain.isascii() and not domain.lower().startswith("xn--"):
            return None
        key = normalise(parse_address(pair.sender), DELIMITER)
        return ACCEPT if pair.login.lower() in owners_of.get(key, set()) else REFUSE

    return Difference("store-idn", "one domain", predict)


def expected(
    pairs: Collection[Pair], postfix: Mapping[Pair, str], differences: list[Difference]
) -> tuple[dict[Pair, str], dict[str, int]]:
    """Our expected verdict of every pair, and how many pairs each difference decided."""
    out: dict[Pair, str] = {}
    used = {d.name: 0 for d in differences}
    for pair in pairs:
        for difference in differences:
            predicted = difference.predict(pair)
            if predicted is not None:
                out[pair] = predicted
                used[difference.name] += 1
                break
        else:
            out[pair] = postfix[pair]
    return out, used
