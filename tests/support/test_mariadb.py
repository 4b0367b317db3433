"""Tests of the throwaway MariaDB server (tests/harness/mariadb.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pymysql
import pytest

from tests.harness.mariadb import MariaDbServer

pytestmark = pytest.mark.mariadb


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MariaDbServer]:
    with MariaDbServer(tmp_path_factory.mktemp("mariadb")) as started:
        yield started


def _tcp(server: MariaDbServer, user: str, password: str) -> pymysql.Connection[object]:
    return pymysql.connect(host="127.0.0.1", port=server.port, user=user, password=password,
                           database="shop", charset="utf8mb4", connect_timeout=5)  # fmt: skip


def test_a_read_only_user_reads_exact_utf8_over_tcp(server: MariaDbServer) -> None:
    assert server.started_in is not None and server.port is not None
    server.create_database("shop")
    server.create_user("reader", "s3cr'et", reads="shop")
    with server.connect("shop") as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE owner (address varchar(255) PRIMARY KEY)")
        cur.execute("INSERT INTO owner VALUES (%s), (%s), (%s)", ("zoë@x", "zoe@x", "Zoe@x"))
    with _tcp(server, "reader", "s3cr'et") as conn, conn.cursor() as cur:
        cur.execute("SELECT address FROM owner WHERE address = %s", ("zoë@x",))
        assert cur.fetchall() == (("zoë@x",),)  # no accent or case folding (utf8mb4_bin)
        with pytest.raises(pymysql.err.OperationalError, match="denied"):
            cur.execute("DELETE FROM owner")
    with pytest.raises(pymysql.err.OperationalError, match="Access denied"):
        _tcp(server, "reader", "wrong")


def test_close_stops_the_server_and_removes_its_files(tmp_path: Path) -> None:
    server = MariaDbServer(tmp_path)
    server.start()
    pid = int((server.root_dir / "mysqld.pid").read_text())
    root = server.root_dir
    assert server.socket.is_socket()
    server.close()
    assert not root.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
