"""Run the milter: logging, the snapshot cache and its thread, the libmilter socket."""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import logging.handlers
import os
import pwd
import re
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import Milter

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import ConfigError, SmtpauthError
from smtpauth_milter.daemon.config import RunConfig, unix_socket_path
from smtpauth_milter.daemon.milter import SmtpAuthMilter

if TYPE_CHECKING:
    from smtpauth_milter.daemon.metrics import Metrics
from smtpauth_milter.daemon.refresh import SnapshotCache
from smtpauth_milter.store.engine import Store

log = logging.getLogger("smtpauth_milter")
MILTER_NAME = "smtpauth-milter"
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
SOCKET_UMASK = 0o117  # a unix socket comes out 0660: the MTA's group, nobody else


_RAW_CONTROL = re.compile("[\x00-\x1f\x7f\x85\u2028\u2029]")


def _escape_control(match: re.Match[str]) -> str:
    ch = match.group()
    code = ord(ch)
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch)
    return named or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


class OneLineFormatter(logging.Formatter):
    """Tracebacks and any stray newline or control character stay inside one line.

    Backslashes are left alone: logfmt values are already escaped, and escaping
    them twice would let a client's quoted value end early and forge a field.
    """

    def format(self, record: logging.LogRecord) -> str:
        return _RAW_CONTROL.sub(_escape_control, super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line (``--log-format json``): the fields of a
    :class:`logfmt.Fields` message as keys, else the text under ``message``.

    ``ensure_ascii`` escapes every control and non-ASCII character, so a
    client's value can neither split a line nor forge a key.
    """

    def __init__(self, syslog_tag: bool = False) -> None:
        super().__init__()
        self._syslog_tag = syslog_tag

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
        }
        for key, val in _fields(record).items():
            data.setdefault(key, None if val is None else logfmt.clip(val))
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        text = json.dumps(data, ensure_ascii=True)
        return f"{MILTER_NAME}[{record.process}]: {text}" if self._syslog_tag else text


def _fields(record: logging.LogRecord) -> Mapping[str, str | None]:
    """The fields of a ``Fields`` message, logged as msg or as the one ``%s`` argument."""
    message: object = record.msg
    if message == "%s" and isinstance(record.args, tuple) and len(record.args) == 1:
        message = record.args[0]
    if isinstance(message, logfmt.Fields):
        return message.fields
    return {"message": record.getMessage()}


def _formatter(log_format: str, template: str, syslog: bool) -> logging.Formatter:
    return JsonFormatter(syslog_tag=syslog) if log_format == "json" else OneLineFormatter(template)


def setup_logging(level: str, syslog: bool, log_format: str = "logfmt") -> None:
    handler: logging.Handler
    if syslog:
        try:
            handler = logging.handlers.SysLogHandler(
                address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_MAIL
            )
        except OSError as exc:
            raise ConfigError(f"cannot log to syslog at /dev/log: {exc.strerror}") from exc
        handler.setFormatter(
            _formatter(log_format, f"{MILTER_NAME}[%(process)d]: %(message)s", syslog=True)
        )
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            _formatter(log_format, "%(asctime)s %(levelname)s %(message)s", syslog=False)
        )
    logger = logging.getLogger("smtpauth_milter")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


@dataclass(frozen=True)
class Identity:
    """The unprivileged user and group the milter serves as (``run --user/--group``)."""

    user: str
    group: str
    uid: int
    gid: int

    @classmethod
    def resolve(cls, user: str | None, group: str | None) -> Identity | None:
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
        try:
            group_entry = grp.getgrgid(entry.pw_gid) if group is None else grp.getgrnam(group)
        except KeyError:
            raise ConfigError(f"--group {group or entry.pw_gid}: no such group") from None
        return cls(user, group_entry.gr_name, entry.pw_uid, group_entry.gr_gid)

    def drop(self) -> None:
        """setgroups/setgid/setuid for the whole process; fails loudly if root remains."""
        os.initgroups(self.user, self.gid)
        os.setgid(self.gid)
        os.setuid(self.uid)
        if self.uid != 0 and (os.geteuid() == 0 or os.getegid() != self.gid):
            raise ConfigError(f"could not drop privileges to {self.user}:{self.group}")

    def check_store(self, store: Store) -> None:
        """A SQLite store must be readable once we are no longer root: one clear line if not."""
        database = store.url.database
        if not store.is_sqlite or not database or database == ":memory:":
            return
        if not os.access(database, os.R_OK):
            raise ConfigError(
                f"user {self.user} cannot read the store {database}: make the file readable "
                f"(and its directory searchable) by {self.user} or group {self.group}"
            )


def _dispatch(method: str) -> Callable[..., int]:
    """Hand a libmilter callback to the session's milter object.

    A command before the session exists (MAIL before CONNECT: only a broken or
    hostile peer sends that) is one logged line and a 4xx, not a raw traceback.
    """

    def callback(ctx: Any, *args: Any) -> int:
        session = ctx.getpriv()
        if session is None:
            log.warning(
                "%s",
                logfmt.Fields(
                    {"event": "protocol-error", "callback": method, "error": "no session yet"}
                ),
            )
            return int(Milter.TEMPFAIL)
        return int(getattr(session, method)(*args))

    return callback


def _register(socket_spec: str, timeout: int) -> None:
    """What ``Milter.runmilter`` does before serving, without serving yet."""
    milter = Milter.milter
    milter.set_connect_callback(Milter.connect_callback)
    milter.set_helo_callback(_dispatch("hello"))
    milter.set_envfrom_callback(_dispatch("envfrom_bytes"))
    milter.set_envrcpt_callback(_dispatch("envrcpt_bytes"))
    milter.set_header_callback(_dispatch("header_bytes"))
    milter.set_eoh_callback(_dispatch("eoh"))
    milter.set_body_callback(_dispatch("body"))
    milter.set_eom_callback(_dispatch("eom"))
    milter.set_abort_callback(_dispatch("abort"))
    milter.set_close_callback(Milter.close_callback)
    milter.setconn(socket_spec)
    milter.settimeout(timeout)
    milter.register(
        MILTER_NAME,
        data=_dispatch("data"),
        unknown=_dispatch("unknown"),
        negotiate=Milter.negotiate_callback,
    )


def _open_socket(config: RunConfig, socket_path: Path | None, identity: Identity | None) -> None:
    """Listen (as root if we are), then hand a unix socket to USER:GROUP, mode 0660."""
    old_umask = os.umask(SOCKET_UMASK) if socket_path else None
    try:
        _register(config.socket, timeout=60)
        Milter.milter.opensocket(True)
    except Milter.milter.error as exc:
        raise ConfigError(
            f"cannot listen on {config.socket}: {exc} (address in use, or the socket's "
            "directory is missing or not writable)"
        ) from exc
    finally:
        if old_umask is not None:
            os.umask(old_umask)
    if socket_path is not None:
        if identity is not None:
            os.chown(socket_path, identity.uid, identity.gid)
        socket_path.chmod(0o660)


def _metrics(config: RunConfig) -> Metrics | None:
    """Metrics only when asked for: prometheus_client is not even imported otherwise."""
    if config.metrics is None:
        return None
    from smtpauth_milter.daemon.metrics import Metrics

    return Metrics()


def run(config: RunConfig) -> None:
    """Serve until SIGTERM/SIGINT; tempfail while the store is unreadable."""
    identity = Identity.resolve(config.user, config.group)
    setup_logging(config.log_level, config.syslog, config.log_format)
    store = Store(config.db)
    # libmilter's own thread sigwait()s for these; block them before we start any
    # thread, or the kernel may hand SIGTERM to one that dies without cleanup.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    metrics = _metrics(config)
    cache = SnapshotCache(
        store, config.max_stale, on_refresh=metrics.refreshed if metrics is not None else None
    )
    if metrics is not None:
        metrics.snapshot_age = cache.age
    Milter.factory = lambda: SmtpAuthMilter(cache, metrics)
    socket_path = unix_socket_path(config.socket)
    try:
        if metrics is not None and config.metrics is not None:
            metrics.serve(config.metrics)  # as root, before dropping privileges
        _open_socket(config, socket_path, identity)
        if identity is not None:
            identity.drop()
            identity.check_store(store)
        log.info(
            "%s",
            logfmt.Fields(
                {
                    "event": "start",
                    "socket": config.socket,
                    "store": store.display,
                    "user": identity.user if identity else None,
                    "metrics": config.metrics,
                }
            ),
        )
        cache.start(config.refresh)
        try:
            Milter.milter.main()
        except Milter.milter.error as exc:
            raise SmtpauthError(f"the milter stopped: {exc}") from exc
    finally:
        cache.stop()
        if metrics is not None:
            metrics.stop()
        store.dispose()
        if socket_path is not None:
            # as USER we may not be allowed to; the next start removes it as root
            with contextlib.suppress(OSError):
                socket_path.unlink()
        log.info("%s", logfmt.Fields({"event": "stop"}))
