"""Milter sockets from the MTA's side: addresses, connecting, reading packets in time."""

from __future__ import annotations

import socket
import subprocess
import time

from smtpauth_milter.admin.milterproto.codec import split_packet
from smtpauth_milter.admin.milterproto.wire import MAX_PACKET

RECV_SIZE = 65536


def parse_socket_spec(spec: str) -> tuple[str, str | tuple[str, int]]:
    """``inet:PORT@HOST``, ``inet6:PORT@HOST``, ``unix:/path``, a path or ``HOST:PORT``
    -> ``("unix", path)`` or ``("inet", (host, port))``."""
    if spec.startswith(("unix:", "local:")):
        return "unix", spec.split(":", 1)[1]
    if spec.startswith("/"):
        return "unix", spec
    for prefix in ("inet:", "inet6:"):
        if spec.startswith(prefix):
            port, _, host = spec[len(prefix) :].partition("@")
            if not port.isdigit():
                raise ValueError(f"bad milter socket spec: {spec!r}")
            return "inet", (host.strip("[]") or "127.0.0.1", int(port))
    host, _, port = spec.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"bad milter socket spec: {spec!r}")
    return "inet", (host.strip("[]"), int(port))


def open_socket(socket_spec: str, timeout: float) -> socket.socket:
    """A connected socket to the milter at ``socket_spec`` (see ``parse_socket_spec``)."""
    _kind, address = parse_socket_spec(socket_spec)
    if not isinstance(address, str):
        inet = socket.create_connection(address, timeout=timeout)
        # Small request/reply packets: without this every step waits on a delayed ACK.
        inet.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return inet
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


class PacketReader:
    """Whole packets from a socket; bytes after a packet are kept for the next one."""

    def __init__(self, sock: socket.socket, limit: int = MAX_PACKET) -> None:
        self.sock = sock
        self.limit = limit
        self._buffer = b""

    def read(self, timeout: float) -> tuple[bytes, bytes]:
        """``(command, data)`` of the next packet, within ``timeout`` seconds in all.

        Raises TimeoutError after the deadline, ConnectionError at end of
        stream, MilterProtocolError for a length of 0 or above ``limit``.
        """
        deadline = time.monotonic() + timeout
        previous = self.sock.gettimeout()
        try:
            while (packet := split_packet(self._buffer, self.limit)) is None:
                self._buffer += self._receive(deadline, timeout)
        finally:
            self.sock.settimeout(previous)
        command, data, self._buffer = packet
        return command, data

    def _receive(self, deadline: float, timeout: float) -> bytes:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            chunk = self.sock.recv(RECV_SIZE)
        except TimeoutError as exc:
            raise TimeoutError(f"no whole packet within {timeout}s") from exc
        if not chunk:
            raise ConnectionError("the milter closed the connection")
        return chunk


def wait_for_milter(
    socket_spec: str, timeout: float = 10.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll until something accepts connections on ``socket_spec``.

    Only connects and closes (no OPTNEG), so the milter runs no callback.
    Fails early if ``process`` (the milter being started) has exited.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"milter exited with status {process.returncode} before listening")
        try:
            open_socket(socket_spec, timeout=1.0).close()
            return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {socket_spec} after {timeout}s") from exc
        time.sleep(0.02)


def free_tcp_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (callers must handle a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
