"""One plain-text mail per login a milter freezes, to ``notify-address``, through
``notify-relay`` (SMTP, e.g. the local MTA on 127.0.0.1:25), from its own thread.

Never on a libmilter thread: the hot path only puts a :class:`FreezeReport` in a
bounded queue (a full queue drops it, and says so).  SMTP, not ``sendmail``:
the shipped systemd unit's ``NoNewPrivileges`` stops Postfix's setgid
``postdrop``.  See docs/policy.md#telling-people.
"""

from __future__ import annotations

import logging
import queue
import smtplib
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.limits import parse_relay

log = logging.getLogger("smtpauth_milter")

QUEUE = 100  # reports waiting at most; a freeze storm beyond it is in the log alone
TIMEOUT = 10.0  # seconds for one SMTP conversation


@dataclass(frozen=True)
class FreezeReport:
    login: str
    limit: str
    count: int
    at: float
    host: str  # the milter that froze it
    to: str
    relay: str
    clients: tuple[str, ...]
    recent: tuple[tuple[str, str], ...]  # (MAIL FROM, RCPT TO), newest last


def _plain(text: str) -> str:
    """What the MTA sent (a login, an envelope address) as one safe line of text."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def message(report: FreezeReport) -> EmailMessage:
    login = _plain(report.login)
    mail = EmailMessage()
    mail["From"] = report.to
    mail["To"] = report.to
    mail["Subject"] = f"smtpauth-milter froze login {login}"
    mail["Date"] = format_datetime(datetime.fromtimestamp(report.at, UTC))
    mail["Message-ID"] = make_msgid("smtpauth-milter")
    lines = [
        f"The login {login} was frozen by {_plain(report.host)}: it went over",
        f"{report.limit} with {report.count}.",
        "",
        "All its mail is refused until an admin runs:",
        f"    smtpauth-milter login unfreeze {login}",
        "",
        "Client addresses seen in the limit's window:",
        *(f"    {client}" for client in report.clients or ("-",)),
        "",
        "Its last messages (MAIL FROM -> RCPT TO):",
        *(f"    {_plain(f)} -> {_plain(t)}" for f, t in report.recent or (("-", "-"),)),
        "",
        "A stolen password is the likely cause: change it before unfreezing.",
    ]
    mail.set_content("\n".join(lines) + "\n")
    return mail


class Notifier:
    def __init__(self) -> None:
        self._queue: queue.Queue[FreezeReport | None] = queue.Queue(QUEUE)
        self._thread: threading.Thread | None = None

    def report(self, report: FreezeReport) -> None:
        """From any thread, never blocking."""
        try:
            self._queue.put_nowait(report)
        except queue.Full:
            fields = {"event": "login-notify-dropped", "login": report.login, "to": report.to}
            log.warning("%s", logfmt.Fields(fields))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="login-notify", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (report := self._queue.get()) is not None:
            self.send(report)

    def send(self, report: FreezeReport) -> bool:
        fields = {"login": report.login, "to": report.to, "relay": report.relay}
        try:
            host, port = parse_relay(report.relay)
            with smtplib.SMTP(host, port, timeout=TIMEOUT) as smtp:
                smtp.send_message(message(report), from_addr="", to_addrs=[report.to])
        except (OSError, smtplib.SMTPException, ValueError) as exc:
            error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            log.warning(
                "%s", logfmt.Fields({"event": "login-notify-failed", **fields, "error": error})
            )
            return False
        log.info("%s", logfmt.Fields({"event": "login-notified", **fields}))
        return True

    def stop(self) -> None:
        if self._thread is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                return  # a daemon thread: it ends with the process
            self._thread.join(timeout=TIMEOUT)
