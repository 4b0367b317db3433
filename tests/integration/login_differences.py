"""The differences from Postfix that docs/mail-system-data.md lists, as predictions.

Each :class:`Difference` names a kind of pair on which our milter is *meant*
to decide unlike Postfix's ``reject_authenticated_sender_login_mismatch``,
and predicts our verdict for it.  The differential test expects, for every
pair, the prediction of the first difference that applies, and Postfix's own
verdict for every other pair: any other disagreement fails.  ``doc`` is a
phrase that must appear in the "Differences from Postfix" section.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import idna

from smtpauth_milter.core.addresses import (
    Address,
    AddressError,
    domain_name,
    normalise,
    parse_address,
    parse_path,
)
from smtpauth_milter.core.subaddress import split_local

from .login_corpus import DELIMITERS, MailSystem, Pair
from .login_maps_harness import ACCEPT, REFUSE

DELIMITER = DELIMITERS
Predict = Callable[[Pair], str | None]
# Whether a sender's full address has owners of its own (so it is never cut).
Named = Callable[[Address], bool]


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


def _parsed(text: str) -> Address | None:
    try:
        return parse_address(text)
    except AddressError:
        return None


def _cut(sender: Address, named: Named) -> Address | None:
    """The sender's own sub-address cut as Postfix cuts it, when the milter cuts it:
    only when nothing names its full address (docs/policy.md#sub-addresses)."""
    base = split_local(sender.local, DELIMITER)
    return None if base is None or named(sender) else Address(base, sender.domain)


def map_names(table: Mapping[str, Sequence[str]], utf8_keys: bool = True) -> Named:
    """A map answers for the sender's full address itself (in either IDN spelling)."""
    full = set()
    for key in table:
        parsed = _parsed(key) if utf8_keys or key.isascii() else None
        if parsed is not None:
            full.add((parsed.local.casefold(), parsed.domain))
    return lambda sender: (sender.local.casefold(), sender.domain) in full


def store_names(system: MailSystem) -> Named:
    """A grant names the full address, or a login that holds a grant is it (also the
    same local part in an alias domain's target): Snapshot.owned_addresses."""
    named = set()
    for address, goto in system.aliases.items():
        for text in (address, *goto):
            parsed = _parsed(text) if not text.startswith("@") else None
            if parsed is not None:
                named.add(normalise(parsed, ""))

    def names(sender: Address) -> bool:
        target = system.alias_domains.get(sender.domain)
        in_target = [Address(sender.local, target)] if target is not None else []
        return any(normalise(a, "") in named for a in (sender, *in_target))

    return names


def own_address(named: Named) -> Difference:
    """The login, read as an address, is the sender (case and IDN form aside), or the
    sender's own sub-address when nothing names the full address: the built-in form
    answers, whatever the map says of the mailbox."""

    def predict(pair: Pair) -> str | None:
        login, sender = _parsed(pair.login), _parsed(pair.sender)
        if login is None or sender is None:
            return None
        cut = _cut(sender, named)
        mine = {normalise(a, "") for a in (sender, cut) if a is not None}
        return ACCEPT if normalise(login, "") in mine else None

    return Difference("own-address", "its own address", predict)


def _spellings(domain: str) -> tuple[str, str] | None:
    """(as sent, case-folded; the other IDNA spelling) of an internationalised domain."""
    try:
        a_label = domain_name(domain)
    except AddressError:
        return None
    if "xn--" not in a_label:
        return None
    sent = domain.casefold().removesuffix(".")
    return (sent, idna.decode(a_label).casefold() if sent == a_label else a_label)


def other_spelling(table: Mapping[str, Sequence[str]], utf8_keys: bool = True) -> Difference:
    """A sender of an internationalised domain whose first answer comes from the key in
    the other spelling (``xn--`` for a Unicode sender, or the reverse): Postfix never
    asks that key.  ``table`` is what the maps answer (owner_table); ``utf8_keys`` False:
    the map never matches a non-ASCII key (Postfix's pgsql: client, LATIN1)."""
    folded = {k.casefold(): v for k, v in table.items() if utf8_keys or k.isascii()}

    def predict(pair: Pair) -> str | None:
        local, at, domain = pair.sender.rpartition("@")
        spellings = _spellings(domain) if at else None
        if spellings is None:
            return None
        local = local.casefold()
        cut = split_local(local, DELIMITER)
        keys = [(f"{part}@{d}", d) for part in filter(None, (local, cut)) for d in spellings]
        keys += [(f"@{d}", d) for d in spellings]
        hit = next(((key, d) for key, d in keys if key in folded), None)
        if hit is None or hit[1] == spellings[0]:
            return None  # no answer, or the spelling Postfix asks: Postfix's verdict
        owners = {o.casefold() for o in folded[hit[0]]}
        return ACCEPT if pair.login.casefold() in owners else REFUSE

    return Difference("other-spelling", "the other spelling", predict)


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
    """A login owns its own address (and its own sub-address, when nothing names the
    full address) in every alias domain of its domain, whatever a map says of its
    mailbox (inactive): the built-in forms answer."""
    named = store_names(system)

    def predict(pair: Pair) -> str | None:
        login, sender = _parsed(pair.login), _parsed(pair.sender)
        target = system.alias_domains.get(sender.domain) if sender is not None else None
        if login is None or sender is None or target is None:
            return None
        cut = _cut(sender, named)
        mine = {normalise(Address(a.local, target), "") for a in (sender, cut) if a is not None}
        return ACCEPT if normalise(login, "") in mine else None

    return Difference("alias-own-address", "own address in every alias domain", predict)


def store_sub_address(system: MailSystem) -> Difference:
    """The store knows only the addresses its grants and logins name: a sender whose
    full address none names is cut, and a grant of the cut address owns it, where
    Postfix's map may answer for the full address (a mailbox ``bob-smith@``)."""
    named = store_names(system)
    owners_of: dict[str, set[str]] = {}
    for address, goto in system.aliases.items():
        parsed = _parsed(address) if not address.startswith("@") else None
        if parsed is not None:
            owners_of.setdefault(normalise(parsed, ""), set()).update(o.lower() for o in goto)

    def predict(pair: Pair) -> str | None:
        sender = _parsed(pair.sender)
        cut = _cut(sender, named) if sender is not None else None
        if cut is None:
            return None
        target = system.alias_domains.get(cut.domain)
        keys = [normalise(cut, "")]
        if target is not None:
            keys.append(normalise(Address(cut.local, target), ""))
        owners = set().union(*(owners_of.get(key, set()) for key in keys))
        return ACCEPT if pair.login.strip().lower() in owners else None

    return Difference("store-sub-address", "does not know every mailbox", predict)


def store_idn(system: MailSystem) -> Difference:
    """The store knows a Unicode domain and its xn-- form as one domain."""
    owners_of: dict[str, set[str]] = {}
    for address, goto in system.aliases.items():
        if _spellings(address.rpartition("@")[2]) is not None:
            key = normalise(parse_address(address), DELIMITER)
            owners_of.setdefault(key, set()).update(o.lower() for o in goto)

    def predict(pair: Pair) -> str | None:
        at, domain = "@" in pair.sender, pair.sender.rpartition("@")[2]
        if not at or _spellings(domain) is None:
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
