"""A realistic store and a deterministic mix of SMTP sessions, with the verdict each must get.

The store is written through the project's own ``Store`` and ``editing``
functions (grants in bulk, canonicalised like ``sender allow`` does); the
expected verdicts come from ``smtpauth_milter.core.policy.decide`` run on the
snapshot the milter itself loads from that store.
"""

from __future__ import annotations

import random
import zlib
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import insert

from smtpauth_milter.core.limits import LimitKind
from smtpauth_milter.core.loginpolicy import counted_login, event_of, limits_for
from smtpauth_milter.core.networks import parse_ip
from smtpauth_milter.core.policy import Action, Request, decide
from smtpauth_milter.core.snapshot import Snapshot, grant_login, grant_target
from smtpauth_milter.store import editing
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.models import SendAsGrant

TRUSTED_PREFIX = "198.51.100."  # one of the trusted networks
UNTRUSTED_PREFIX = "203.0.113."
LOGINS = 10_000  # distinct logins in the workload (issue 20's bench)
SESSIONS = 50_000  # scenarios: each of LOGINS sends as itself once per pass over them


@dataclass(frozen=True)
class StoreSize:
    domains: int
    grants: int
    networks: int = 20

    @property
    def label(self) -> str:
        return f"{self.domains} domains / {self.grants} grants / {self.networks} networks"


REALISTIC = StoreSize(domains=40, grants=4_000)
LARGE = StoreSize(domains=10_000, grants=100_000)


def domain(i: int) -> str:
    return f"d{i:05d}.example"


def user_login(i: int, size: StoreSize) -> str:
    return f"user{i}@{domain(i % size.domains)}"


def build_store(url: str, size: StoreSize) -> None:
    """An empty store at ``url`` filled with ``size`` domains, grants and networks."""
    store = Store(url)
    store.create()  # what `smtpauth-milter db init` does
    rng = random.Random(5)  # noqa: S311 - a reproducible mix, not secrets
    with store.write() as session:
        for key, value in {
            "require-auth-local": "on",
            "require-sender-match": "on",
            "exempt-local-recipients": "off",
        }.items():
            editing.set_setting(session, key, value)
        names = [domain(i) for i in range(size.domains)]
        editing.add_domains(session, names)
        session.flush()
        # A few per-domain overrides, as a real site would have.
        for i in range(0, size.domains, 10):
            editing.set_setting(session, "exempt-local-recipients", "on", domain=names[i])
        for i in range(3, size.domains, 17):
            editing.set_setting(session, "bare-login-match", "on", domain=names[i])
        editing.set_setting(session, "dry-run", "on", domain=names[-1])
        editing.add_network(session, TRUSTED_PREFIX + "0/24", "web servers")
        for n in range(1, size.networks):
            editing.add_network(session, f"10.{n}.0.0/16", f"office {n}")
        rows: set[tuple[str, str]] = set()
        while len(rows) < size.grants:
            login = user_login(rng.randrange(size.grants), size)
            if rng.random() < 0.05:
                target = "@" + domain(rng.randrange(size.domains))
            else:
                target = f"alias{rng.randrange(size.grants)}@{domain(rng.randrange(size.domains))}"
            rows.add((grant_login(login), grant_target(target)))
        session.execute(insert(SendAsGrant), [{"login": lg, "target": t} for lg, t in rows])
    store.dispose()


def load_snapshot(url: str) -> Snapshot:
    store = Store(url)
    try:
        return store.load_snapshot()
    finally:
        store.dispose()


@dataclass(frozen=True)
class Scenario:
    """One SMTP session: client, optional login, MAIL FROM, 1-3 RCPTs and the expected replies.

    ``expected`` holds, per recipient, ``"c"`` (continue) or the SMTP reply
    string (``"530 5.7.0 Authentication required"``) the milter must send.
    """

    client: str
    port: int
    login: str | None
    sender: str
    rcpts: tuple[str, ...]
    expected: tuple[str, ...]


def expected_reply(snapshot: Snapshot, request: Request, rcpt: str) -> str:
    verdict = decide(snapshot, request, rcpt)
    if verdict.action in (Action.REJECT, Action.TEMPFAIL):
        return str(verdict.reply)
    return "c"


def scenarios(
    snapshot: Snapshot,
    size: StoreSize,
    count: int = SESSIONS,
    seed: int = 1,
    logins: int = LOGINS,
) -> list[Scenario]:
    """A deterministic mix: ~45% authenticated, ~8% trusted clients, local and remote senders.

    The authenticated sessions take their logins in turn from ``logins`` users
    (and the grants' logins), so that each login sends little per pass over the
    list, and each login connects from one client address of its own: the
    shipped per-login limits allow :func:`login_budget` sessions before any of
    them could refuse.
    """
    rng = random.Random(seed)  # noqa: S311
    grants = sorted(snapshot.grants.items())
    turns = _Turns(logins, len(grants))
    out: list[Scenario] = []
    for n in range(count):
        trusted = rng.random() < 0.08
        login, sender = _sender(rng, size, grants, turns)
        if trusted:
            client = TRUSTED_PREFIX + str(rng.randrange(1, 255))
        elif login is not None:  # one address per login: never near login-max-client-ips
            client = UNTRUSTED_PREFIX + str(1 + zlib.crc32(login.encode()) % 254)
        else:
            client = UNTRUSTED_PREFIX + str(rng.randrange(1, 255))
        rcpts = tuple(_rcpt(rng, size) for _ in range(rng.randint(1, 3)))
        request = Request(parse_ip(client), login, sender)
        expected = tuple(expected_reply(snapshot, request, r) for r in rcpts)
        out.append(Scenario(client, 40000 + n % 20000, login, sender, rcpts, expected))
    return out


class _Turns:
    """Whose turn it is: each kind of authenticated session walks its own list of logins."""

    def __init__(self, logins: int, grants: int) -> None:
        self.logins = logins
        self.own = 0
        self.other = logins // 2  # the mismatches start half way round: other logins
        self.grant = 0
        self.grants = grants

    def next_own(self) -> int:
        self.own = (self.own + 1) % self.logins
        return self.own

    def next_other(self) -> int:
        self.other = (self.other + 1) % self.logins
        return self.other

    def next_grant(self) -> int:
        self.grant = (self.grant + 1) % self.grants
        return self.grant


def _sender(
    rng: random.Random,
    size: StoreSize,
    grants: list[tuple[str, frozenset[str]]],
    turns: _Turns,
) -> tuple[str | None, str]:
    roll = rng.random()
    local = f"user{rng.randrange(size.grants)}@{domain(rng.randrange(size.domains))}"
    if roll < 0.20:  # authenticated, sending as itself (maybe sub-addressed)
        login = user_login(turns.next_own(), size)
        name, _, dom = login.partition("@")
        return login, f"<{name}+tag@{dom}>" if rng.random() < 0.2 else f"<{login}>"
    if roll < 0.35:  # authenticated, using a send-as grant
        login, targets = grants[turns.next_grant()]
        target = sorted(targets)[0]
        return login, f"<someone{target}>" if target.startswith("@") else f"<{target}>"
    if roll < 0.45:  # authenticated, not owning the sender
        return user_login(turns.next_other(), size), f"<{local}>"
    if roll < 0.60:  # unauthenticated local sender (refused unless exempt + local rcpt)
        return None, f"<{local}>"
    if roll < 0.63:  # role sender
        return None, f"<postmaster@{domain(rng.randrange(size.domains))}>"
    if roll < 0.66:
        return None, "<>"
    if roll < 0.67:
        return None, "<not an address>"
    return None, f"<sender{rng.randrange(100000)}@remote{rng.randrange(500)}.test>"


def _rcpt(rng: random.Random, size: StoreSize) -> str:
    if rng.random() < 0.3:
        return f"<rcpt{rng.randrange(10000)}@{domain(rng.randrange(size.domains))}>"
    return f"<rcpt{rng.randrange(10000)}@remote{rng.randrange(500)}.test>"


def login_counts(snapshot: Snapshot, plays: list[Scenario]) -> dict[str, dict[LimitKind, int]]:
    """What one pass over ``plays`` adds to each login's counts, as the milter counts them
    (core/loginpolicy.py: counted_login, event_of); client IPs: distinct addresses."""
    counts: dict[str, dict[LimitKind, int]] = defaultdict(lambda: dict.fromkeys(LimitKind, 0))
    clients: dict[str, set[str]] = defaultdict(set)
    for sc in plays:
        request = Request(parse_ip(sc.client), sc.login, sc.sender)
        first = True
        for rcpt in sc.rcpts:
            verdict = decide(snapshot, request, rcpt)
            login = counted_login(request, verdict)
            if login is None:
                continue
            event = event_of(verdict, first)
            mine = counts[login]
            mine[LimitKind.MISMATCHES] += event.mismatch
            mine[LimitKind.RECIPIENTS] += event.accepted
            mine[LimitKind.MESSAGES] += event.accepted and event.first_of_message
            first = first and not event.accepted
            clients[login].add(sc.client)
    for login, seen in clients.items():
        counts[login][LimitKind.CLIENT_IPS] = len(seen)
    return dict(counts)


def login_budget(snapshot: Snapshot, plays: list[Scenario]) -> int:
    """Sessions one milter (one store) can play of ``plays``, in turn and over and over,
    with no login crossing a limit in force (the store's, the shipped defaults unless
    changed), whatever the windows: a pass that is under way counts as a whole one.
    Client addresses do not grow with passes: too many is an error."""
    passes = 10**9
    for login, counts in login_counts(snapshot, plays).items():
        for kind, limit in limits_for(snapshot, login).limits:
            per_pass = counts[kind]
            if kind is LimitKind.CLIENT_IPS:
                if per_pass > limit.count:
                    raise ValueError(f"{login} connects from {per_pass} addresses: over {limit}")
            elif per_pass:
                passes = min(passes, limit.count // per_pass)
    return max(0, passes - 1) * len(plays)
