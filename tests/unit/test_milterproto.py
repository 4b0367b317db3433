"""The milter-protocol codec: packet framing, payloads, sockets, doctor's probe."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from smtpauth_milter.admin import probe
from smtpauth_milter.admin.milterproto import codec, wire
from smtpauth_milter.admin.milterproto.transport import (
    PacketReader,
    free_tcp_port,
    open_socket,
    parse_socket_spec,
    wait_for_milter,
)

# -- framing --------------------------------------------------------------------------


def test_packet_framing() -> None:
    assert codec.encode_packet(b"O", b"abc") == b"\x00\x00\x00\x04Oabc"
    assert codec.encode_packet(b"Q") == b"\x00\x00\x00\x01Q"
    with pytest.raises(ValueError, match="exactly one byte"):
        codec.encode_packet(b"OO")


@pytest.mark.parametrize("data", [b"", b"x", b"\0" * 300, bytes(range(256)) * 300])
def test_packet_round_trip_keeps_what_follows(data: bytes) -> None:
    packet = codec.encode_packet(b"D", data)
    assert codec.split_packet(packet + b"\x00\x00") == (b"D", data, b"\x00\x00")


def test_truncated_packets_are_incomplete_not_wrong() -> None:
    packet = codec.encode_packet(b"M", b"<a@b>\0")
    for cut in range(len(packet)):
        assert codec.split_packet(packet[:cut]) is None
    assert codec.split_packet(packet) == (b"M", b"<a@b>\0", b"")


@pytest.mark.parametrize("length", [0, wire.MAX_PACKET + 1, 0xFFFFFFFF])
def test_bad_lengths_are_refused_before_reading_the_body(length: int) -> None:
    header = struct.pack("!I", length)
    with pytest.raises(codec.MilterProtocolError, match=f"bad packet length {length}"):
        codec.split_packet(header)
    with pytest.raises(codec.MilterProtocolError):
        codec.decode_length(header)


def test_the_length_limit_is_the_callers() -> None:
    header = struct.pack("!I", 101)
    assert codec.decode_length(header, limit=101) == 101
    with pytest.raises(codec.MilterProtocolError, match="bad packet length 101"):
        codec.decode_length(header, limit=100)
    with pytest.raises(codec.MilterProtocolError, match="header is 4 bytes, not 3"):
        codec.decode_length(header[:3])


# -- payloads ----------------------------------------------------------------------------


def test_connect_data_layout() -> None:
    assert codec.encode_connect("h.test", wire.SMFIA_INET, 25, "192.0.2.1") == (
        b"h.test\0" + b"4" + struct.pack("!H", 25) + b"192.0.2.1\0"
    )
    assert codec.encode_connect("h.test", wire.SMFIA_UNKNOWN, None, None) == b"h.test\0U"
    with pytest.raises(ValueError, match="unknown address family"):
        codec.encode_connect("h.test", "X", 25, "192.0.2.1")


def test_mail_args_are_each_nul_terminated() -> None:
    args = codec.encode_args(["<a@b>", "SIZE=10", b"BODY=8BITMIME"])
    assert args == b"<a@b>\0SIZE=10\0BODY=8BITMIME\0"


def test_macro_packet_layout() -> None:
    data = codec.encode_macros(b"M", {"i": "Q1", "{auth_authen}": "alice"})
    assert data == b"Mi\0Q1\0{auth_authen}\0alice\0"


def test_optneg_round_trip_with_macro_lists() -> None:
    payload = codec.encode_optneg(6, 0x100, 0x70) + struct.pack("!I", wire.SMFIM_ENVFROM)
    payload += b"{auth_authen} i\0" + struct.pack("!I", wire.SMFIM_CONNECT) + b"{client_addr}\0"
    negotiated = codec.decode_optneg(payload)
    assert (negotiated.version, negotiated.actions, negotiated.protocol) == (6, 0x100, 0x70)
    assert negotiated.macros == {2: ("{auth_authen}", "i"), 0: ("{client_addr}",)}
    assert negotiated.macros_by_name == {
        "mail": ("{auth_authen}", "i"),
        "connect": ("{client_addr}",),
    }
    assert negotiated.macros_for("mail") == ("{auth_authen}", "i")
    assert negotiated.macros_for("rcpt") is None
    assert negotiated.skipped_steps == {"header", "eoh", "body"}
    assert negotiated.noreply_steps == frozenset()


def test_noreply_flags_are_per_step() -> None:
    protocol = wire.SMFIP_NR_RCPT | wire.SMFIP_NOHELO
    negotiated = codec.decode_optneg(codec.encode_optneg(6, 0, protocol))
    assert negotiated.noreply_steps == {"rcpt"}
    assert negotiated.skipped_steps == {"helo"}
    assert negotiated.macros == {}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\0\0\0\x06\0\0", "short OPTNEG reply"),
        (codec.encode_optneg(6, 0, 0) + b"\0\0", "truncated macro list"),
        (codec.encode_optneg(6, 0, 0) + struct.pack("!I", 2) + b"i", "macro list without NUL"),
    ],
)
def test_broken_optneg_answers_are_protocol_errors(payload: bytes, message: str) -> None:
    with pytest.raises(codec.MilterProtocolError, match=message):
        codec.decode_optneg(payload)


def test_filter_macros_ignores_braces() -> None:
    given = {"{auth_authen}": "alice", "i": "Q1", "{mail_mailer}": "smtp"}
    wanted = codec.filter_macros(given, ["auth_authen", "{i}"])
    assert wanted == {"{auth_authen}": "alice", "i": "Q1"}
    assert codec.filter_macros(given, None) == given


@pytest.mark.parametrize(
    ("payload", "code", "xcode", "text"),
    [
        (b"550 5.7.1 no\0", 550, "5.7.1", "no"),
        (b"530 5.7.0 Authentication required\0", 530, "5.7.0", "Authentication required"),
        (b"451 try later\0", 451, None, "try later"),
        (b"550-5.7.1 first\r\n550 5.7.1 second\0", 550, "5.7.1", "first\nsecond"),
    ],
)
def test_parse_replycode(payload: bytes, code: int, xcode: str | None, text: str) -> None:
    parsed = codec.parse_replycode(payload)
    assert (parsed.code, parsed.xcode, parsed.text) == (code, xcode, text)
    assert parsed.message == codec.reply_text(payload) == payload[:-1].decode()


def test_a_reply_without_a_code_is_a_protocol_error() -> None:
    with pytest.raises(codec.MilterProtocolError, match="bad reply code string"):
        codec.parse_replycode(b"hello\0")


# -- sockets --------------------------------------------------------------------------------


def test_socket_specs() -> None:
    assert parse_socket_spec("inet:8891@127.0.0.1") == ("inet", ("127.0.0.1", 8891))
    assert parse_socket_spec("inet:8891") == ("inet", ("127.0.0.1", 8891))
    assert parse_socket_spec("inet6:8891@[::1]") == ("inet", ("::1", 8891))
    assert parse_socket_spec("127.0.0.1:8891") == ("inet", ("127.0.0.1", 8891))
    assert parse_socket_spec("unix:/run/m.sock") == ("unix", "/run/m.sock")
    assert parse_socket_spec("local:/run/m.sock") == ("unix", "/run/m.sock")
    assert parse_socket_spec("/run/m.sock") == ("unix", "/run/m.sock")
    for bad in ("inet:x@127.0.0.1", "nonsense", "host:port"):
        with pytest.raises(ValueError, match="bad milter socket spec"):
            parse_socket_spec(bad)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    ours.settimeout(5.0)
    yield ours, theirs
    ours.close()
    theirs.close()


def test_reader_joins_split_packets_and_keeps_the_next(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    first, second = codec.encode_packet(b"c"), codec.encode_packet(b"y", b"550 5.7.1 no\0")
    reader = PacketReader(ours)
    theirs.sendall(first[:2])
    sender = threading.Timer(0.05, theirs.sendall, [first[2:] + second])
    sender.start()
    assert reader.read(5.0) == (b"c", b"")
    assert reader.read(5.0) == (b"y", b"550 5.7.1 no\0")
    sender.join()
    assert ours.gettimeout() == 5.0  # the reader's deadline does not stick to the socket


def test_reader_deadline_covers_a_trickling_peer(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    packet = codec.encode_packet(b"c", b"x" * 100)  # 5 s of trickling
    stop = threading.Event()

    def trickle() -> None:  # one byte every 50 ms: each recv succeeds, the packet never ends
        for byte in packet[:-1]:
            if stop.wait(0.05):
                return
            theirs.sendall(bytes([byte]))

    thread = threading.Thread(target=trickle)
    thread.start()
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError, match=r"no whole packet within 0\.3s"):
            PacketReader(ours).read(0.3)
    finally:
        stop.set()
        thread.join()
    assert 0.25 <= time.monotonic() - started < 3.0


def test_reader_end_of_stream_and_oversized_length(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, theirs = pair
    theirs.sendall(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(codec.MilterProtocolError, match="bad packet length"):
        PacketReader(ours, limit=65536).read(5.0)
    fresh, peer = socket.socketpair()
    with fresh, peer:
        peer.sendall(codec.encode_packet(b"c")[:3])
        peer.close()
        with pytest.raises(ConnectionError, match="closed the connection"):
            PacketReader(fresh).read(5.0)


def test_free_port_can_be_listened_on_and_wait_for_milter_sees_it() -> None:
    port = free_tcp_port()
    with socket.create_server(("127.0.0.1", port)) as server:
        wait_for_milter(f"inet:{port}@127.0.0.1", timeout=5.0)
        with open_socket(f"inet:{port}@127.0.0.1", 5.0) as client:
            assert client.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        server.accept()[0].close()


def test_wait_for_milter_gives_up_at_its_deadline() -> None:
    port = free_tcp_port()
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"nothing listening on inet:{port}@127.0.0.1"):
        wait_for_milter(f"inet:{port}@127.0.0.1", timeout=0.3)
    assert time.monotonic() - started < 5.0


def test_wait_for_milter_notices_a_dead_process() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait(10)
    with pytest.raises(RuntimeError, match="exited with status 3 before listening"):
        wait_for_milter(f"inet:{free_tcp_port()}@127.0.0.1", timeout=10.0, process=process)


# -- doctor's probe against peers that are not milters ---------------------------------------


def _serve_once(answer: bytes) -> tuple[str, threading.Thread]:
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:
        with server, server.accept()[0] as conn:
            conn.recv(64)
            conn.sendall(answer)

    thread = threading.Thread(target=serve)
    thread.start()
    return f"inet:{port}@127.0.0.1", thread


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "does not answer like a milter: bad packet length"),
        (codec.encode_packet(b"c"), "answered b'c' instead of option negotiation"),
        (codec.encode_packet(b"O", b"\0\0\0\x06"), "short OPTNEG reply"),
        (b"", "cannot talk to inet:"),
    ],
)
def test_probe_names_what_went_wrong(answer: bytes, message: str) -> None:
    spec, thread = _serve_once(answer)
    try:
        with pytest.raises(probe.ProbeError, match=message):
            probe.negotiate(spec, timeout=5.0)
    finally:
        thread.join(10)


def test_probe_reads_a_real_answer() -> None:
    answer = codec.encode_optneg(6, wire.SMFIF_SETSYMLIST, wire.SMFIP_NOHELO)
    answer += struct.pack("!I", wire.SMFIM_ENVFROM) + b"{auth_authen}\0"
    spec, thread = _serve_once(codec.encode_packet(wire.SMFIC_OPTNEG, answer))
    try:
        negotiated = probe.negotiate(spec, timeout=5.0)
    finally:
        thread.join(10)
    assert negotiated.version == 6
    assert negotiated.skipped_steps == {"helo"}
    assert negotiated.macros_for("mail") == ("{auth_authen}",)
