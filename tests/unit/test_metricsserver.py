"""The metrics HTTP server in process: one thread whatever the clients, bounded, timed out."""

from __future__ import annotations

import errno
import gzip
import logging
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Counter, make_wsgi_app

from smtpauth_milter.daemon.metricsserver import MetricsServer, bind


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    registry = CollectorRegistry()
    Counter("probe", "A counter to find in the scrape.", registry=registry).inc()
    served = MetricsServer(bind("127.0.0.1", 0), make_wsgi_app(registry), max_clients=8)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.shutdown()
    served.close()
    thread.join(5)
    assert not thread.is_alive()


def _port(server: MetricsServer) -> int:
    port: int = server.listener.getsockname()[1]
    return port


def _scrape(port: int, headers: dict[str, str] | None = None) -> tuple[int, bytes, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=headers or {})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read(), response.headers.get("Content-Encoding", "")


def _closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
        return reply


def test_500_idle_clients_take_no_thread_and_a_scrape_still_answers(
    server: MetricsServer,
) -> None:
    port = _port(server)
    threads = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(500)]
    try:
        assert threading.active_count() == threads
        status, body, _ = _scrape(port)
        assert status == 200 and b"probe_total 1.0" in body
        # at most max_clients (8) stayed open: the oldest idle ones were closed
        still_open = [sock for sock in idle[-20:] if not _closed_by_peer(sock, 0.01)]
        assert len(still_open) <= 8
        assert threading.active_count() == threads
    finally:
        for sock in idle:
            sock.close()


def test_a_client_that_never_finishes_its_request_is_closed_at_the_deadline() -> None:
    registry = CollectorRegistry()
    served = MetricsServer(bind("127.0.0.1", 0), make_wsgi_app(registry), deadline=0.3)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", _port(served)), timeout=5) as slow:
            slow.sendall(b"GET /metrics HTTP/1.1\r\n")  # and never the blank line
            started = time.monotonic()
            assert _closed_by_peer(slow, 3.0)  # TICK (0.5 s) + deadline at most
            assert 0.25 < time.monotonic() - started < 2.5
    finally:
        served.shutdown()
        served.close()
        thread.join(5)


def test_prometheus_negotiation_is_kept(server: MetricsServer) -> None:
    status, body, encoding = _scrape(_port(server), {"Accept-Encoding": "gzip"})
    assert status == 200 and encoding == "gzip"
    assert b"probe_total 1.0" in gzip.decompress(body)
    reply = _raw(_port(server), b"GET /metrics?name[]=other HTTP/1.0\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and b"probe_total" not in reply


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"nonsense\r\n\r\n", b"400"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
        (b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000, b"431"),
    ],
)
def test_bad_requests_get_an_error_status(
    server: MetricsServer, request_bytes: bytes, status: bytes
) -> None:
    reply = _raw(_port(server), request_bytes)
    assert reply.startswith(b"HTTP/1.1 " + status + b" ")
    assert b"Connection: close\r\n" in reply


class _OutOfDescriptors(socket.socket):
    """A listener whose accept fails as when the process has no descriptor left."""

    accepts = 0

    def accept(self) -> tuple[socket.socket, object]:
        type(self).accepts += 1
        raise OSError(errno.EMFILE, "Too many open files")


def test_out_of_descriptors_pauses_accepting_instead_of_spinning() -> None:
    listener = _OutOfDescriptors(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    served = MetricsServer(listener, make_wsgi_app(CollectorRegistry()))
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=5):  # stays pending
            deadline = time.monotonic() + 5
            while _OutOfDescriptors.accepts == 0:
                assert time.monotonic() < deadline, "never tried to accept"
                time.sleep(0.01)
            time.sleep(1.2)  # the pause is what is measured: a busy loop tries thousands
            assert 1 <= _OutOfDescriptors.accepts <= 4  # about once per 0.5 s tick
    finally:
        served.shutdown()
        served.close()
        thread.join(5)


def test_an_app_that_fails_is_one_log_line_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = []

    def app(environ: dict[str, object], start_response: object) -> list[bytes]:
        calls.append(environ["PATH_INFO"])
        if len(calls) == 1:
            raise RuntimeError("collector\nbroke")
        return make_wsgi_app(CollectorRegistry())(environ, start_response)  # type: ignore[no-any-return]

    served = MetricsServer(bind("127.0.0.1", 0), app)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    try:
        with caplog.at_level(logging.ERROR, logger="smtpauth_milter"):
            reply = _raw(_port(served), b"GET /metrics HTTP/1.1\r\n\r\n")
            assert reply.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
            status, _, _ = _scrape(_port(served))
        assert status == 200
        lines = [r.getMessage() for r in caplog.records]
        assert lines == ["event=metrics-error error=\"RuntimeError('collector\\\\nbroke')\""]
        assert all(r.exc_info is None for r in caplog.records)
    finally:
        served.shutdown()
        served.close()
        thread.join(5)
