"""Least privilege: the user and group the milter serves as (``run --user/--group``)."""

from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from smtpauth_milter.core.errors import ConfigError
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.urls import is_missing, sqlite_path


@dataclass(frozen=True)
class Identity:
    """The unprivileged user and group the milter serves as (``run --user/--group``)."""

    user: str
    group: str
    uid: int
    gid: int

    @classmethod
    def resolve(
        cls, user: str | None, group: str | None, allow_root: bool = False
    ) -> Identity | None:
        """USER and GROUP as ids; a user with uid 0 only with ``allow_root`` (--allow-root)."""
        if user is None:
            return None
        if os.geteuid() != 0:
            raise ConfigError(
                f"--user {user}: only root can switch user; start as root or leave out --user"
            )
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise ConfigError(f"--user {user}: no such user") from None
        if entry.pw_uid == 0 and not allow_root:
            raise ConfigError(
                f"--user {user}: that is root, the milter would keep every privilege; "
                "name an unprivileged user, or add --allow-root if you mean it"
            )
        try:
            group_entry = grp.getgrgid(entry.pw_gid) if group is None else grp.getgrnam(group)
        except KeyError:
            raise ConfigError(f"--group {group or entry.pw_gid}: no such group") from None
        return cls(user, group_entry.gr_name, entry.pw_uid, group_entry.gr_gid)

    @contextmanager
    def acting(self) -> Iterator[None]:
        """Act as USER:GROUP (effective ids, supplementary groups) for a while, then be
        root again: what is created meanwhile is made with their rights and is theirs."""
        groups, egid = os.getgroups(), os.getegid()
        os.setgroups(os.getgrouplist(self.user, self.gid))
        os.setegid(self.gid)
        os.seteuid(self.uid)
        try:
            yield
        finally:
            os.seteuid(0)
            os.setegid(egid)
            os.setgroups(groups)

    def drop(self) -> None:
        """setgroups/setgid/setuid for the whole process; fails loudly if root remains."""
        os.initgroups(self.user, self.gid)
        os.setgid(self.gid)
        os.setuid(self.uid)
        if self.uid != 0 and (os.geteuid() == 0 or os.getegid() != self.gid):
            raise ConfigError(f"could not drop privileges to {self.user}:{self.group}")


def check_store_readable(store: Store) -> None:
    """At start, after any privilege drop: a SQLite store this process cannot read is a
    ConfigError (one line, exit 2), whoever started it (``--user``, or systemd's ``User=``).
    A missing store is not: the milter tempfails and says so until ``db init``."""
    path = sqlite_path(store.url)
    if path is None or (is_missing(path) and os.access(path.parent, os.X_OK)):
        return
    database = str(path)
    if os.access(database, os.R_OK):
        return
    user, group = _name(os.getuid()), _group_name(os.getgid())
    raise ConfigError(
        f"user {user} cannot read the store {database}: make the file readable "
        f"(and its directory searchable) by {user} or group {group}"
    )


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
