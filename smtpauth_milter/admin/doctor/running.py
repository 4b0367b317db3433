"""Doctor: is the store this command edits the one the running milter reads?

The milter on ``--socket`` is found by :mod:`.listeners` (address and port, then
the process holding the socket). Its store is resolved from its
``/proc/PID/cmdline``, ``environ`` and working directory with the very rules
the CLI uses (:func:`choose_store`). Reading another user's process needs
root; when doctor cannot tell, it says why. All of that is another process's
word: every file is read bounded (at most 1 MiB, regular files only, never
waiting on a FIFO), a config file it names only when root's, the chosen
owner's (see :mod:`lookups.trusted`) or that process's user's, all within
:data:`READ_SECONDS`; whatever goes wrong is a warning, never a traceback; and
each finding names the process's user. Nothing read here is printed but the
store URL, with its passwords masked.
"""

from __future__ import annotations

import pwd
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from smtpauth_milter.admin.doctor.checks import Finding, error, ok, warning
from smtpauth_milter.admin.doctor.listeners import PROC, Unknown, holder, listening_inode
from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.daemon.config import choose_store
from smtpauth_milter.lookups.trusted import read_trusted, trusted_owners
from smtpauth_milter.store.urls import display_url, sqlite_path

USER_ENV = "SMTPAUTH_MILTER_USER"
READ_SECONDS = 5.0  # for reading everything another process names
T = TypeVar("T")


@dataclass(frozen=True)
class Milter:
    pid: int
    store: str  # the URL it resolves to
    cwd: str
    uid: int = 0  # the user it runs as
    user: str = "root"  # that user's name (or the uid when it has none)
    runs_as: str | None = None  # the user its --user (environment, config file) names

    @property
    def vouched(self) -> bool:
        """Root's, or running as the user it was told to drop to: started by root.

        Anything else is some user's process that took the milter's address."""
        return self.uid == 0 or self.runs_as == self.user


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


def milter_store(
    argv: Sequence[str], environ: Mapping[str, str], cwd: str, uid: int
) -> tuple[str, str | None]:
    """The store a ``smtpauth-milter run`` with this argv, environment and cwd uses,
    and the user it is told to run as (None: none)."""
    options = group_options(argv)
    if options is None:
        raise Unknown("the process listening there is not `smtpauth-milter run`")
    config = options.get("config") or environ.get("SMTPAUTH_MILTER_CONFIG") or None
    if config is not None:
        config = str(Path(cwd) / config)
    owners = trusted_owners({uid})  # root's, the chosen owner's or that process's user's
    try:
        choice = choose_store(options.get("db"), config, environ, euid=uid, owners=owners)
        runs_as = _user_option(argv) or environ.get(USER_ENV) or choice.file.get("user")
        if runs_as and uid != 0:  # it chose its default store before dropping to USER
            choice = choose_store(options.get("db"), config, environ, euid=0, owners=owners)
    except (SmtpauthError, KeyError) as exc:
        raise Unknown(f"its configuration cannot be read here: {exc}") from exc
    return choice.db, str(runs_as) if runs_as else None


def _user_option(argv: Sequence[str]) -> str | None:
    """The value of ``run``'s --user on this command line."""
    for word, after in zip(argv, [*argv[1:], ""], strict=True):
        if word == "--user":
            return after
        if word.startswith("--user="):
            return word.partition("=")[2]
    return None


def _within(seconds: float, work: Callable[[], T]) -> T:
    """``work()`` on a thread of its own; Unknown when it takes longer than ``seconds``."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name="doctor-proc", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise Unknown(f"reading what that process names took more than {seconds:g} s")
    if failure:
        raise failure[0]
    return outcome[0]


def _proc_text(path: Path) -> str:
    return read_trusted(str(path), strict=False)[0].decode(errors="replace")


def find_milter(socket_spec: str, proc: Path = PROC) -> Milter:
    pid = holder(listening_inode(socket_spec, proc), proc)
    base = proc / str(pid)
    try:
        argv = _proc_text(base / "cmdline").split("\0")
        pairs = _proc_text(base / "environ").split("\0")
        cwd = str((base / "cwd").readlink())
        status = _proc_text(base / "status")
    except OSError as exc:
        raise Unknown(f"cannot read /proc/{pid} ({exc.strerror}): run doctor as root") from exc
    except SmtpauthError as exc:
        raise Unknown(f"cannot read /proc/{pid}: {exc}") from exc
    environ = dict(pair.split("=", 1) for pair in pairs if "=" in pair)
    uids = [line.split() for line in status.splitlines() if line.startswith("Uid:")]
    if not uids or len(uids[0]) < 3 or not uids[0][2].isdigit():
        raise Unknown(f"cannot read the user of /proc/{pid}")
    uid = int(uids[0][2])  # the effective uid
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    store, runs_as = milter_store(argv, environ, cwd, uid)
    return Milter(pid, store, cwd, uid, user, runs_as)


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


def _shown(text: str) -> str:
    """Text another process chose (its store URL, a path in its environment), escaped as
    every other output is: no control or bidi character reaches doctor's output raw."""
    return logfmt.printable(text)


def check_same_store(socket_spec: str, ours: str, found: Milter | str) -> Finding:
    """ours: the store this command was given; found: the milter, or why it is unknown."""
    if isinstance(found, str):
        return warning(
            f"cannot tell which store the milter on {socket_spec} reads: {_shown(found)}",
            "run doctor as root, or compare the milter's --db / --config with this command's",
        )
    where = f"the milter on {socket_spec} (pid {found.pid}, user {found.user})"
    if identity(found.store, found.cwd) == identity(ours, str(Path.cwd())):
        return ok(f"{where} reads this store")
    if not found.vouched:
        return error(
            f"{where} reads the store {_shown(display_url(found.store))}, not {display_url(ours)}; "
            f"it was not started by root (it runs as {found.user}, not as a --user it names)",
            f"make sure pid {found.pid} is your milter before trusting its store: a local "
            "user's process may have taken the milter's address",
        )
    return error(
        f"{where} reads the store {_shown(display_url(found.store))}, not {display_url(ours)}: "
        "changes made here do not reach it",
        "give this command the milter's store: the same --db, --config or "
        "SMTPAUTH_MILTER_DB / SMTPAUTH_MILTER_CONFIG as the milter (both read "
        "/etc/smtpauth-milter/smtpauth-milter.toml when neither is set)",
    )


def check_root(socket_spec: str, found: Milter) -> Finding | None:
    """A milter that kept root: a warning (the socket is every local user's way in)."""
    if found.uid != 0:
        return None
    return warning(
        f"the milter on {socket_spec} (pid {found.pid}) runs as root, with every privilege",
        "run it with --user (e.g. --user smtpauth-milter --group postfix), as the systemd "
        "unit in contrib/ does",
    )


def running_findings(socket_spec: str, ours: str) -> list[Finding]:
    """Which store the process on the socket reads, and whether it kept root."""
    try:
        found: Milter | str = _within(READ_SECONDS, lambda: find_milter(socket_spec))
    except Unknown as exc:
        found = str(exc)
    except Exception as exc:  # another process's data: never a traceback
        found = f"reading that process failed ({type(exc).__name__})"
    findings = [check_same_store(socket_spec, ours, found)]
    as_root = None if isinstance(found, str) else check_root(socket_spec, found)
    return [as_root, *findings] if as_root is not None else findings


def running_store_finding(socket_spec: str, ours: str) -> Finding:
    return running_findings(socket_spec, ours)[-1]
