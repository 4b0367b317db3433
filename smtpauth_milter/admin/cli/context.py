"""What every command shares: the store it works on, one audited write transaction."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from sqlalchemy.orm import Session

from smtpauth_milter.lookups.mapfiles import check_changed_settings
from smtpauth_milter.store import audit, editing
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.urls import mask_secrets

T = TypeVar("T")
EXIT_ERROR = 2


@dataclass
class Context:
    db: str
    file: dict[str, Any]
    file_path: str | None = None
    db_flag: str | None = None  # --db or SMTPAUTH_MILTER_DB as given (run re-reads the file)
    config_file: str | None = None
    _store: Store | None = None

    def store(self, *, prepare: bool = True, exact: bool = False) -> Store:
        """The store, its schema checked: one this version may read, or (``exact``)
        exactly this version's. ``prepare=False``: unchecked (the ``db`` commands)."""
        if self._store is None:
            self._store = Store(self.db)
        if prepare:
            self._store.prepare(exact=exact)
        return self._store

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction, its changes recorded in the audit trail as this command's.

        Before it commits, the files named by changed settings are checked (one
        place for every command): a missing map refuses the whole change."""
        store = self.store(exact=True)
        command = mask_secrets(command_line(click.get_current_context()), store.secrets)
        with store.write() as session:
            audit.begin(session, audit.Actor.now(command))
            before = editing.global_values(session)
            yield session
            check_changed_settings(before, editing.global_values(session))

    def read(self, action: Callable[[Session], T], *, exact: bool = False) -> T:
        with self.store(exact=exact).read() as session:
            return action(session)


pass_context = click.make_pass_decorator(Context)


def command_line(ctx: click.Context) -> str:
    """The subcommand as typed, for the audit trail: without the group's --db/--config."""
    words = ctx.command_path.split()[1:]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        values = value if isinstance(value, tuple) else (value,)
        texts = [str(getattr(v, "name", v)) for v in values if v is not None]
        if isinstance(param, click.Option):
            if value is None or value == param.default or value is False:
                continue
            flag = max(param.opts, key=len)
            words += [flag] if value is True else [w for t in texts for w in (flag, t)]
        else:
            words += texts
    return shlex.join(words)
