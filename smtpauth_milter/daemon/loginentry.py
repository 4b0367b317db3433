"""One login's counts in one milter's memory: a window per limit that is on.

Not thread-safe: daemon/logins.py holds its lock around every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smtpauth_milter.core.limits import LimitKind, LoginLimits
from smtpauth_milter.core.window import WindowCount, WindowSet


@dataclass(slots=True)
class LoginEntry:
    counts: dict[LimitKind, WindowCount] = field(default_factory=dict)
    clients: WindowSet | None = None
    limits: LoginLimits | None = None  # the last ones it was judged by

    def follow(self, limits: LoginLimits) -> None:
        """Count by these limits: a window for each one that is on (a window whose
        length changed starts afresh)."""
        self.limits = limits
        for kind, limit in limits.limits:
            if kind is LimitKind.CLIENT_IPS:
                if self.clients is None or self.clients.window != limit.window:
                    self.clients = WindowSet(limit.window)
            elif (found := self.counts.get(kind)) is None or found.window != limit.window:
                self.counts[kind] = WindowCount(limit.window)

    def prune(self, now: float) -> bool:
        """Forget what left every window; True when nothing is left."""
        empty = self.clients is None or self.clients.prune(now)
        for counter in self.counts.values():
            empty = counter.prune(now) and empty  # each one, whatever the others say
        return empty
