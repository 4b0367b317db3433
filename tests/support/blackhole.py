"""A TCP proxy that can stop forwarding without closing anything: a hung middlebox.

``hole()``: every byte that arrives from then on is swallowed, on connections
already open and on new ones (the kernel still accepts and acknowledges, so
keepalives and ``tcp_user_timeout`` see a healthy peer).  ``heal()``: new
connections are forwarded again; the ones that lived through the hole stay
dead, as behind a NAT box or pooler that lost their state.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType


class BlackholeProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._generation = 0  # bumped by hole(): connections of an older one stay dead
        self._holed = False
        self._sockets: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, name="blackhole-accept", daemon=True).start()

    def hole(self) -> None:
        with self._lock:
            self._holed = True
            self._generation += 1

    def heal(self) -> None:
        with self._lock:
            self._holed = False

    def _alive(self, generation: int) -> bool:
        with self._lock:
            return not self._holed and generation == self._generation and not self._closed

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._keep(client):
                return
            with self._lock:
                generation, holed = self._generation, self._holed
            if holed:
                continue  # accepted by the kernel, never answered
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            if not self._keep(server):
                return
            for src, dst in ((client, server), (server, client)):
                threading.Thread(
                    target=self._pump, args=(src, dst, generation), daemon=True
                ).start()

    def _keep(self, sock: socket.socket) -> bool:
        """Remember ``sock`` for close(); False (and closed) when the proxy is closed already."""
        with self._lock:
            if not self._closed:
                self._sockets.append(sock)
                return True
        sock.close()
        return False

    def _pump(self, src: socket.socket, dst: socket.socket, generation: int) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if self._alive(generation):
                    dst.sendall(data)
                # else: swallowed; keep reading so the sender's kernel sees ACKs
            if self._alive(generation):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
        self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # a close alone does not wake a blocked recv
            sock.close()

    def __enter__(self) -> BlackholeProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
