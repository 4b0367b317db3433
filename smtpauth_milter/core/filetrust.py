"""Which files root may read settings from: sshd's StrictModes, as a pure rule.

A file that says which store to use, which socket to listen on or which
database to connect to steers a process running as root. Root reads such a
file only when it is a regular file (no FIFO that hangs, no ``/dev/zero`` that
never ends), owned by root or by the admin's chosen owner (the owner of
``/etc/smtpauth-milter``), and writable by nobody else (no group or other
write bit): otherwise whoever can write it could act as root.
"""

from __future__ import annotations

import stat
from collections.abc import Collection

WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def refusal(path: str, mode: int, uid: int, owners: Collection[int] | None) -> str | None:
    """Why ``path`` (its ``st_mode`` and ``st_uid``) must not be read; None: it may.

    ``owners`` None: not root, only the file's type is checked."""
    if not stat.S_ISREG(mode):
        return f"{path} is not a regular file"
    if owners is None:
        return None
    if uid not in owners:
        return (
            f"{path} is owned by uid {uid}: run as root, only a file owned by root or by "
            f"the owner of /etc/smtpauth-milter is read (chown root {path})"
        )
    if mode & WRITABLE_BY_OTHERS:
        return (
            f"{path} has mode {stat.S_IMODE(mode):04o}: run as root, a file writable by "
            f"group or others is not read (chmod go-w {path})"
        )
    return None
