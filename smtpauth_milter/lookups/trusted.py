"""Read a file that steers this process, the way :mod:`core.filetrust` allows.

The file is opened first (without blocking: a FIFO answers at once) and its
owner, mode and type are taken from the open descriptor, so what is checked is
what is read; at most ``limit`` bytes are read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection

from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.core.filetrust import refusal

CONFIG_DIR = "/etc/smtpauth-milter"  # its owner is the admin's chosen owner of config files
LIMIT = 1 << 20  # a config or map file is a few hundred bytes


class FileRefused(SmtpauthError):
    """A file that must not be read (one line: why, and what to do)."""


def trusted_owners(extra: Collection[int] = ()) -> frozenset[int]:
    """root, the owner of /etc/smtpauth-milter (when it is a directory), and ``extra``."""
    owners = {0, *extra}
    try:
        st = os.lstat(CONFIG_DIR)
    except OSError:
        return frozenset(owners)
    if stat.S_ISDIR(st.st_mode):
        owners.add(st.st_uid)
    return frozenset(owners)


def read_trusted(
    path: str,
    *,
    owners: Collection[int] | None = None,
    limit: int = LIMIT,
    strict: bool | None = None,
) -> tuple[bytes, os.stat_result]:
    """The file's bytes and status; FileRefused when it may not be read, OSError when it cannot.

    ``strict`` (default: running as root): only files owned by ``owners`` (default
    :func:`trusted_owners`) and writable by nobody else."""
    if strict is None:
        strict = os.geteuid() == 0
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        allowed = (trusted_owners() if owners is None else owners) if strict else None
        why = refusal(path, st.st_mode, st.st_uid, allowed)
        if why is not None:
            raise FileRefused(why)
        if st.st_size > limit:
            raise FileRefused(f"{path} is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(f"{path} is larger than {limit} bytes")
        return b"".join(chunks), st
    finally:
        os.close(fd)
