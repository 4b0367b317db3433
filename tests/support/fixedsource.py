"""A store stand-in for TestCtx tests of the adapter: a fixed snapshot, no database."""

from __future__ import annotations

from smtpauth_milter.core.snapshot import Snapshot


class FixedSource:
    """An in-memory store stand-in: the adapter under test never reads a database."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def prepare(self) -> None:
        pass

    def serial(self) -> int:
        return self.snapshot.serial

    def load_snapshot(self) -> Snapshot:
        return self.snapshot
