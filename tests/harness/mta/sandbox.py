"""A private Postfix + Dovecot (SASL) sandbox: start, point at a milter, send with swaks, stop.

Everything lives under one directory; nothing touches the system's Postfix or
Dovecot configuration, spool or port 25. Must run as root (Postfix's master).
"""

from __future__ import annotations

import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from smtpauth_milter.admin.milterproto.transport import free_tcp_port
from tests.harness.logfile import LogFile
from tests.harness.waiting import reap_pid, signal_pid

from .common import LOOPBACK, make_traversable
from .dovecot import Dovecot
from .postfix import Postfix
from .swaks import SwaksResult, smtp

USERS: dict[str, str] = {
    "alice@example.com": "alice-secret",
    "bob@example.com": "bob-secret",
    "carol": "carol-secret",
}


@dataclass
class Sandbox:
    """Postfix on ``port`` with SASL logins ``users`` checked by Dovecot."""

    root: Path
    postfix: Postfix
    dovecot: Dovecot
    users: dict[str, str]

    @property
    def port(self) -> int:
        return self.postfix.port

    @property
    def maillog(self) -> LogFile:
        return self.postfix.maillog

    def inet_milter_socket(self) -> str:
        """A fresh ``inet:127.0.0.1:PORT`` (Postfix notation) nobody listens on."""
        return f"inet:{LOOPBACK}:{free_tcp_port(LOOPBACK)}"

    def unix_milter_socket(self, name: str = "milter") -> str:
        """``unix:/...`` in a directory the postfix user can traverse."""
        directory = self.root / "milters"
        directory.mkdir(mode=0o755, exist_ok=True)
        return f"unix:{directory / name}.sock"

    def smtp(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        user: str | None = None,
        password: str | None = None,
        mech: str = "PLAIN",
    ) -> SwaksResult:
        if user is not None and password is None:
            password = self.users[user]
        return smtp(self.port, mail_from, rcpts, user=user, password=password, mech=mech)

    def stop(self, wait: bool = True) -> None:
        """Stop Postfix and Dovecot together (they take ~2 s and ~3 s to wind down).

        SIGTERM to Postfix's master is what "postfix stop" sends (without its
        1 s polling sleeps); Dovecot's master stops its children itself.
        ``wait=False`` leaves them winding down on their own: for a sandbox nothing
        uses any more (the end of a module or of the run), whose ports and
        directories are its own.
        """
        pids = [self.postfix.master_pid(), self.dovecot.pid()]
        for pid in pids:
            signal_pid(pid, signal.SIGTERM)
        if wait:
            for pid in pids:
                reap_pid(pid)
        self.postfix.running = False


def start_sandbox(
    root: Path,
    users: Mapping[str, str] | None = None,
    *,
    dovecot_extra: str = "",
    overrides: Mapping[str, str] | None = None,
) -> Sandbox:
    """Start Dovecot and Postfix (without a milter) under ``root``; stop both on failure.

    ``dovecot_extra`` is appended to dovecot.conf; ``overrides`` are main.cf parameters
    set over the sandbox's own (see :meth:`Postfix.use_overrides`).
    """
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    make_traversable(root)
    users = dict(USERS if users is None else users)
    postfix = Postfix(root / "postfix", free_tcp_port(LOOPBACK))
    dovecot = Dovecot(root / "dovecot", postfix.auth_socket, LogFile(root / "dovecot.log"))
    sandbox = Sandbox(root, postfix, dovecot, users)
    try:
        postfix.prepare()
        dovecot.write_config(users)
        if dovecot_extra:
            with dovecot.config.open("a") as config:
                config.write(dovecot_extra)
        dovecot.start()
        if overrides:
            postfix.use_overrides(overrides)
        postfix.use_milter(None)
    except BaseException:
        sandbox.stop()
        raise
    return sandbox
