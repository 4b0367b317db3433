"""What every milter sharing the store counted, per login, as this milter last read it.

Each exchange reads back only the logins in this milter's batch
(store/loginstate.py ``exchange``), so each login keeps its own read time: a
login's site-wide count is used while it is at most ``STALE_AFTER`` old, else
the milter counts that login on its own (docs/policy.md#one-count-for-the-whole-site).
Not thread-safe: daemon/logins.py holds its lock around every call.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field

from smtpauth_milter.core import window
from smtpauth_milter.core.limits import LimitKind, LoginLimits
from smtpauth_milter.store.loginstate import Readback

STALE_AFTER = 10.0  # seconds: an older site-wide count is not used (the store is out)
# the kind of a limit in the state tables' rows
STORED_KIND = {kind: kind.value.removeprefix("login-max-") for kind in LimitKind}


@dataclass(slots=True)
class LoginRead:
    """One login's site-wide counts, as the store gave them at ``at``."""

    at: float  # when the store answered
    totals: dict[tuple[str, int], int] = field(default_factory=dict)  # (kind, width) -> n
    clients: dict[int, AbstractSet[str]] = field(default_factory=dict)  # width -> client keys


# Per limit that is on: the kind its rows have (None: client addresses), the bucket width
# of its window, and the count it allows.
Checks = tuple[tuple[str | None, int, int], ...]


def checks_of(limits: LoginLimits) -> Checks:
    return tuple(
        (None if kind is LimitKind.CLIENT_IPS else STORED_KIND[kind], window.width(limit.window),
         limit.count)
        for kind, limit in limits.limits
        if limit.count > 0
    )  # fmt: skip


def _count(read: LoginRead, stored: str | None, step: int) -> int:
    return len(read.clients.get(step, ())) if stored is None else read.totals.get((stored, step), 0)


class SiteView:
    def __init__(self) -> None:
        self._reads: dict[str, LoginRead] = {}

    def merge(self, readback: Readback, now: float) -> None:
        """The read-back logins' counts replace what was known of them (a login read back
        with no rows has none left in the store); the other logins keep theirs."""
        fresh: dict[str, LoginRead] = {}
        if readback.logins is None:  # every login's counts: the whole view
            self._reads = fresh
        else:
            fresh = {login: LoginRead(now) for login in readback.logins}
        for (login, kind, width), n in readback.totals.items():
            if (read := fresh.get(login)) is None:  # not setdefault: one LoginRead per login
                read = fresh[login] = LoginRead(now)
            read.totals[kind, width] = n
        for (login, width), clients in readback.clients.items():
            if (read := fresh.get(login)) is None:
                read = fresh[login] = LoginRead(now)
            read.clients[width] = clients
        self._reads.update(fresh)

    def fresh(self, login: str, now: float) -> LoginRead | None:
        """What was read of the login, or None when it is unknown or stale: its
        ``totals[kind, width]`` and ``clients[width]`` are the site-wide counts."""
        found = self._reads.get(login)
        return found if found is not None and abs(now - found.at) <= STALE_AFTER else None

    def at_limit(
        self, logins: Iterable[str], limits_of: Callable[[str], LoginLimits | None]
    ) -> list[str]:
        """Those of ``logins`` whose site-wide count, as last read, is at one of their
        limits (``limits_of``: a login's, None when it has none)."""
        checks: dict[int, Checks] = {}  # per LoginLimits object: few, alive during the call
        found = []
        for login in logins:
            limits = limits_of(login)
            read = self._reads.get(login)
            if limits is None or read is None:
                continue
            if (mine := checks.get(id(limits))) is None:
                mine = checks[id(limits)] = checks_of(limits)
            if any(_count(read, stored, step) >= count for stored, step, count in mine):
                found.append(login)
        return found

    def forget(self, login: str) -> None:
        self._reads.pop(login, None)

    def keep_only(self, logins: Container[str], now: float) -> None:
        """Forget every login but these (the ones still in memory), and what has gone
        stale (it is never used again: a login's next exchange reads it anew). Memory
        stays bounded, and small for the many logins that send now and then."""
        for login in [
            login
            for login, read in self._reads.items()
            if login not in logins or abs(now - read.at) > STALE_AFTER
        ]:
            del self._reads[login]

    def __len__(self) -> int:
        return len(self._reads)
