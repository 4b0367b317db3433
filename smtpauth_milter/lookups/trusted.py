"""Read a file that steers this process, the way :mod:`core.filetrust` allows.

The path is resolved once to an ``O_PATH`` descriptor, which opens nothing (no
device is opened, no FIFO waited on); its owner, mode and type are checked on
that descriptor, and only a regular file it names is then opened, through
``/proc/self/fd``, so what is checked is what is read; at most ``limit`` bytes.
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
    handle = os.open(path, os.O_PATH | os.O_CLOEXEC)  # names the file, opens nothing
    try:
        st = os.fstat(handle)
        allowed = (trusted_owners() if owners is None else owners) if strict else None
        why = refusal(path, st.st_mode, st.st_uid, allowed)
        if why is not None:
            raise FileRefused(why)
        if st.st_size > limit:
            raise FileRefused(f"{path} is larger than {limit} bytes")
        return _read(_reopen(handle, path), path, limit), st
    finally:
        os.close(handle)


def _reopen(handle: int, path: str) -> int:
    """The regular file ``handle`` names, opened for reading: the very one checked, so a
    device (a watchdog that arms when opened) swapped in meanwhile is never opened."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        return os.open(f"/proc/self/fd/{handle}", flags)
    except FileNotFoundError:  # no /proc: open the path, then make sure it is the same file
        fd = os.open(path, flags)
        st, checked = os.fstat(fd), os.fstat(handle)
        if (st.st_dev, st.st_ino) != (checked.st_dev, checked.st_ino):
            os.close(fd)
            raise FileRefused(f"{path} changed while it was read") from None
        return fd


def _read(fd: int, path: str, limit: int) -> bytes:
    """At most ``limit`` bytes (FileRefused beyond); closes ``fd``."""
    try:
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise FileRefused(f"{path} is larger than {limit} bytes")
    return b"".join(chunks)
