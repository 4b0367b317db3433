"""The HTTP side of ``run --metrics``: one thread for every client, bounded.

A server with a thread per connection and no timeout let 500 idle connections
hold 500 threads for as long as they stayed open (issue 21).  Here one thread
multiplexes every connection with ``selectors``: an idle client costs a file
descriptor and a few bytes, never a thread.  At most ``max_clients``
connections are open (the rest of the process needs its file descriptors for
the MTA): a new connection closes the oldest one still sending its request,
so idle clients cannot lock a scrape out.  Each connection has ``deadline``
seconds from its accept to the end of the reply.  A request is answered by
prometheus_client's WSGI app (content negotiation, gzip, ``name[]`` as
before), then the connection is closed.  No error here reaches stderr: a
client's failure closes that client, anything unexpected is one log line.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from smtpauth_milter.core import logfmt

log = logging.getLogger("smtpauth_milter")

MAX_CLIENTS = 64
DEADLINE = 10.0  # seconds from accept to the end of the reply
MAX_REQUEST = 8192  # bytes of request line and headers
BACKLOG = 128
TICK = 0.5  # seconds between looks for connections past their deadline

StartResponse = Callable[[str, list[tuple[str, str]]], object]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def bind(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on ``host:port`` (raises OSError)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(BACKLOG)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener


class _Client:
    __slots__ = ("deadline", "inbox", "outbox", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.inbox = b""
        self.outbox = b""  # non-empty: the request is read, the reply is being sent


class MetricsServer:
    """Serve ``app`` on ``listener`` from :meth:`serve_forever` until :meth:`shutdown`."""

    def __init__(
        self,
        listener: socket.socket,
        app: WsgiApp,
        max_clients: int = MAX_CLIENTS,
        deadline: float = DEADLINE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.listener = listener
        self._app = app
        self._max_clients = max_clients
        self._deadline = deadline
        self._clock = clock
        self._clients: dict[int, _Client] = {}  # in the order they were accepted
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector: selectors.BaseSelector | None = None
        self._paused_until: float | None = None  # accepting paused: out of descriptors

    def serve_forever(self) -> None:
        self._selector = selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ)
        selector.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self._stopping.is_set():
                try:
                    self._step(selector)
                except Exception as exc:  # never a traceback on stderr, never a dead thread
                    log.error("%s", logfmt.Fields({"event": "metrics-error", "error": repr(exc)}))
                    self._stopping.wait(TICK)  # a fault that repeats: one line a tick, no spin
        finally:
            for client in list(self._clients.values()):
                self._close(client)
            selector.close()
            self._stopped.set()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` (running or not) and wait for it, bounded."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        if self._selector is not None:
            self._stopped.wait(5.0)

    def close(self) -> None:
        self.listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # --- one turn of the loop --------------------------------------------------

    def _step(self, selector: selectors.BaseSelector) -> None:
        ready = selector.select(TICK)
        # Clients first: a request that has arrived is read before new connections
        # could evict its sender.
        for key, _ in ready:
            if isinstance(key.data, _Client) and key.data.sock.fileno() != -1:
                self._serve(key.data)  # (-1: closed earlier in this turn)
        if any(key.fileobj is self.listener for key, _ in ready):
            self._accept(selector)
        now = self._clock()
        for client in [c for c in self._clients.values() if c.deadline <= now]:
            self._close(client)
        if self._paused_until is not None and now >= self._paused_until:
            self._paused_until = None
            selector.register(self.listener, selectors.EVENT_READ)

    def _accept(self, selector: selectors.BaseSelector) -> None:
        """Accept what is waiting, at most ``max_clients`` per turn (a flood of
        connections must not keep the loop from the clients it has)."""
        for _ in range(self._max_clients):
            try:
                sock, _ = self.listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE) and self._evict():
                    continue  # a descriptor is free again
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    # none of ours to free: stop asking until the next tick, not spin
                    selector.unregister(self.listener)
                    self._paused_until = self._clock() + TICK
                return  # e.g. ECONNABORTED: the next select tells
            if len(self._clients) >= self._max_clients and not self._evict():
                sock.close()  # every slot is sending a reply: this one must wait its turn
                continue
            sock.setblocking(False)
            client = _Client(sock, self._clock() + self._deadline)
            self._clients[sock.fileno()] = client
            selector.register(sock, selectors.EVENT_READ, client)

    def _evict(self) -> bool:
        """Close the oldest client still sending its request; False when there is none."""
        for client in self._clients.values():
            if not client.outbox:
                self._close(client)
                return True
        return False

    def _serve(self, client: _Client) -> None:
        try:
            if client.outbox:
                self._send(client)
                return
            data = client.sock.recv(MAX_REQUEST)
            if not data:
                self._close(client)
                return
            client.inbox += data
            head, found, _ = client.inbox.partition(b"\r\n\r\n")
            if found:
                client.outbox = self._answer_or_500(head)
            elif len(client.inbox) > MAX_REQUEST:
                client.outbox = _reply("431 Request Header Fields Too Large", [], b"")
            else:
                return
            self._send(client)
        except BlockingIOError:
            return  # nothing to read or no room to write after all: the next select
        except OSError:
            self._close(client)

    def _send(self, client: _Client) -> None:
        sent = client.sock.send(client.outbox)
        client.outbox = client.outbox[sent:]
        if not client.outbox:
            self._close(client)
        elif self._selector is not None:
            self._selector.modify(client.sock, selectors.EVENT_WRITE, client)

    def _answer_or_500(self, head: bytes) -> bytes:
        try:
            return self._answer(head)
        except Exception as exc:  # a collector that fails: one line, no traceback
            log.error("%s", logfmt.Fields({"event": "metrics-error", "error": repr(exc)}))
            return _reply("500 Internal Server Error", [], b"")

    def _answer(self, head: bytes) -> bytes:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return _reply("400 Bad Request", [], b"")
        path, _, query = parts[1].partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": parts[0],
            "PATH_INFO": path,
            "QUERY_STRING": query,
        }
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key = "HTTP_" + name.strip().upper().replace("-", "_")
            if key in ("HTTP_ACCEPT", "HTTP_ACCEPT_ENCODING"):
                environ[key] = value.strip()
        answer: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]]) -> object:
            answer[:] = [status, headers]
            return None

        body = b"".join(self._app(environ, start_response))
        return _reply(answer[0], answer[1], body)

    def _close(self, client: _Client) -> None:
        self._clients.pop(client.sock.fileno(), None)
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(client.sock)
        client.sock.close()


def _reply(status: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    head = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers)]
    head += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    return "\r\n".join(head).encode("latin-1") + body
