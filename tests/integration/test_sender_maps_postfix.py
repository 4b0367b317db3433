"""sender-login-maps through a real Postfix + Dovecot SASL, our real milter, real postmap and PostgreSQL.

The milter's postmap reads the sandbox's Postfix configuration (postfix-config-dir:
nothing in the milter's environment points there), so it reads the tables exactly
as that Postfix would.  Each case checks the reply
swaks got and the milter's decision line.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from smtpauth_milter.lookups.runner import DEADLINE_MARGIN
from tests.harness.logfile import LogFile
from tests.harness.mta import Sandbox
from tests.harness.pgserver import PgServer
from tests.harness.waiting import wait_until
from tests.store.test_sqlmap_faults import backends
from tests.support.blackhole import BlackholeProxy

from .milter_fixture import OurMilter, StoreCli, decision_for, field_of

pytestmark = pytest.mark.mta

TEMPFAIL = "451 4.3.0 Temporary policy failure, try again later"
MISMATCH = "553 5.7.1 Sender address rejected: not owned by authenticated user"
REMOTE = "x@remote.test"


@pytest.fixture(scope="module")
def milter(tmp_path_factory: pytest.TempPathFactory, mta_sandbox: Sandbox) -> Iterator[OurMilter]:
    root = tmp_path_factory.mktemp("maps")
    store = StoreCli(root / "store.sqlite")
    store.run("domain", "add", "example.com", "example.net")
    store.run("settings", "set", "require-sender-match", "on")
    store.run("settings", "set", "postfix-config-dir", str(mta_sandbox.postfix.config_dir))
    store.save_baseline()
    ours = OurMilter(
        store, mta_sandbox.inet_milter_socket(), LogFile(mta_sandbox.root / "maps.log")
    )
    assert "MAIL_CONFIG" not in os.environ
    ours.start()
    mta_sandbox.postfix.use_milter(ours.socket)
    try:
        yield ours
    finally:
        mta_sandbox.postfix.use_milter(None)
        ours.stop()


def send(sandbox: Sandbox, milter: OurMilter, user: str, mail_from: str) -> tuple[str, str]:
    """One session; the reply to RCPT TO (code and text) and the milter's decision line."""
    since = milter.log.mark()
    result = sandbox.smtp(mail_from, [REMOTE], user=user)
    reply = result.rcpt(REMOTE)
    return f"{reply.code} {reply.text}", decision_for(milter.log, REMOTE, since)


def test_texthash_map_owner_sends_other_login_is_refused(
    mta_sandbox: Sandbox, milter: OurMilter, tmp_path: Path
) -> None:
    table = tmp_path / "owners"
    table.write_text("sales@example.com  alice@example.com\n@example.net bob@example.com\n")
    milter.sync([("settings", "set", "sender-login-maps", f"texthash:{table}")])
    reply, line = send(mta_sandbox, milter, "alice@example.com", "sales+q@example.com")
    assert reply.startswith("250"), line
    assert field_of(line, "rule") == "sender-owned"
    assert field_of(line, "owned_by") == f"texthash:{table}"
    assert field_of(line, "owner_key") == "sales@example.com"
    reply, line = send(mta_sandbox, milter, "bob@example.com", "sales@example.com")
    assert reply == MISMATCH and field_of(line, "rule") == "sender-mismatch"
    reply, line = send(mta_sandbox, milter, "bob@example.com", "anyone@example.net")
    assert reply.startswith("250") and field_of(line, "owner_key") == "@example.net"


def test_map_down_tempfails_and_recovers_without_restart(
    mta_sandbox: Sandbox, milter: OurMilter, tmp_path: Path
) -> None:
    table = tmp_path / "owners"
    table.write_text("sales@example.com alice@example.com\n")
    milter.sync([("settings", "set", "sender-login-maps", f"texthash:{table}")])
    hidden = table.with_name("owners.away")
    table.rename(hidden)  # postmap: fatal: open database
    since = milter.log.mark()
    for _ in range(2):
        reply, line = send(mta_sandbox, milter, "alice@example.com", "sales@example.com")
        assert reply == TEMPFAIL
        assert (field_of(line, "action"), field_of(line, "rule")) == (
            "tempfail",
            "sender-map-failed",
        )
    assert len(milter.log.find(r"event=map-unreadable", since)) == 1  # once per interval
    hidden.rename(table)
    reply, line = send(mta_sandbox, milter, "alice@example.com", "sales@example.com")
    assert reply.startswith("250"), line
    milter.log.wait_for(r"event=map-recovered", since, 5)
    # the own login still sends while a map is down: the maps are not even asked
    table.rename(hidden)
    reply, _ = send(mta_sandbox, milter, "alice@example.com", "alice@example.com")
    assert reply.startswith("250")
    hidden.rename(table)


def test_changes_in_the_map_take_effect_within_the_ttl(
    mta_sandbox: Sandbox, milter: OurMilter, tmp_path: Path
) -> None:
    table = tmp_path / "owners"
    table.write_text("sales@example.com alice@example.com\n")
    milter.sync(
        [
            ("settings", "set", "sender-login-maps", f"texthash:{table}"),
            ("settings", "set", "sender-login-maps-ttl", "1"),
        ]
    )
    assert send(mta_sandbox, milter, "alice@example.com", "sales@example.com")[0].startswith("250")
    assert send(mta_sandbox, milter, "bob@example.com", "new@example.com")[0] == MISMATCH
    table.write_text("new@example.com bob@example.com\n")  # sales removed, new added

    def changed() -> bool:
        return (
            send(mta_sandbox, milter, "bob@example.com", "new@example.com")[0].startswith("250")
            and send(mta_sandbox, milter, "alice@example.com", "sales@example.com")[0] == MISMATCH
        )

    wait_until(changed, 15, "the map's changes to be honoured after the 1 s TTL")


def test_sql_map_on_postgresql_hung_server_tempfails_then_recovers(
    mta_sandbox: Sandbox, milter: OurMilter, tmp_path: Path, pg_server: PgServer
) -> None:
    name = pg_server.new_database_name("maps")
    pg_server.create_database(name)
    engine = create_engine(pg_server.url(name))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alias (address text PRIMARY KEY, goto text NOT NULL)"))
        conn.execute(text("INSERT INTO alias VALUES ('sales@example.com', 'alice@example.com')"))
    engine.dispose()
    host, port = pg_server.host, int(pg_server.url(name).rsplit(":", 1)[1].split("/")[0])
    proxy = BlackholeProxy((host, port))
    try:
        url = pg_server.url(name).replace(f"{host}:{port}", f"127.0.0.1:{proxy.port}")
        config = tmp_path / "pfa.toml"
        config.write_text(
            f'url = "{url}"\nquery = "SELECT goto FROM alias WHERE address = :sender"\n'
        )
        config.chmod(0o600)
        milter.sync(
            [
                ("settings", "set", "sender-login-maps", f"sql:{config}"),
                ("settings", "set", "sender-login-maps-timeout", "1"),
            ]
        )
        assert url.split("@")[0].split(":")[-1] not in milter.store.run("settings", "show")
        assert send(mta_sandbox, milter, "alice@example.com", "sales@example.com")[0].startswith(
            "250"
        )
        assert send(mta_sandbox, milter, "bob@example.com", "sales@example.com")[0] == MISMATCH
        proxy.hole()
        began = time.monotonic()
        reply, line = send(mta_sandbox, milter, "alice@example.com", "other@example.com")
        took = time.monotonic() - began
        assert reply == TEMPFAIL and field_of(line, "rule") == "sender-map-failed"
        # sender-login-maps-timeout = 1 bounds the wait (the default 3 s would not pass)
        assert took < 1 + DEADLINE_MARGIN + 1.4, took
        proxy.heal()
        reply, line = send(mta_sandbox, milter, "alice@example.com", "sales+x@example.com")
        assert reply.startswith("250"), line
        assert pg_server.password not in milter.log.text()
    finally:
        proxy.close()
        pg_server.drop_database(name)


def test_sql_map_whose_backend_froze_answers_on_a_fresh_connection(
    mta_sandbox: Sandbox, milter: OurMilter, tmp_path: Path, pg_server: PgServer
) -> None:
    """SIGSTOP of the one PostgreSQL backend the milter's map pool holds: the kernel still
    acknowledges, nothing answers.  On main the pool's pre-ping waited for ever and every
    later message of that sender joined it and got 451; now each message is accepted
    within sender-login-maps-timeout, on a fresh connection."""
    name = pg_server.new_database_name("frozen")
    pg_server.create_database(name)
    with pg_server.connect(name) as conn:
        conn.execute("CREATE TABLE alias (address text PRIMARY KEY, goto text NOT NULL)")
        conn.execute("INSERT INTO alias VALUES ('sales@example.com', 'alice@example.com')")
    config = tmp_path / "frozen.toml"
    config.write_text(
        f'url = "{pg_server.url(name)}"\nquery = "SELECT goto FROM alias WHERE address = :sender"\n'
    )
    config.chmod(0o600)
    timeout = 2.0
    milter.sync(
        [
            ("settings", "set", "sender-login-maps", f"sql:{config}"),
            ("settings", "set", "sender-login-maps-timeout", f"{timeout:g}"),
            ("settings", "set", "sender-login-maps-ttl", "0"),  # every message asks the map
        ]
    )
    frozen = None
    try:
        assert send(mta_sandbox, milter, "alice@example.com", "sales@example.com")[0][:3] == "250"
        # the map's pool holds one connection (the load-time probe's own is closed)
        wait_until(lambda: len(backends(pg_server, name)) == 1, 10, "one map connection")
        [frozen] = backends(pg_server, name)
        os.kill(frozen, signal.SIGSTOP)
        send(mta_sandbox, milter, "alice@example.com", "sales@example.com")  # finds out
        for _ in range(5):  # more messages than the map has workers, one key
            began = time.monotonic()
            reply, line = send(mta_sandbox, milter, "alice@example.com", "sales@example.com")
            assert reply.startswith("250"), line
            assert time.monotonic() - began < timeout + 1.5  # the whole SMTP session
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        pg_server.drop_database(name)
    assert not milter.log.find(r"event=internal-error|Traceback")


def test_a_sql_map_url_the_driver_refuses_is_a_tempfail_with_its_reason_in_the_log(
    mta_sandbox: Sandbox, milter: OurMilter, tmp_path: Path
) -> None:
    """The map worked when it was set, then its file got a URL option the driver refuses
    (``?timeout=abc``): on main the milter tempfailed with no log line saying why."""
    db = tmp_path / "aliases.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE alias (address text, goto text)")
        conn.execute("INSERT INTO alias VALUES ('sales@example.com', 'alice@example.com')")
    conn.close()
    config = tmp_path / "aliases.toml"
    query = 'query = "SELECT goto FROM alias WHERE address = :sender"\n'
    config.write_text(f'url = "sqlite:///{db}"\n{query}')
    config.chmod(0o600)
    milter.sync(
        [
            ("settings", "set", "sender-login-maps", f"sql:{config}"),
            ("settings", "set", "sender-login-maps-ttl", "0"),
        ]
    )
    assert send(mta_sandbox, milter, "alice@example.com", "sales@example.com")[0][:3] == "250"
    since = milter.log.mark()
    config.write_text(f'url = "sqlite:///{db}?timeout=abc"\n{query}')
    for _ in range(2):
        reply, line = send(mta_sandbox, milter, "alice@example.com", "sales@example.com")
        assert reply == TEMPFAIL and field_of(line, "rule") == "sender-map-failed"
    [warning] = milter.log.find(r"event=map-unreadable", since)  # once a minute
    assert f"map=sql:{config}" in warning
    assert "could not convert string to float: 'abc'" in warning
    assert not milter.log.find(r"event=internal-error|Traceback", since)
