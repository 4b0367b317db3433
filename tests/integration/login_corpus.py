"""A seeded mail system (PostfixAdmin-shaped) and a corpus of (login, MAIL FROM) pairs.

Pure and deterministic: the same seed gives the same data and the same pairs.
The differential tests (``test_login_maps_differential.py``) send every pair
through a real Postfix twice, once decided by Postfix's own
``reject_authenticated_sender_login_mismatch`` and once by our milter, and
compare the verdicts.

The mail system has mailboxes (the SASL login is the mailbox's address, some
inactive), aliases with one or more owners (the ``goto`` list, sometimes in
another case, sometimes a bare login), catch-all aliases (``@domain``), alias
domains, bare logins (``carol``), a login in mixed case, a login with a
sub-address and an internationalised domain.  Senders cover own addresses,
sub-addresses, case variants, aliases owned and not, alias domains, catch-all
domains, bare local parts (no domain), the IDN domain in both its spellings
(rows written either way, senders sent either way),
inactive mailboxes, unknown local parts and remote domains.

Postfix's ``recipient_delimiter`` (and our ``recipient-delimiter``) is ``+-``:
logins and keys that hold a delimiter character or a dot (``bob-smith@`` beside
``bob@``, ``jean-pierre@`` beside ``jean@``, ``mary.ann@`` beside ``mary@``, an
alias ``sales-team@`` beside ``sales@``, a key ``news+jobs@``, ``owner-sales@``,
a login ``bob+work@``) meet each other in :data:`DELIMITER_PAIRS`
(docs/policy.md#sub-addresses).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

SEED = 1010
RECIPIENT = "rcpt@far.test"  # every pair is sent to this one remote recipient
REAL_DOMAINS = ("example.com", "example.net", "shop.test")
IDN_DOMAIN = "bücher.test"
IDN_DOMAIN_ASCII = "xn--bcher-kva.test"
ALIAS_DOMAINS = {"example.org": "example.com", "shop-alias.test": "shop.test"}
REMOTE_DOMAINS = ("remote.test", "gmail.test")
# Postfix looks up a bare local part (``carol``) only for these ($mydestination, $myorigin).
MYDESTINATION = ("example.com", "example.net")
MYORIGIN = "mta.sandbox.test"
MAILBOXES_PER_DOMAIN = {"example.com": 25, "example.net": 20, "shop.test": 20}
BARE_LOGINS = ("carol", "dan", "erin")
MIN_PAIRS = 2000
PAIRS_PER_LOGIN = 28
FIRST_NAMES = (
    "alice", "bob", "chris", "diana", "eve", "frank", "grace", "heidi", "ivan", "judy", "ken",
    "laura", "mallory", "nina", "oscar", "peggy", "quinn", "rupert", "sybil", "trent", "ursula",
    "victor", "walter", "xena", "yusuf", "zoe", "o.neil", "li_wei", "ann-marie",
)  # fmt: skip
ROLE_NAMES = ("sales", "info", "support", "billing", "jobs", "press", "team", "office")
DELIMITERS = "+-"  # recipient_delimiter / recipient-delimiter
# Mailboxes whose local parts hold a delimiter or a dot, beside the ones they start with.
DELIMITER_MAILBOXES = tuple(
    f"{name}@example.com"
    for name in ("bob", "bob-smith", "jean", "jean-pierre", "mary", "mary.ann", "sam")
)


@dataclass(frozen=True)
class MailSystem:
    """What a PostfixAdmin database holds, plus the logins Dovecot knows."""

    mailboxes: dict[str, bool]  # username (the login) -> active
    aliases: dict[str, tuple[str, ...]]  # "user@domain" or "@domain" -> goto (owners)
    alias_domains: dict[str, str]  # alias domain -> target domain
    # Texthash only: a bare local part key (Postfix asks it for local domains) -> owners.
    bare_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Logins that are not a mailbox's address as written (mixed case, sub-address, bare).
    extra_logins: tuple[str, ...] = ()

    @property
    def logins(self) -> tuple[str, ...]:
        return (*self.mailboxes, *self.extra_logins)

    def owner_table(self) -> dict[str, tuple[str, ...]]:
        """Key -> owners, as the PostfixAdmin queries answer them (the texthash source).

        A mailbox owns itself (active only); an alias adds its goto list; an
        address in an alias domain has the owners of the same local part in the
        target domain.  Catch-alls (``@domain``) and bare keys answer for themselves.
        """
        table: dict[str, list[str]] = {}
        for username, active in self.mailboxes.items():
            if active:
                table.setdefault(username, []).append(username)
        for address, goto in self.aliases.items():
            table.setdefault(address, []).extend(goto)
        for alias, target in self.alias_domains.items():
            for key, owners in list(table.items()):
                local, _, domain = key.rpartition("@")
                if local and domain == target:
                    table.setdefault(f"{local}@{alias}", []).extend(owners)
        for key, owners in self.bare_keys.items():
            table.setdefault(key, []).extend(owners)
        return {key: tuple(dict.fromkeys(owners)) for key, owners in table.items()}


@dataclass(frozen=True)
class Pair:
    login: str
    sender: str  # the MAIL FROM address, without angle brackets


def _cased(rng: random.Random, address: str) -> str:
    """The same address in another case (some letters, all, or the domain only)."""
    local, _, domain = address.rpartition("@")
    choice = rng.randrange(3)
    if choice == 0:
        return address.upper()
    if choice == 1:
        return f"{local}@{domain.upper()}"
    return "".join(ch.upper() if rng.random() < 0.5 else ch for ch in address)


def build_mail_system(seed: int = SEED) -> MailSystem:
    rng = random.Random(seed)
    mailboxes: dict[str, bool] = {}
    for domain, count in MAILBOXES_PER_DOMAIN.items():
        names = rng.sample(FIRST_NAMES, min(count, len(FIRST_NAMES)))
        for name in names[:count]:
            mailboxes[f"{name}@{domain}"] = True
    mailboxes["anna@" + IDN_DOMAIN] = True
    mailboxes["jörg@" + IDN_DOMAIN] = True
    # Inactive mailboxes: the login still authenticates, but no map lists it.
    for username in rng.sample(sorted(mailboxes), 3):
        mailboxes[username] = False
    active = sorted(u for u, ok in mailboxes.items() if ok and u.isascii())
    aliases: dict[str, tuple[str, ...]] = {}
    for domain in REAL_DOMAINS:
        for role in ROLE_NAMES:
            owners = rng.sample(active, rng.randint(1, 3))
            if rng.random() < 0.25:
                owners.append(rng.choice(BARE_LOGINS))
            if rng.random() < 0.2:
                owners[0] = owners[0].upper()  # Postfix compares owners without case
            if rng.random() < 0.15:
                owners.append("someone@remote.test")  # an owner that is nobody's login
            aliases[f"{role}@{domain}"] = tuple(owners)
    # A mailbox with an alias of its own address that adds a second owner.
    shared = rng.choice(active)
    aliases[shared] = (shared, rng.choice(BARE_LOGINS))
    # Non-ASCII: a local part (Postfix's pgsql: client never matches it) and an IDN domain.
    mailboxes["zoë@example.net"] = True
    aliases["café@example.net"] = (rng.choice(active), "zoë@example.net")
    aliases[f"info@{IDN_DOMAIN}"] = (rng.choice(active),)
    # The same domain's alias written in its xn-- spelling, as some admin tools store it.
    aliases[f"team@{IDN_DOMAIN_ASCII}"] = (rng.choice(active),)
    # Catch-alls: every address of the domain that has no entry of its own.
    aliases["@shop.test"] = (rng.choice([u for u in active if u.endswith("@shop.test")]),)
    aliases["@example.net"] = ("dan",)
    bare_keys = {"carol": ("carol",), "dan": ("dan", "erin")}
    # Delimiters in logins and keys (no random numbers drawn: the rest stays as it was).
    mailboxes.update(dict.fromkeys(DELIMITER_MAILBOXES, True))
    aliases["sales-team@example.com"] = ("sam@example.com",)
    aliases["news+jobs@example.net"] = ("mary.ann@example.com",)
    aliases["owner-sales@example.com"] = ("bob-smith@example.com",)
    mixed_case = next(u for u in active if u.endswith("@example.com"))
    tagged = next(u for u in reversed(active) if u.endswith("@example.com"))
    local, _, domain = tagged.rpartition("@")
    extra = (mixed_case.title(), f"{local}+work@{domain}", *BARE_LOGINS, "bob+work@example.com")
    return MailSystem(mailboxes, aliases, dict(ALIAS_DOMAINS), bare_keys, extra)


def _with_tag(address: str, tag: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}+{tag}@{domain}"


def _in_alias_domain(address: str) -> str | None:
    local, _, domain = address.rpartition("@")
    for alias, target in ALIAS_DOMAINS.items():
        if target == domain.lower():
            return f"{local}@{alias}"
    return None


def _is_idn(address: str) -> bool:
    return address.rpartition("@")[2].lower() in (IDN_DOMAIN, IDN_DOMAIN_ASCII)


def _other_spelling(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{IDN_DOMAIN if domain.lower() == IDN_DOMAIN_ASCII else IDN_DOMAIN_ASCII}"


def _candidates(rng: random.Random, system: MailSystem, login: str) -> Iterable[str]:
    """Senders for one login, most interesting first."""
    owned = [a for a, goto in system.aliases.items() if login.lower() in {g.lower() for g in goto}]
    others = [a for a in system.aliases if a not in owned and not a.startswith("@")]
    mailboxes = sorted(system.mailboxes)
    if "@" in login:
        yield login
        yield _cased(rng, login)
        yield _with_tag(login, "news")
        yield from filter(None, (_in_alias_domain(login),))
        yield login.partition("@")[0]  # no domain: Postfix appends @$myorigin
    else:
        yield login
        yield f"{login}@{rng.choice(MYDESTINATION)}"
        yield f"{login}+x@{rng.choice(MYDESTINATION)}"
    owned.sort(key=lambda a: not _is_idn(a))  # the IDN ones first: they must not be cut
    for address in [a for a in owned if not a.startswith("@")][:4]:
        yield rng.choice((address, _cased(rng, address), _with_tag(address, "t")))
        yield from filter(None, (_in_alias_domain(address),))
        if _is_idn(address):
            yield _other_spelling(address)
    for _ in range(4):
        yield rng.choice(others)
    for _ in range(3):
        yield rng.choice(mailboxes)
    for domain in (*REAL_DOMAINS, *ALIAS_DOMAINS):
        yield f"nobody{rng.randrange(1000)}@{domain}"
    yield f"{rng.choice(FIRST_NAMES)}@{rng.choice(REMOTE_DOMAINS)}"
    idn_local = rng.choice(["anna", "jörg", "ANNA", "info", "team", "Team+x"])
    yield f"{idn_local}@{rng.choice([IDN_DOMAIN, IDN_DOMAIN_ASCII])}"
    yield rng.choice(["carol", "dan", "erin", "nobody", "Carol"])
    while True:
        kind = rng.randrange(4)
        if kind == 0:
            yield _cased(rng, rng.choice(others))
        elif kind == 1:
            yield _with_tag(rng.choice(mailboxes), f"{rng.randrange(100)}")
        elif kind == 2:
            address = _in_alias_domain(rng.choice(mailboxes))
            yield address or rng.choice(mailboxes)
        else:
            yield f"{rng.choice(FIRST_NAMES)}@{rng.choice((*REAL_DOMAINS, *REMOTE_DOMAINS))}"


# Senders every login of DELIMITER_MAILBOXES (and the owners of the aliases above) tries.
DELIMITER_SENDERS = (
    "bob@example.com", "bob-smith@example.com", "Bob-Smith@Example.com", "bob+news@example.com",
    "bob-news@example.com", "bob-smith+x@example.com", "bob-smith-x@example.com",
    "jean@example.com", "jean-pierre@example.com", "jean+x@example.com", "jean-x@example.com",
    "mary@example.com", "mary.ann@example.com", "mary.ann+x@example.com", "mary.ann-x@example.com",
    "mary-ann@example.com", "sales@example.com", "sales-team@example.com",
    "sales-team+x@example.com", "sales-team-x@example.com", "sales-x@example.com",
    "sam@example.com", "sam-x@example.com", "news@example.net", "news+jobs@example.net",
    "news-jobs@example.net", "news+jobs+x@example.net", "owner-sales@example.com",
    "owner@example.com", "owner-sales+x@example.com", "bob+work@example.com",
    "bob-smith@example.org", "bob+x@example.org",
)  # fmt: skip
DELIMITER_LOGINS = (*DELIMITER_MAILBOXES, "bob+work@example.com")


def delimiter_pairs() -> list[Pair]:
    """Every login with a delimiter or a dot (and its neighbours) against every such sender."""
    return [Pair(login, sender) for login in DELIMITER_LOGINS for sender in DELIMITER_SENDERS]


def build_corpus(system: MailSystem, seed: int = SEED) -> list[Pair]:
    """About PAIRS_PER_LOGIN distinct senders for every login, at least MIN_PAIRS in all,
    and :func:`delimiter_pairs`."""
    rng = random.Random(seed + 1)
    pairs: list[Pair] = []
    for login in system.logins:
        seen: set[str] = set()
        for sender in _candidates(rng, system, login):
            if sender not in seen:
                seen.add(sender)
                pairs.append(Pair(login, sender))
            if len(seen) >= PAIRS_PER_LOGIN:
                break
    assert len(pairs) >= MIN_PAIRS, len(pairs)
    known = set(pairs)
    return pairs + [pair for pair in delimiter_pairs() if pair not in known]


PASSWORD = "corpus-secret"  # every login's password (Dovecot passwd-file, AUTH PLAIN)
