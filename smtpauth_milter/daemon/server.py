"""Run the milter: logging, the libmilter socket, the supervisor, the serving process.

Order matters: signals are blocked before any thread exists; the sockets are
opened as root, then privileges are dropped; with ``auto-restart`` the
supervising parent forks a child that creates the threads (snapshot refresh,
metrics, libmilter) and the database connections, so the parent never has any.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import Milter

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import ConfigError, SmtpauthError
from smtpauth_milter.daemon import signals
from smtpauth_milter.daemon.config import RunConfig, unix_socket_path
from smtpauth_milter.daemon.decisions import DecisionCounts
from smtpauth_milter.daemon.logins import LoginLimiter
from smtpauth_milter.daemon.loginsync import LoginSync
from smtpauth_milter.daemon.logsetup import MILTER_NAME, setup_logging, writer_while_serving
from smtpauth_milter.daemon.milter import SmtpAuthMilter
from smtpauth_milter.daemon.notify import Notifier
from smtpauth_milter.daemon.privileges import Identity, check_store_readable
from smtpauth_milter.daemon.reload import Reloader
from smtpauth_milter.daemon.sockfile import SocketFile, root_only
from smtpauth_milter.daemon.supervisor import (
    Supervisor,
    listener_address,
    listening_sockets,
    wake_listener,
)
from smtpauth_milter.lookups.ownership import OwnershipMaps

if TYPE_CHECKING:
    from smtpauth_milter.daemon.metrics import Metrics
from smtpauth_milter.daemon.refresh import SnapshotCache
from smtpauth_milter.lookups.spf import SpfChecks
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.urls import display_url

log = logging.getLogger("smtpauth_milter")
STOP_WAKES = 50  # connections at most to make libmilter see a stop (then its 5 s timeout does)
SOCKET_UMASK = 0o117  # a unix socket comes out 0660: the MTA's group, nobody else


def _no_session(method: str) -> int:
    log.warning(
        "%s",
        logfmt.Fields({"event": "protocol-error", "callback": method, "error": "no session yet"}),
    )
    return int(Milter.TEMPFAIL)


def _dispatch(method: str) -> Callable[..., int]:
    """Hand a libmilter callback to the session's milter object.

    A command before the session exists (MAIL before CONNECT: only a broken or
    hostile peer sends that) is one logged line and a 4xx, not a raw traceback.
    """

    def callback(ctx: Any, *args: Any) -> int:
        session = ctx.getpriv()
        if session is None:
            return _no_session(method)
        return int(getattr(session, method)(*args))

    return callback


def _dispatch_text(method: str) -> Callable[..., int]:
    """:func:`_dispatch` for MAIL and RCPT, whose arguments libmilter hands over as bytes:
    decoded here as ``Milter.Base.envfrom_bytes`` does (UTF-8, undecodable bytes kept as
    surrogates), without its two extra Python calls and a list per command."""

    def callback(ctx: Any, first: bytes, *rest: bytes) -> int:
        session = ctx.getpriv()
        if session is None:
            return _no_session(method)
        text = first.decode("utf-8", "surrogateescape")
        if rest:
            return int(getattr(session, method)(text, *(_text(arg) for arg in rest)))
        return int(getattr(session, method)(text))

    return callback


def _text(arg: bytes) -> str:
    return arg.decode("utf-8", "surrogateescape")


def _register(socket_spec: str, timeout: int) -> None:
    """What ``Milter.runmilter`` does before serving, without serving yet."""
    milter = Milter.milter
    milter.set_connect_callback(Milter.connect_callback)
    milter.set_helo_callback(_dispatch("hello"))
    milter.set_envfrom_callback(_dispatch_text("envfrom"))
    milter.set_envrcpt_callback(_dispatch_text("envrcpt"))
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


def _open_socket(
    config: RunConfig, socket_path: Path | None, identity: Identity | None
) -> tuple[int, SocketFile | None]:
    """Listen (as root if we are); a unix socket comes out USER:GROUP, mode 0660,
    without root changing anything at its path (see daemon/sockfile.py).

    Returns the listening file descriptor (libmilter keeps it to itself) and the
    socket file bound, if any.
    """
    before = listening_sockets()
    # bound as USER where others than root can change names (a missing directory:
    # root binds, and fails saying so)
    shared = (
        socket_path is not None
        and socket_path.parent.is_dir()
        and not root_only(socket_path.parent)
    )
    binder = identity if shared else None
    old_umask = os.umask(SOCKET_UMASK) if socket_path else None
    try:
        with binder.acting() if binder is not None else contextlib.nullcontext():
            _register(config.socket, timeout=60)
            Milter.milter.opensocket(True)
    except Milter.milter.error as exc:
        made = f" (made as {binder.user}: its directory is not root's alone)" if binder else ""
        raise ConfigError(
            f"cannot listen on {config.socket}{made}: {exc} (address in use, something not a "
            "socket at its path, or the socket's directory is missing or not writable)"
        ) from exc
    finally:
        if old_umask is not None:
            os.umask(old_umask)
    bound = SocketFile.bound(socket_path) if socket_path is not None else None
    if bound is not None and identity is not None and binder is None:
        bound.hand_to(identity)  # bound by root where only root can change anything
    opened = listening_sockets() - before
    if len(opened) != 1:
        raise SmtpauthError(f"cannot find the socket libmilter opened for {config.socket}")
    return opened.pop(), bound


def _metrics(config: RunConfig) -> Metrics | None:
    """Metrics only when asked for: prometheus_client is not even imported otherwise."""
    if config.metrics is None:
        return None
    from smtpauth_milter.daemon.metrics import Metrics

    return Metrics()


def _serve(
    config: RunConfig,
    store: Store,
    metrics: Metrics | None,
    reread: Callable[[], RunConfig],
    listen_fd: int,
    reload_first: bool = False,
) -> int:
    """The milter process: refresh thread, metrics thread, libmilter; until TERM/INT."""
    observe = metrics.looked_up if metrics is not None else None
    maps = OwnershipMaps(observe=observe)
    cache = SnapshotCache(
        store,
        config.max_stale,
        on_refresh=metrics.refreshed if metrics is not None else None,
        deadline=store.read_deadline,
        # new sender-login-maps are probed at start and when a snapshot brings them
        on_snapshot=lambda snapshot: maps.prepare(snapshot.global_settings),
    )
    reloader = Reloader(config, reread, cache)

    where = listener_address(listen_fd)

    def stop(name: str) -> None:
        """smfi_stop raises libmilter's stop flag, then waits for the lock its accept
        loop holds while it waits up to 5 s for a connection: a connection of our
        own ends that wait (again every 20 ms if it came before the flag)."""
        log.info("%s", logfmt.Fields({"event": "stopping", "signal": name}))
        stopper = threading.Thread(target=Milter.milter.stop, name="stop", daemon=True)
        stopper.start()
        for _ in range(STOP_WAKES):
            stopper.join(0.02)
            if not stopper.is_alive():
                return
            wake_listener(where)

    if reload_first:  # a restarted child: apply what a SIGHUP applied to its predecessor
        reloader("restart")
    if metrics is not None:
        metrics.snapshot_age = cache.age
        metrics.serve()
    spf = SpfChecks(observe=observe)
    notifier = Notifier()
    limiter = LoginLimiter(f"milter@{socket.gethostname()}", notifier=notifier)
    # A store object of its own (even for the same URL): its own connections and its own
    # deadline for the login-sync thread, beside the refresh thread's.
    state = Store(config.state or config.db, serving=True)
    decisions = DecisionCounts()  # the console's Dashboard: flushed by the login-sync thread
    sync = LoginSync(limiter, state, decisions=decisions)
    if metrics is not None:
        metrics.frozen_logins = limiter.frozen_count
    Milter.factory = lambda: SmtpAuthMilter(cache, spf, metrics, maps, limiter, decisions)
    try:
        cache.start(reloader.config.refresh)
        sync.start()
        notifier.start()
        with writer_while_serving():  # one log writer thread while libmilter's threads log
            signals.serve(reloader, stop)
    finally:
        notifier.stop()
        sync.stop()
        cache.stop()
        spf.stop()
        maps.stop()
        store.dispose()
        state.dispose()
    return 0


def _child(
    config: RunConfig,
    store: Store,
    metrics: Metrics | None,
    reread: Callable[[], RunConfig],
    listen_fd: int,
) -> Callable[[bool], int]:
    def main(reloaded: bool) -> int:
        store.engine.dispose(close=False)  # never share the parent's connections (it has none)
        try:
            return _serve(config, store, metrics, reread, listen_fd, reload_first=reloaded)
        except SmtpauthError as exc:
            log.error("%s", logfmt.Fields({"event": "error", "error": str(exc)}))
            return 2
        except Exception:
            log.exception("%s", logfmt.Fields({"event": "internal-error", "where": "milter child"}))
            return 70  # EX_SOFTWARE: a bug; restarting would repeat it

    return main


def _warn_root(identity: Identity | None) -> None:
    """Serving as root: every local user who reaches the socket talks to a root process."""
    log.warning(
        "%s",
        logfmt.Fields(
            {
                "event": "running-as-root",
                "state": "the milter keeps every root privilege",
                "fix": "run --user NAME (e.g. --user smtpauth-milter --group postfix)"
                if identity is None
                else "run --user with an unprivileged user, without --allow-root",
            }
        ),
    )


def run(config: RunConfig, reread: Callable[[], RunConfig] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; tempfail while the store is unreadable. Returns the exit code."""
    # libmilter's signal thread sigwait()s HUP/TERM/INT: block them (and the
    # reload signals) before any thread exists; see daemon/signals.py. Whoever
    # called us gets its signal mask back, also when we fail before serving.
    previous = signals.block()
    try:
        return _run(config, reread)
    finally:
        signals.restore(previous)


def _run(config: RunConfig, reread: Callable[[], RunConfig] | None) -> int:
    identity = Identity.resolve(config.user, config.group, config.allow_root)
    setup_logging(config.log_level, config.syslog, config.log_format)
    store = Store(config.db, serving=True)
    metrics = _metrics(config)
    socket_path = unix_socket_path(config.socket)
    bound: SocketFile | None = None
    try:
        if metrics is not None and config.metrics is not None:
            metrics.listen(config.metrics)  # as root, before dropping privileges
        listen_fd, bound = _open_socket(config, socket_path, identity)
        if identity is not None:
            identity.drop()
        check_store_readable(store)  # also when systemd started us as User=
        log.info(
            "%s",
            logfmt.Fields(
                {
                    "event": "start",
                    "socket": config.socket,
                    "store": store.display,
                    # where login counts and freezes are written: another store, or this one
                    "state": display_url(config.state) if config.state else "store",
                    "user": identity.user if identity else None,
                    "metrics": config.metrics,
                    "auto_restart": "on" if config.auto_restart else "off",
                }
            ),
        )
        if os.geteuid() == 0:
            _warn_root(identity)
        reread = reread or (lambda: config)
        if not config.auto_restart:
            return _serve(config, store, metrics, reread, listen_fd)
        store.warm()  # once here, not again in every child the supervisor forks
        supervisor = Supervisor(
            _child(config, store, metrics, reread, listen_fd),
            listen_fd,
            on_restart=metrics.restarted if metrics is not None else None,
        )
        return supervisor.run()
    finally:
        if metrics is not None:
            metrics.stop()
        store.dispose()
        if bound is not None:
            bound.remove()
        log.info("%s", logfmt.Fields({"event": "stop"}))
