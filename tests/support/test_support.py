"""Tests of the test support: the throwaway PostgreSQL and the milter client."""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from smtpauth_milter.admin.milterproto.codec import MilterProtocolError, encode_connect
from smtpauth_milter.admin.milterproto.wire import SMFIC_CONNECT, SMFIR_REPLYCODE
from tests.harness.milter import SOCKET, MilterProcess, MilterProcesses
from tests.harness.pgserver import SCRAM_ITERATIONS, PgServer
from tests.support.milterclient import MilterClient, Reply, session, verdict_reply

NOOP_MILTER = Path(__file__).with_name("noop_milter.py")
TIMEOUT = 10.0


# -- fixtures --------------------------------------------------------------------


@pytest.fixture
def pg_db(pg_server: PgServer) -> Iterator[str]:
    """A database on the session's server (tests/conftest.py); a test that stops the
    server starts it again before the next test uses it."""
    name = pg_server.new_database_name()
    pg_server.create_database(name)
    yield name
    if not pg_server.running:
        pg_server.start()
    pg_server.drop_database(name)


@pytest.fixture
def milter_factory(tmp_path: Path) -> Iterator[_MilterFactory]:
    factory = _MilterFactory(tmp_path)
    yield factory
    factory.stop_all()


class _MilterFactory:
    """noop_milter.py processes (the one harness); stopped with SIGKILL: they keep no state."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.milters = MilterProcesses(tmp_path)
        self.record = tmp_path / "record.jsonl"
        self.socket_dirs: list[Path] = []

    def inet(self, *options: str) -> str:
        return self._start(None, options)

    def unix(self, *options: str) -> str:
        # sun_path is short; pytest's tmp_path can be too long for it.
        directory = Path(tempfile.mkdtemp(prefix="milter-"))
        self.socket_dirs.append(directory)
        return self._start(f"unix:{directory}/m.sock", options)

    def records(self, until: str = "close") -> list[dict[str, object]]:
        """Recorded callbacks, once the event ``until`` shows up (milters run async)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            lines = self.record.read_text().splitlines() if self.record.exists() else []
            records = [json.loads(line) for line in lines]
            if any(r["event"] == until for r in records) or time.monotonic() > deadline:
                return records
            time.sleep(0.01)

    def _start(self, spec: str | None, options: tuple[str, ...]) -> str:
        argv = [sys.executable, str(NOOP_MILTER), SOCKET, *options, "--record", str(self.record)]
        milter = MilterProcess(argv, self.milters.log_path(), spec, graceful_stop=False)
        return self.milters.add(milter).start(TIMEOUT).socket

    def stop_all(self) -> None:
        self.milters.stop_all()
        for directory in self.socket_dirs:
            shutil.rmtree(directory, ignore_errors=True)


# -- PgServer ----------------------------------------------------------------------


@pytest.mark.postgres
def test_pg_database_reachable_with_psycopg_and_sqlalchemy(pg_server: PgServer, pg_db: str) -> None:
    with psycopg.connect(pg_server.dsn(pg_db)) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (pg_db,)
    engine = sa.create_engine(pg_server.url(pg_db))
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT current_database()")).scalar_one() == pg_db
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_pg_url_carries_a_quoted_password(pg_server: PgServer, pg_db: str) -> None:
    assert len(pg_server.password) >= 20
    url = sa.make_url(pg_server.url(pg_db))
    assert (url.password, url.host, url.port, url.database) == (
        pg_server.password,
        "127.0.0.1",
        pg_server.port,
        pg_db,
    )
    tricky = "p@ss:w/rd%25 #?&ü"
    pg_server.create_user("tricky_user", tricky, owns=pg_db)
    engine = sa.create_engine(pg_server.url(pg_db, user="tricky_user", password=tricky))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x int)"))
            assert conn.execute(sa.text("SELECT current_user")).scalar_one() == "tricky_user"
    finally:
        engine.dispose()
        pg_server.drop_database(pg_db)
        pg_server.drop_user("tricky_user")


@pytest.mark.postgres
def test_pg_wrong_password_is_refused(pg_server: PgServer, pg_db: str) -> None:
    engine = sa.create_engine(pg_server.url(pg_db, password="wrong"))
    try:
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            engine.connect()
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_pg_roles_have_cheap_scram_secrets_that_still_check_the_password(
    pg_server: PgServer, pg_db: str
) -> None:
    pg_server.create_user("cheap_user", "right-pw", owns=pg_db)
    try:
        with pg_server.connect() as admin:
            secrets = dict(
                admin.execute(
                    "SELECT rolname, rolpassword FROM pg_authid WHERE rolname IN (%s, %s)",
                    (pg_server.user, "cheap_user"),
                ).fetchall()
            )
        assert len(secrets) == 2
        for secret in secrets.values():
            assert str(secret).startswith(f"SCRAM-SHA-256${SCRAM_ITERATIONS}:"), secret
        right = sa.create_engine(pg_server.url(pg_db, user="cheap_user", password="right-pw"))
        wrong = sa.create_engine(pg_server.url(pg_db, user="cheap_user", password="right-pX"))
        try:
            with right.connect() as conn:
                assert conn.execute(sa.text("SELECT current_user")).scalar_one() == "cheap_user"
            with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
                wrong.connect()
        finally:
            right.dispose()
            wrong.dispose()
    finally:
        pg_server.drop_database(pg_db)
        pg_server.drop_user("cheap_user")


@pytest.mark.postgres
def test_pg_stop_makes_connections_fail_and_start_restores(pg_server: PgServer, pg_db: str) -> None:
    port = pg_server.port
    engine = sa.create_engine(pg_server.url(pg_db))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE kept (x int)"))
            conn.execute(sa.text("INSERT INTO kept VALUES (42)"))
        pg_server.stop()
        assert not pg_server.running
        with pytest.raises(sa.exc.OperationalError), engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        pg_server.start()
        assert pg_server.port == port
        engine.dispose()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT x FROM kept")).scalar_one() == 42
    finally:
        engine.dispose()
        pg_server.start()


@pytest.mark.postgres
def test_pg_close_removes_everything(tmp_path: Path) -> None:
    server = PgServer(tmp_path)
    server.start()
    root, port = server.root_dir, server.port
    assert (root / "data" / "postmaster.pid").exists()
    server.close()
    assert not root.exists()
    assert port is not None
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0


# -- MilterClient: replies (the encoding is tested in tests/unit/test_milterproto.py) -------


@pytest.mark.parametrize(
    ("payload", "code", "xcode", "text"),
    [
        (b"550 5.7.1 no\0", 550, "5.7.1", "no"),
        (b"530 5.7.0 Authentication required\0", 530, "5.7.0", "Authentication required"),
        (b"451 try later\0", 451, None, "try later"),
        (b"550-5.7.1 first\r\n550 5.7.1 second\0", 550, "5.7.1", "first\nsecond"),
    ],
)
def test_replycode_verdict(payload: bytes, code: int, xcode: str | None, text: str) -> None:
    reply = verdict_reply(SMFIR_REPLYCODE, payload)
    assert (reply.kind, reply.code, reply.xcode, reply.text) == ("replycode", code, xcode, text)
    assert reply.message == payload.rstrip(b"\0").decode()
    assert reply.action == ("reject" if code >= 500 else "tempfail")


def test_plain_verdicts_and_unknown_replies() -> None:
    assert verdict_reply(b"c", b"") == Reply("continue")
    assert verdict_reply(b"t", b"").action == "tempfail"
    with pytest.raises(MilterProtocolError, match="unexpected reply"):
        verdict_reply(b"Z", b"")


# -- MilterClient against real pymilter milters -----------------------------------------


def test_noop_milter_whole_session_continues(milter_factory: _MilterFactory) -> None:
    spec = milter_factory.inet()
    result = session(
        spec,
        sender="alice@example.com",
        rcpts=["bob@example.net", "carol@example.org"],
        login="alice",
        message=[("Subject", "hi")],
        body=b"hello\r\n",
        timeout=TIMEOUT,
    )
    assert result.negotiated.version == 6
    assert result.negotiated.skipped_steps == {"header", "eoh", "body", "unknown"}
    steps = [result.connect, result.helo, result.mail, *result.rcpts, result.data, result.eom]
    assert [r.kind if r else None for r in steps] == ["continue"] * 7
    events = [r["event"] for r in milter_factory.records()]
    assert events == [
        "negotiate",
        "connect",
        "helo",
        "mail",
        "rcpt",
        "rcpt",
        "data",
        "eom",
        "close",
    ]


def test_step_by_step_over_unix_socket(milter_factory: _MilterFactory) -> None:
    spec = milter_factory.unix()
    with MilterClient(spec, TIMEOUT) as client:
        client.negotiate()
        assert client.connect("h.test", "4", 40000, "192.0.2.7", {"j": "mx"}).kind == "continue"
        assert client.helo("h.test").kind == "continue"
        assert client.mail("<a@example.com>", ["SIZE=100"], {"i": "Q1"}).kind == "continue"
        assert client.rcpt("<b@example.net>").kind == "continue"
        assert client.data().kind == "continue"
        assert client.header("Subject", "x") == Reply("skipped")
        assert client.eoh() == Reply("skipped")
        assert client.body(b"text\r\n") == Reply("skipped")
        assert client.eom().kind == "continue"
        client.quit()
        assert client.at_eof(TIMEOUT)
    mail = next(r for r in milter_factory.records() if r["event"] == "mail")
    assert mail["sender"] == "<a@example.com>"
    assert mail["args"] == ["SIZE=100"]
    connect = next(r for r in milter_factory.records() if r["event"] == "connect")
    assert connect["hostaddr"] == "('192.0.2.7', 40000)"


def test_rejected_recipient_gets_parsed_replycode(milter_factory: _MilterFactory) -> None:
    spec = milter_factory.inet("--reject-rcpt", "bad@example.net")
    result = session(
        spec,
        sender="alice@example.com",
        rcpts=["ok@example.net", "bad@example.net", "ok2@example.net"],
        timeout=TIMEOUT,
    )
    ok, bad, ok2 = result.rcpts
    assert ok.kind == ok2.kind == "continue"
    assert (bad.kind, bad.code, bad.xcode, bad.text) == ("replycode", 550, "5.7.1", "no")
    assert bad.message == "550 5.7.1 no"
    assert bad.action == "reject"


def test_only_requested_macros_are_sent(milter_factory: _MilterFactory) -> None:
    spec = milter_factory.inet(
        "--symlist",
        "mail={auth_authen} i",
        "--record-macros",
        "i {auth_authen} {auth_type} {mail_mailer}",
    )
    result = session(
        spec,
        sender="alice@example.com",
        rcpts=["b@x.test"],
        login="alice",
        queue_id="QID1",
        timeout=TIMEOUT,
    )
    assert result.negotiated.macros_for("mail") == ("{auth_authen}", "i")
    mail = next(r for r in milter_factory.records() if r["event"] == "mail")
    assert mail["macros"] == {"i": "QID1", "{auth_authen}": "alice"}


def test_all_macros_sent_when_filtering_is_off(milter_factory: _MilterFactory) -> None:
    spec = milter_factory.inet("--symlist", "mail=i", "--record-macros", "i {auth_authen}")
    session(
        spec,
        sender="a@x.test",
        rcpts=["b@x.test"],
        login="alice",
        queue_id="Q2",
        timeout=TIMEOUT,
        send_only_requested_macros=False,
    )
    mail = next(r for r in milter_factory.records() if r["event"] == "mail")
    assert mail["macros"] == {"i": "Q2", "{auth_authen}": "alice"}


def test_skip_and_noreply_flags_are_honoured(milter_factory: _MilterFactory) -> None:
    spec = milter_factory.inet("--skip", "helo", "--no-reply", "rcpt")
    with MilterClient(spec, TIMEOUT) as client:
        negotiated = client.negotiate()
        assert "helo" in negotiated.skipped_steps
        assert negotiated.noreply_steps == {"rcpt"}
        result = client.run_session(sender="a@x.test", rcpts=["b@x.test", "c@x.test"])
    assert result.helo == Reply("skipped")
    assert [r.kind for r in result.rcpts] == ["noreply", "noreply"]
    events = [r["event"] for r in milter_factory.records()]
    assert "helo" not in events
    assert events.count("rcpt") == 2


def test_raw_garbage_closes_only_that_connection(milter_factory: _MilterFactory) -> None:
    spec = milter_factory.inet()
    with MilterClient(spec, TIMEOUT) as client:
        client.negotiate()
        client.send_raw(b"Z", b"\xff" * 10)
        assert client.at_eof(TIMEOUT)
    with MilterClient(spec, TIMEOUT) as client:
        client.negotiate()
        client.send_raw(SMFIC_CONNECT, encode_connect("h", "4", 1, "192.0.2.1"))
        assert client.read_reply().kind == "continue"
