"""Console sessions and the login rate limit, in the console's memory, with a clock passed in.

A session lives only in this process: the cookie carries its random id, signed;
logging out, the idle timeout, a changed password or a removed account end it
for good (a replayed cookie finds nothing). A restart logs everyone out.
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_SESSIONS = 10_000  # beyond it the least recently used session goes
MAX_KEYS = 100_000  # names and addresses with recent failures kept; beyond, stale ones go


@dataclass
class ConsoleSession:
    sid: str
    name: str
    password_hash: str  # the hash it logged in with: a new password ends the session
    csrf: str
    last_seen: float


@dataclass
class SessionTable:
    idle_timeout: float
    clock: Callable[[], float]
    _sessions: dict[str, ConsoleSession] = field(default_factory=dict)

    def start(self, name: str, password_hash: str) -> ConsoleSession:
        while len(self._sessions) >= MAX_SESSIONS:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.sid]
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        session = ConsoleSession(sid, name, password_hash, csrf, self.clock())
        self._sessions[sid] = session
        return session

    def find(self, sid: str) -> ConsoleSession | None:
        """The live session ``sid``, its idle time reset; an idle one ends here."""
        session = self._sessions.get(sid)
        if session is None:
            return None
        now = self.clock()
        if now - session.last_seen > self.idle_timeout:
            del self._sessions[sid]
            return None
        session.last_seen = now
        return session

    def end(self, sid: str) -> None:
        self._sessions.pop(sid, None)


@dataclass
class RateLimit:
    """At most ``limit`` failed logins per key (a name, a client address) per ``window`` s."""

    limit: int
    window: float
    clock: Callable[[], float]
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str) -> deque[float]:
        times = self._failures.get(key, deque())
        cutoff = self.clock() - self.window
        while times and times[0] <= cutoff:
            times.popleft()
        if not times:
            self._failures.pop(key, None)
        return times

    def blocked(self, key: str) -> bool:
        return len(self._recent(key)) >= self.limit

    def failed(self, key: str) -> None:
        if len(self._failures) >= MAX_KEYS:  # many names or addresses: forget the stale
            for stale in list(self._failures):
                self._recent(stale)
        times = self._recent(key)
        times.append(self.clock())
        self._failures[key] = times
