"""A milter-protocol (version 6) client that speaks to a milter as an MTA does.

Pure Python over a TCP or unix socket; no pymilter.  Every byte it sends or
reads is encoded and decoded by the package's codec,
``smtpauth_milter.admin.milterproto``; this module only drives sessions.

Usage::

    with MilterClient("inet:9999@127.0.0.1", timeout=5) as client:
        client.negotiate()
        client.connect("client.test", "4", 40000, "203.0.113.9")
        client.helo("client.test")
        client.mail("<alice@example.com>", macros={"{auth_authen}": "alice"})
        reply = client.rcpt("<bob@example.net>")
        client.abort()
        client.quit()

or in one call: ``session("inet:9999@127.0.0.1", sender=..., rcpts=[...])``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from smtpauth_milter.admin.milterproto.codec import (
    MilterProtocolError,
    Negotiated,
    cstring,
    decode_optneg,
    encode_args,
    encode_connect,
    encode_macros,
    encode_optneg,
    encode_packet,
    filter_macros,
    parse_replycode,
)
from smtpauth_milter.admin.milterproto.transport import PacketReader, open_socket
from smtpauth_milter.admin.milterproto.wire import (
    ALL_ACTIONS,
    ALL_PROTOCOL,
    MILTER_CHUNK_SIZE,
    MODIFICATIONS,
    PROTOCOL_VERSION,
    SMFIA_INET,
    SMFIA_INET6,
    SMFIA_UNIX,
    SMFIC_ABORT,
    SMFIC_MACRO,
    SMFIC_OPTNEG,
    SMFIC_QUIT,
    SMFIC_QUIT_NC,
    SMFIR_PROGRESS,
    SMFIR_REPLYCODE,
    STEPS,
    VERDICTS,
    Verdict,
)

ReplyKind = Literal[Verdict, "skipped", "noreply", "not-sent"]


# -- results --------------------------------------------------------------------


@dataclass(frozen=True)
class Modification:
    """A message modification sent at end of message (add header, ...)."""

    command: bytes
    data: bytes


@dataclass(frozen=True)
class Reply:
    """The milter's answer to one step.

    ``kind`` is the verdict (``continue``, ``reject``, ...), or ``skipped``
    (the milter negotiated this step away), ``noreply`` (no-reply step) or
    ``not-sent`` (an earlier verdict ended the session before this step).
    For ``replycode`` the reply string ``"550 5.7.1 no"`` is parsed into
    ``code=550``, ``xcode="5.7.1"``, ``text="no"``; ``message`` keeps it whole.
    """

    kind: ReplyKind
    code: int | None = None
    text: str | None = None
    xcode: str | None = None
    message: str | None = None
    modifications: tuple[Modification, ...] = ()

    @property
    def continues(self) -> bool:
        """True when an MTA would carry on as if the milter said continue."""
        return self.kind in ("continue", "skipped", "noreply")

    @property
    def action(self) -> str:
        """``reject``/``tempfail`` for reply codes (5xx/4xx), else ``kind``."""
        if self.kind == "replycode" and self.code is not None:
            return "reject" if self.code >= 500 else "tempfail"
        return self.kind

    @property
    def ends_message(self) -> bool:
        """The milter has decided the whole message/session (no more steps)."""
        return self.kind in ("accept", "discard", "conn_fail", "shutdown")


@dataclass
class SessionResult:
    """Replies of one SMTP session as ``session()`` drove it."""

    negotiated: Negotiated
    connect: Reply
    helo: Reply
    mail: Reply
    rcpts: list[Reply]
    data: Reply | None = None
    eom: Reply | None = None


class MilterClient:
    """One milter connection, driven step by step like an MTA.

    ``send_only_requested_macros``: when the milter sent a macro list for a
    stage, send only those of the given macros (what Postfix and Sendmail do);
    when False, always send every macro given.
    """

    def __init__(
        self, socket_spec: str, timeout: float = 10.0, *, send_only_requested_macros: bool = True
    ) -> None:
        self.socket_spec = socket_spec
        self.timeout = timeout
        self.send_only_requested_macros = send_only_requested_macros
        self.negotiated: Negotiated | None = None
        self.sent: list[tuple[bytes, bytes]] = []  # every packet sent, for debugging
        self._sock: socket.socket | None = open_socket(socket_spec, timeout)
        self._reader = PacketReader(self._sock)

    # -- context management ---------------------------------------------------

    def __enter__(self) -> MilterClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def closed(self) -> bool:
        return self._sock is None

    # -- raw access ----------------------------------------------------------------

    def send_raw(self, command: bytes, data: bytes = b"") -> None:
        """Send one packet as is (for fuzzing)."""
        self._socket().sendall(encode_packet(command, data))
        self.sent.append((command, data))

    def send_bytes(self, raw: bytes) -> None:
        """Send arbitrary bytes, not even framed (for fuzzing)."""
        self._socket().sendall(raw)

    def read_packet(self) -> tuple[bytes, bytes]:
        """One packet ``(command, data)`` within ``timeout``; raises ConnectionError at EOF."""
        self._socket()
        return self._reader.read(self.timeout)

    def read_reply(self) -> Reply:
        """Read until a verdict, skipping progress packets and collecting modifications."""
        modifications: list[Modification] = []
        while True:
            command, data = self.read_packet()
            if command == SMFIR_PROGRESS:
                continue
            if command in MODIFICATIONS:
                modifications.append(Modification(command, data))
                continue
            return verdict_reply(command, data, tuple(modifications))

    def at_eof(self, timeout: float = 1.0) -> bool:
        """True when the milter has closed the connection (waits up to ``timeout``)."""
        sock = self._socket()
        sock.settimeout(timeout)
        try:
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (TimeoutError, BlockingIOError):
            return False
        except ConnectionResetError:
            return True
        finally:
            sock.settimeout(self.timeout)

    # -- protocol steps ----------------------------------------------------------

    def negotiate(
        self,
        version: int = PROTOCOL_VERSION,
        actions: int = ALL_ACTIONS,
        protocol: int = ALL_PROTOCOL,
    ) -> Negotiated:
        self.send_raw(SMFIC_OPTNEG, encode_optneg(version, actions, protocol))
        command, data = self.read_packet()
        if command != SMFIC_OPTNEG:
            raise MilterProtocolError(f"expected OPTNEG reply, got {command!r} {data!r}")
        self.negotiated = decode_optneg(data)
        return self.negotiated

    def connect(
        self,
        hostname: str,
        family: str = SMFIA_INET,
        port: int | None = 0,
        address: str | None = None,
        macros: Mapping[str, str] | None = None,
    ) -> Reply:
        return self._step("connect", encode_connect(hostname, family, port, address), macros)

    def helo(self, name: str, macros: Mapping[str, str] | None = None) -> Reply:
        return self._step("helo", cstring(name), macros)

    def mail(
        self,
        sender: str,
        esmtp_args: Sequence[str] = (),
        macros: Mapping[str, str] | None = None,
    ) -> Reply:
        """``sender`` as the client typed it, with its brackets: ``<a@b>``."""
        return self._step("mail", encode_args([sender, *esmtp_args]), macros)

    def rcpt(
        self,
        rcpt: str,
        macros: Mapping[str, str] | None = None,
        esmtp_args: Sequence[str] = (),
    ) -> Reply:
        return self._step("rcpt", encode_args([rcpt, *esmtp_args]), macros)

    def data(self, macros: Mapping[str, str] | None = None) -> Reply:
        return self._step("data", b"", macros)

    def header(self, name: str, value: str) -> Reply:
        return self._step("header", cstring(name) + cstring(value), None)

    def eoh(self, macros: Mapping[str, str] | None = None) -> Reply:
        return self._step("eoh", b"", macros)

    def body(self, chunk: bytes) -> Reply:
        """One body chunk (an MTA sends at most 65535 bytes per chunk)."""
        return self._step("body", chunk, None)

    def eom(self, macros: Mapping[str, str] | None = None) -> Reply:
        return self._step("eom", b"", macros)

    def unknown(self, command_line: str) -> Reply:
        return self._step("unknown", cstring(command_line), None)

    def abort(self) -> None:
        """End the current message (no reply)."""
        self.send_raw(SMFIC_ABORT)

    def quit(self) -> None:
        """End the session (no reply); the milter closes its side."""
        self.send_raw(SMFIC_QUIT)

    def quit_keep_connection(self) -> None:
        """SMFIC_QUIT_NC: end the session, keep the connection for a new one."""
        self.send_raw(SMFIC_QUIT_NC)

    def send_macros(self, stage_command: bytes, macros: Mapping[str, str]) -> None:
        self.send_raw(SMFIC_MACRO, encode_macros(stage_command, macros))

    # -- whole sessions ----------------------------------------------------------

    def run_session(
        self,
        *,
        sender: str,
        rcpts: Sequence[str],
        login: str | None = None,
        client_addr: str = "203.0.113.9",
        client_name: str = "client.example.test",
        client_port: int = 40000,
        helo_name: str = "client.example.test",
        queue_id: str | None = "4ABCDEF0123",
        family: str | None = None,
        connect_macros: Mapping[str, str] | None = None,
        mail_macros: Mapping[str, str] | None = None,
        rcpt_macros: Mapping[str, str] | None = None,
        message: Sequence[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> SessionResult:
        """negotiate, connect, helo, mail, every rcpt, then abort (or DATA..EOM
        when ``message`` headers are given) and quit.

        ``sender``/``rcpts`` are wrapped in ``<>`` unless they already are.
        The login goes into ``{auth_authen}`` (plus ``{auth_type}=PLAIN``).
        """
        negotiated = self.negotiated or self.negotiate()
        default_connect = _connect_macros(client_addr, client_name, client_port)
        connect = self.connect(
            client_name,
            family or _family_of(client_addr),
            client_port,
            client_addr,
            {**default_connect, **(connect_macros or {})},
        )
        helo = _unless_stopped(connect, lambda: self.helo(helo_name))
        mail_macros = {**_mail_macros(login, queue_id), **(mail_macros or {})}
        mail = _unless_stopped(helo, lambda: self.mail(_bracketed(sender), macros=mail_macros))
        result = SessionResult(negotiated, connect, helo, mail, [])
        if mail.kind != "not-sent":
            result.rcpts = self._send_rcpts(mail, rcpts, queue_id, rcpt_macros)
            self._finish_transaction(result, message, body, queue_id)
        else:
            result.rcpts = [Reply("not-sent") for _ in rcpts]
        self.quit()
        return result

    def _send_rcpts(
        self,
        mail: Reply,
        rcpts: Sequence[str],
        queue_id: str | None,
        extra_macros: Mapping[str, str] | None,
    ) -> list[Reply]:
        """One reply per recipient; a rejected recipient does not stop the others."""
        replies: list[Reply] = []
        stopped = not mail.continues
        for rcpt in rcpts:
            if stopped:
                replies.append(Reply("not-sent"))
                continue
            macros = {**_rcpt_macros(rcpt, queue_id), **(extra_macros or {})}
            reply = self.rcpt(_bracketed(rcpt), macros)
            replies.append(reply)
            stopped = reply.ends_message
        return replies

    def _finish_transaction(
        self,
        result: SessionResult,
        message: Sequence[tuple[str, str]] | None,
        body: bytes,
        queue_id: str | None,
    ) -> None:
        """DATA..EOM when a message is given and some recipient was accepted, else ABORT."""
        accepted = any(r.continues for r in result.rcpts)
        if message is None or not result.mail.continues or not accepted:
            self.abort()
            return
        qid = {"i": queue_id} if queue_id else {}
        result.data = self.data(qid)
        if not result.data.continues:
            self.abort()
            return
        for name, value in message:
            self.header(name, value)
        self.eoh(qid)
        for offset in range(0, len(body), MILTER_CHUNK_SIZE):
            self.body(body[offset : offset + MILTER_CHUNK_SIZE])
        result.eom = self.eom(qid)

    # -- internals -------------------------------------------------------------

    def _step(self, name: str, data: bytes, macros: Mapping[str, str] | None) -> Reply:
        step = STEPS[name]
        negotiated = self._negotiated()
        if negotiated.skips(name):
            return Reply("skipped")
        if step.macro_stage is not None and macros:
            wanted = negotiated.macros_for(name) if self.send_only_requested_macros else None
            selected = filter_macros(macros, wanted)
            if selected:
                self.send_macros(step.command, selected)
        self.send_raw(step.command, data)
        if negotiated.no_reply(name):
            return Reply("noreply")
        return self.read_reply()

    def _negotiated(self) -> Negotiated:
        if self.negotiated is None:
            raise MilterProtocolError("negotiate() first")
        return self.negotiated

    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise ConnectionError("client is closed")
        return self._sock


def verdict_reply(command: bytes, data: bytes, mods: tuple[Modification, ...] = ()) -> Reply:
    """The Reply for a verdict packet; SMFIR_REPLYCODE is parsed into code/xcode/text."""
    if command == SMFIR_REPLYCODE:
        parsed = parse_replycode(data)
        return Reply("replycode", parsed.code, parsed.text, parsed.xcode, parsed.message, mods)
    kind = VERDICTS.get(command)
    if kind is None:
        raise MilterProtocolError(f"unexpected reply {command!r} {data!r}")
    return Reply(kind, modifications=mods)


def _unless_stopped(previous: Reply, step: Callable[[], Reply]) -> Reply:
    """Connect/HELO/MAIL: anything but continue ends the milter's part of the session."""
    return step() if previous.continues else Reply("not-sent")


def _bracketed(address: str) -> str:
    return address if address.startswith("<") else f"<{address}>"


def _family_of(address: str) -> str:
    if address.startswith("/"):
        return SMFIA_UNIX
    return SMFIA_INET6 if ":" in address else SMFIA_INET


def _connect_macros(client_addr: str, client_name: str, client_port: int) -> dict[str, str]:
    return {
        "j": "mx.example.test",
        "{daemon_name}": "smtpd",
        "{daemon_addr}": "127.0.0.1",
        "v": "Postfix 3.7.11",
        "_": f"{client_name} [{client_addr}]",
        "{client_addr}": client_addr,
        "{client_name}": client_name,
        "{client_port}": str(client_port),
    }


def _mail_macros(login: str | None, queue_id: str | None) -> dict[str, str]:
    macros: dict[str, str] = {"{mail_mailer}": "smtp"}
    if queue_id:
        macros["i"] = queue_id
    if login:
        macros.update({"{auth_type}": "PLAIN", "{auth_authen}": login})
    return macros


def _rcpt_macros(rcpt: str, queue_id: str | None) -> dict[str, str]:
    macros = {"{rcpt_addr}": rcpt.strip("<>"), "{rcpt_mailer}": "smtp"}
    if queue_id:
        macros["i"] = queue_id
    return macros


def session(
    socket_spec: str,
    *,
    sender: str,
    rcpts: Sequence[str],
    login: str | None = None,
    timeout: float = 10.0,
    send_only_requested_macros: bool = True,
    **kwargs: object,
) -> SessionResult:
    """Open a connection, run one whole SMTP session, close; see ``run_session``."""
    with MilterClient(
        socket_spec, timeout, send_only_requested_macros=send_only_requested_macros
    ) as client:
        return client.run_session(sender=sender, rcpts=rcpts, login=login, **kwargs)  # type: ignore[arg-type]
