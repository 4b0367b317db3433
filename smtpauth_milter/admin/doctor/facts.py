"""Doctor's facts, gathered at the edges: ``postconf``, ``postmap``, ``stat``, the store."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from smtpauth_milter.admin.doctor.checks import POSTFIX_PARAMS, FileFacts, StoreFacts, UserFacts
from smtpauth_milter.core.errors import SchemaError, SmtpauthError, StoreMissing
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.urls import display_url

POSTCONF_TIMEOUT = 10.0


def default_config_dir() -> str:
    return _run(["postconf", "-h", "config_directory"]).strip()


def postconf(config_dir: str, names: Sequence[str] = POSTFIX_PARAMS) -> dict[str, str]:
    """Each parameter's value, ``$name`` references expanded (``postconf -x``)."""
    return {name: _run(["postconf", "-c", config_dir, "-x", "-h", name]).strip() for name in names}


def postmap_has(config_dir: str, key: str, table: str) -> bool | None:
    try:
        done = subprocess.run(
            ["postmap", "-c", config_dir, "-q", key, table],
            capture_output=True, timeout=POSTCONF_TIMEOUT, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {0: True, 1: False}.get(done.returncode)


def _run(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=POSTCONF_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SmtpauthError(f"cannot run {argv[0]}: {exc}") from exc
    if done.returncode != 0:
        detail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise SmtpauthError(f"{' '.join(argv)}: {detail}")
    return done.stdout


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
    """The store's state and its local domains (None when they cannot be read)."""
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
        return facts, sorted(store.load_snapshot().domains)
    except StoreMissing:  # opening never creates a SQLite file
        return StoreFacts(store.display, missing_file=True), None
    except SmtpauthError as exc:
        return StoreFacts(store.display, error=str(exc)), None
    finally:
        store.dispose()
