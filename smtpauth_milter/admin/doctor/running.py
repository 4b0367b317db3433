"""Doctor: is the store this command edits the one the running milter reads?

The milter on ``--socket`` is found the way ``ss -p`` finds it: the socket's
inode in ``/proc/net/tcp``, ``tcp6`` or ``unix``, then the process holding
that inode among its ``/proc/PID/fd``.  Its store is resolved from its
``/proc/PID/cmdline``, ``environ`` and working directory with the very rules
the CLI uses (:func:`choose_store`).  Reading another user's process needs
root; when doctor cannot tell, it says why.  Nothing read here is printed
but the store URL, with its passwords masked.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from smtpauth_milter.admin.doctor.checks import Finding, error, ok, unix_path, warning
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.daemon.config import choose_store
from smtpauth_milter.store.urls import display_url, sqlite_path

PROC = Path("/proc")
LISTEN = "0A"  # TCP state in /proc/net/tcp
ACCEPTING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix: a listening socket
USER_ENV = "SMTPAUTH_MILTER_USER"


class Unknown(Exception):
    """Why doctor cannot tell which store the milter uses."""


@dataclass(frozen=True)
class Milter:
    pid: int
    store: str  # the URL it resolves to
    cwd: str


def listening_inode(socket_spec: str, proc: Path = PROC) -> int:
    path = unix_path(socket_spec)
    if path is not None:
        wanted = os.path.normpath(path)
        for fields in _table(proc / "net" / "unix"):
            if len(fields) >= 8 and int(fields[3], 16) & ACCEPTING and fields[7] == wanted:
                return int(fields[6])
        raise Unknown(f"no process listens on {socket_spec}")
    port = int(socket_spec.partition(":")[2].partition("@")[0])
    for name in ("tcp", "tcp6"):
        for fields in _table(proc / "net" / name):
            local, state = fields[1], fields[3]
            if state == LISTEN and int(local.rpartition(":")[2], 16) == port:
                return int(fields[9])
    raise Unknown(f"no process listens on {socket_spec}")


def _table(path: Path) -> list[list[str]]:
    try:
        lines = path.read_text().splitlines()[1:]
    except OSError as exc:
        raise Unknown(f"cannot read {path}: {exc.strerror}") from exc
    return [line.split() for line in lines]


def holder(inode: int, proc: Path = PROC) -> int:
    """The process holding the socket; Unknown when it cannot be seen (another user's).

    Under AutoRestart the supervisor and its child both hold it: the one named is
    the process that was started (whose parent does not hold it), whatever order
    pids wrapped around in.
    """
    target = f"socket:[{inode}]"
    hidden = False
    holders: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except PermissionError:
            hidden = True
            continue
        except OSError:
            continue  # the process ended meanwhile
        for fd in fds:
            with contextlib.suppress(OSError):
                if str(fd.readlink()) == target:
                    holders.append(int(entry.name))
                    break
    if not holders:
        why = "its process belongs to another user (run doctor as root)" if hidden else "it is gone"
        raise Unknown(f"cannot see which process holds the socket: {why}")
    return next((pid for pid in holders if _parent(pid, proc) not in holders), min(holders))


def _parent(pid: int, proc: Path) -> int | None:
    """The parent pid from /proc/PID/stat (after the command name, which may hold ')')."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


def group_options(argv: Sequence[str]) -> dict[str, str] | None:
    """``--db`` and ``--config`` given before ``run``; None when there is no ``run``."""
    found: dict[str, str] = {}
    words = iter(argv[1:])
    for word in words:
        if word == "run":
            return found
        for name in ("db", "config"):
            if word == f"--{name}":
                found[name] = next(words, "")
            elif word.startswith(f"--{name}="):
                found[name] = word.partition("=")[2]
    return None


def milter_store(argv: Sequence[str], environ: Mapping[str, str], cwd: str, uid: int) -> str:
    """The store a ``smtpauth-milter run`` with this argv, environment and cwd uses."""
    options = group_options(argv)
    if options is None:
        raise Unknown("the process listening there is not `smtpauth-milter run`")
    config = options.get("config") or environ.get("SMTPAUTH_MILTER_CONFIG") or None
    if config is not None:
        config = str(Path(cwd) / config)
    try:
        choice = choose_store(options.get("db"), config, environ, euid=uid)
        started_as_root = "--user" in argv or environ.get(USER_ENV) or choice.file.get("user")
        if started_as_root and uid != 0:  # it chose its default store before dropping to USER
            choice = choose_store(options.get("db"), config, environ, euid=0)
    except (SmtpauthError, KeyError) as exc:
        raise Unknown(f"its configuration cannot be read here: {exc}") from exc
    return choice.db


def find_milter(socket_spec: str, proc: Path = PROC) -> Milter:
    pid = holder(listening_inode(socket_spec, proc), proc)
    base = proc / str(pid)
    try:
        argv = (base / "cmdline").read_bytes().decode(errors="replace").split("\0")
        pairs = (base / "environ").read_bytes().decode(errors="replace").split("\0")
        cwd = str((base / "cwd").readlink())
        status = (base / "status").read_text()
    except OSError as exc:
        raise Unknown(f"cannot read /proc/{pid} ({exc.strerror}): run doctor as root") from exc
    environ = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    uid = next(int(line.split()[2]) for line in status.splitlines() if line.startswith("Uid:"))
    return Milter(pid, milter_store(argv, environ, cwd, uid), cwd)


def identity(url: str, cwd: str) -> tuple[str, ...]:
    """What makes two URLs the same store: the file, or the server and database."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return ("unparseable", url)
    path = sqlite_path(parsed)
    if path is not None:
        return ("sqlite", str((Path(cwd) / path).resolve()))
    host = parsed.host or ""
    host = "127.0.0.1" if host == "localhost" else host
    return (parsed.get_backend_name(), host, str(parsed.port or ""), parsed.database or "")


def check_same_store(socket_spec: str, ours: str, found: Milter | str) -> Finding:
    """ours: the store this command was given; found: the milter, or why it is unknown."""
    if isinstance(found, str):
        return warning(
            f"cannot tell which store the milter on {socket_spec} reads: {found}",
            "run doctor as root, or compare the milter's --db / --config with this command's",
        )
    where = f"the milter on {socket_spec} (pid {found.pid})"
    if identity(found.store, found.cwd) == identity(ours, str(Path.cwd())):
        return ok(f"{where} reads this store")
    return error(
        f"{where} reads the store {display_url(found.store)}, not {display_url(ours)}: "
        "changes made here do not reach it",
        "give this command the milter's store: the same --db, --config or "
        "SMTPAUTH_MILTER_DB / SMTPAUTH_MILTER_CONFIG as the milter (both read "
        "/etc/smtpauth-milter/smtpauth-milter.toml when neither is set)",
    )


def running_store_finding(socket_spec: str, ours: str) -> Finding:
    try:
        found: Milter | str = find_milter(socket_spec)
    except Unknown as exc:
        found = str(exc)
    return check_same_store(socket_spec, ours, found)
