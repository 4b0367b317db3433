"""Doctor's facts, gathered at the edges: ``stat``, the store (Postfix's: ``admin.postfix``)."""

from __future__ import annotations

import os
import pwd
from dataclasses import replace
from pathlib import Path

from smtpauth_milter.admin.doctor.checks import FileFacts, StoreFacts, UserFacts
from smtpauth_milter.admin.doctor.forwarding import exempt_domains
from smtpauth_milter.core.errors import SchemaError, SmtpauthError, StoreMissing
from smtpauth_milter.core.snapshot import ANYONE
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.urls import display_url


def mta_user(name: str) -> UserFacts | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return UserFacts(name, entry.pw_uid, frozenset(os.getgrouplist(name, entry.pw_gid)))


def file_facts(path: str) -> FileFacts | None:
    try:
        st = Path(path).stat()
    except OSError:
        return None
    return FileFacts(path, st.st_mode, st.st_uid, st.st_gid)


def parent_facts(path: str) -> list[FileFacts]:
    parents = [str(p) for p in reversed(Path(path).parents)]
    return [f for f in (file_facts(p) for p in parents) if f is not None]


def store_facts(db: str) -> tuple[StoreFacts, list[str] | None]:
    """The store's state and its local domains (None when they cannot be read).

    ``StoreFacts.anyone``: the logins with a send-as-anyone grant; ``exempt``: the
    local domains with exempt-local-recipients on.
    """
    try:
        store = Store(db)
    except SmtpauthError as exc:
        return StoreFacts(display_url(db), error=str(exc)), None
    try:
        current, head = store.current(), store.head()
        facts = StoreFacts(store.display, current=current, head=head, newer=store.is_newer(current))
        try:
            store.check_schema()
        except SchemaError as exc:
            return replace(facts, schema_problem=str(exc)), None
        snapshot = store.load_snapshot()
        anyone = tuple(sorted(k for k, targets in snapshot.grants.items() if ANYONE in targets))
        exempt = tuple(exempt_domains(snapshot))
        return replace(facts, anyone=anyone, exempt=exempt), sorted(snapshot.domains)
    except StoreMissing:  # opening never creates a SQLite file
        return StoreFacts(store.display, missing_file=True), None
    except SmtpauthError as exc:
        return StoreFacts(store.display, error=str(exc)), None
    finally:
        store.dispose()
