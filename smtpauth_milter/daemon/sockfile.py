"""The unix socket's file: made as its owner without following links, removed only if ours.

Root never changes or removes a file it did not just create. libmilter binds
the socket; who may then swap what its path names decides how it gets its owner:

- the socket's directory, and every directory above it, can be changed by root
  alone (:func:`root_only`): root binds, then ``lchown`` s the socket to
  USER:GROUP (nobody else can have put anything at that path);
- otherwise (a directory the milter's user or anyone else can write) the socket
  is bound with USER:GROUP as the effective ids (:meth:`Identity.acting`): the
  kernel makes it theirs, root touches nothing there.

Its mode, 0660, comes from the umask at bind: no ``chmod`` follows. At exit the
path is unlinked only while it still names the very socket that was bound
(``lstat``: a socket, the same device and inode); a failed start removes nothing.
"""

from __future__ import annotations

import contextlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from smtpauth_milter.daemon.privileges import Identity

WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH


def _steady(path: Path) -> bool:
    """Root's, and writable by nobody else (or sticky: nobody else may move root's entries)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if st.st_uid != 0:
        return False
    return (
        stat.S_ISLNK(st.st_mode)
        or not st.st_mode & WRITABLE_BY_OTHERS
        or bool(st.st_mode & stat.S_ISVTX)
    )


def root_only(directory: Path) -> bool:
    """Only root can change what names in ``directory`` point to: the directory and
    each one above it, as written and with its links resolved, is :func:`_steady`."""
    directory = Path.cwd() / directory  # unchanged when absolute, as socket paths are
    real = directory.resolve()
    return all(_steady(p) for p in {directory, *directory.parents, real, *real.parents})


@dataclass(frozen=True)
class SocketFile:
    """The socket this process bound: its path, device and inode."""

    path: Path
    device: int
    inode: int

    @classmethod
    def bound(cls, path: Path) -> SocketFile | None:
        """What the path names right after bind; None when that is not a socket (swapped)."""
        try:
            st = os.lstat(path)
        except OSError:
            return None
        return cls(path, st.st_dev, st.st_ino) if stat.S_ISSOCK(st.st_mode) else None

    def is_there(self) -> bool:
        try:
            st = os.lstat(self.path)
        except OSError:
            return False
        return stat.S_ISSOCK(st.st_mode) and (st.st_dev, st.st_ino) == (self.device, self.inode)

    def hand_to(self, identity: Identity) -> None:
        """lchown to USER:GROUP: only in a :func:`root_only` directory, where nothing moves."""
        if self.is_there():
            os.chown(self.path, identity.uid, identity.gid, follow_symlinks=False)

    def remove(self) -> None:
        """Unlink the path if it still names this socket (as USER we may not be allowed
        to: libmilter removes a socket left there at the next start)."""
        if self.is_there():
            with contextlib.suppress(OSError):
                self.path.unlink()
