"""sql: ownership maps on a real PostgreSQL and on SQLite, with a PostfixAdmin-shaped schema.

Senders and logins built to attack SQL are decided correctly and change nothing:
the key is always a bound parameter.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from smtpauth_milter.core.addresses import Address, parse_path
from smtpauth_milter.core.ownermaps import MapOutcome, MapSpec
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.lookups.keys import Probe
from smtpauth_milter.lookups.ownership import Ownership, OwnershipMaps, Rules
from smtpauth_milter.lookups.postfix import MapError
from smtpauth_milter.lookups.runner import LookupRunner
from smtpauth_milter.lookups.sqlmap import SqlMap, read_config
from tests.conftest import CliRunner
from tests.harness.pgserver import PgServer

SCHEMA = [
    "CREATE TABLE mailbox (username varchar(255) PRIMARY KEY, domain varchar(255) NOT NULL, active boolean NOT NULL DEFAULT true)",
    "CREATE TABLE alias (address varchar(255) PRIMARY KEY, goto text NOT NULL, domain varchar(255) NOT NULL, active boolean NOT NULL DEFAULT true)",
    "CREATE TABLE alias_domain (alias_domain varchar(255) PRIMARY KEY, target_domain varchar(255) NOT NULL, active boolean NOT NULL DEFAULT true)",
    "INSERT INTO mailbox VALUES ('alice@example.com', 'example.com', true), ('bob@example.com', 'example.com', true), ('dead@example.com', 'example.com', false), ('o''brien@example.com', 'example.com', true)",
    "INSERT INTO alias VALUES ('sales@example.com', 'alice@example.com,bob@example.com', 'example.com', true), ('alice@example.com', 'alice@example.com', 'example.com', true)",
    "INSERT INTO alias_domain VALUES ('example.org', 'example.com', true)",
]
# PostfixAdmin: mailbox + alias + alias domains (docs/mail-system-data.md#postfixadmin)
QUERY = """
SELECT username FROM mailbox WHERE username = :sender AND active
UNION SELECT goto FROM alias WHERE address = :sender AND active
UNION SELECT m.username FROM mailbox m JOIN alias_domain ad ON m.username = :user || '@' || ad.target_domain
      WHERE ad.alias_domain = :domain AND m.active AND ad.active
UNION SELECT a.goto FROM alias a JOIN alias_domain ad ON a.address = :user || '@' || ad.target_domain
      WHERE ad.alias_domain = :domain AND a.active AND ad.active
"""
ALIAS_QUERY = "SELECT goto FROM alias WHERE address = :sender"
ATTACKS = [
    "' OR '1'='1",
    "x' OR 'a'='a",
    "%",
    "_",
    "\\",
    "a\\' OR 1=1 --",
    "x'; DROP TABLE mailbox; --",
    "a" * 10_000,
]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def mail_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'pfa.sqlite'}"
        schema = [s.replace("true", "1").replace("false", "0") for s in SCHEMA]
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        name = server.new_database_name("pfa")
        server.create_database(name)
        url, schema = server.url(name), SCHEMA
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in schema:
            conn.execute(text(statement))
    engine.dispose()
    yield url
    if request.param == "postgresql":
        server.drop_database(name)


def map_file(tmp_path: Path, url: str, query: str = QUERY, mode: int = 0o640) -> Path:
    path = tmp_path / "pfa.toml"
    path.write_text(f'url = "{url}"\nquery = """{query}"""\ntimeout = 3\n')
    path.chmod(mode)
    return path


def snapshot_of(url: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = [
            tuple(r)
            for t in ("mailbox", "alias", "alias_domain")
            for r in conn.execute(text(f"SELECT * FROM {t} ORDER BY 1"))
        ]
    engine.dispose()
    return rows


@pytest.fixture
def maps_for() -> Iterator[Callable[[Path], Ownership]]:
    made: list[Ownership] = []

    def make(path: Path) -> Ownership:
        made.append(
            Ownership(
                [SqlMap(MapSpec("sql", str(path)), 3)],
                Rules("+", frozenset()),
                60,
                3,
                runner=LookupRunner("t"),
            )
        )
        return made[-1]

    yield make
    for maps in made:
        maps.close()


def test_postfixadmin_ownership(
    mail_db: str, tmp_path: Path, maps_for: Callable[[Path], Ownership]
) -> None:
    maps = maps_for(map_file(tmp_path, mail_db))
    sales = maps.answer_now(Address("sales", "example.com"))
    assert (sales.key, sorted(sales.owners)) == (
        "sales@example.com",
        ["alice@example.com", "bob@example.com"],
    )
    assert maps.answer_now(Address("ALICE+tag", "Example.com")).owned_by("alice@example.com")
    assert maps.answer_now(Address("alice", "example.org")).owned_by(
        "alice@example.com"
    )  # alias domain
    assert maps.answer_now(Address("o'brien", "example.com")).owned_by("o'brien@example.com")
    assert maps.answer_now(Address("dead", "example.com")).outcome is MapOutcome.NOT_FOUND
    assert maps.answer(Address("sales", "example.com")).owned_by(
        "bob@example.com"
    )  # via the workers


def test_a_row_in_either_spelling_of_an_idn_domain_answers(
    mail_db: str, tmp_path: Path, maps_for: Callable[[Path], Ownership]
) -> None:
    engine = create_engine(mail_db)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO alias (address, goto, domain) VALUES (:a, :g, :d)"),
            [
                {"a": "info@bücher.example", "g": "alice@example.com", "d": "bücher.example"},
                {"a": "team@xn--bcher-kva.example", "g": "bob@example.com", "d": "bücher.example"},
            ],
        )
    engine.dispose()
    maps = maps_for(map_file(tmp_path, mail_db, ALIAS_QUERY))

    def ask(sender: str) -> tuple[str | None, tuple[str, ...]]:
        parsed = parse_path(sender)
        assert parsed is not None
        answer = maps.answer_now(parsed)
        return answer.key, answer.owners

    assert ask("<Info@Bücher.example>") == ("info@bücher.example", ("alice@example.com",))
    assert ask("<info+x@XN--BCHER-KVA.example>") == ("info@bücher.example", ("alice@example.com",))
    assert ask("<team@bücher.example>") == ("team@xn--bcher-kva.example", ("bob@example.com",))
    assert ask("<nobody@bücher.example>") == (None, ())


@pytest.mark.parametrize("attack", ATTACKS)
def test_hostile_senders_and_logins_are_decided_correctly_and_change_nothing(
    mail_db: str, tmp_path: Path, attack: str, maps_for: Callable[[Path], Ownership]
) -> None:
    before = snapshot_of(mail_db)
    maps = maps_for(map_file(tmp_path, mail_db))
    for sender in (Address(attack, "example.com"), Address("sales", "example.com")):
        answer = maps.answer_now(sender)
        assert answer.outcome is not MapOutcome.FAILED, answer.error
        assert not answer.owned_by(attack)  # a hostile login owns nothing
        if sender.local == attack:
            assert answer.outcome is MapOutcome.NOT_FOUND
    assert snapshot_of(mail_db) == before


def test_nul_in_a_key_is_never_sent(
    mail_db: str, tmp_path: Path, maps_for: Callable[[Path], Ownership]
) -> None:
    maps = maps_for(map_file(tmp_path, mail_db))
    assert maps.answer_now(Address("sales\x00", "example.com")).outcome is MapOutcome.NOT_FOUND


def test_map_file_is_checked(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite'}"
    with pytest.raises(MapError, match="mode 0644"):
        read_config(str(map_file(tmp_path, url, mode=0o644)))
    with pytest.raises(MapError, match="among :sender"):
        read_config(str(map_file(tmp_path, url, query="SELECT 1 WHERE :other")))
    bad = tmp_path / "bad.toml"
    bad.write_text("url = ")
    bad.chmod(0o600)
    with pytest.raises(MapError, match="not valid TOML"):
        read_config(str(bad))


def test_password_is_never_in_an_error(
    pg_server: PgServer, tmp_path: Path, maps_for: Callable[[Path], Ownership]
) -> None:
    url = pg_server.url("no_such_db_here", password="s3cret-Pass-word")
    maps = maps_for(map_file(tmp_path, url))
    answer = maps.answer_now(Address("sales", "example.com"))
    assert answer.outcome is MapOutcome.FAILED
    assert answer.error and "s3cret-Pass-word" not in answer.error and "***" in answer.error


def test_settings_set_checks_every_map_and_changes_nothing_on_error(
    cli: CliRunner, tmp_path: Path
) -> None:
    table = tmp_path / "owners"
    table.write_text("a@example.com a\n")
    loose = map_file(tmp_path, "sqlite:////nonexistent/x.sqlite", mode=0o644)
    for value, why in (
        (f"texthash:{tmp_path / 'nope'}", "is missing"),
        (f"hash:{table}", f"{table}.db is missing (run postmap on it first)"),
        (f"sql:{loose}", "mode 0644"),
        ("nosuch:/x", "unknown type"),
    ):
        result = cli("settings", "set", "sender-login-maps", f"texthash:{table}, {value}")
        assert result.code == 2 and result.out == ""
        assert result.err.count("\n") == 1 and result.err.startswith(
            "smtpauth-milter: error: bad map"
        )
        assert why in result.err
    assert cli("settings", "show", "--json").json()["settings"]["sender-login-maps"]["value"] == ""
    assert cli("settings", "set", "sender-login-maps", f"TEXTHASH:{table}").code == 0
    shown = cli("settings", "show", "--json").json()["settings"]["sender-login-maps"]["value"]
    assert shown == f"texthash:{table}"


def settings_with(**values: str) -> Settings:
    return Settings.resolve({key.replace("_", "-"): value for key, value in values.items()})


def test_a_replaced_sql_map_closes_its_connections(pg_server: PgServer, tmp_path: Path) -> None:
    """Each settings change replaces the maps; the old pool is closed on a lookup worker,
    so PostgreSQL never holds more than the current map's connection (pg_stat_activity)."""
    name = pg_server.new_database_name("pool")
    pg_server.create_database(name)
    engine = create_engine(pg_server.url(name))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE alias (address text, goto text)"))
        conn.execute(text("INSERT INTO alias VALUES ('sales@example.com', 'alice')"))
    engine.dispose()

    def connections() -> int:
        with pg_server.connect() as admin:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchone()
        assert row is not None
        return int(str(row[0]))

    maps = OwnershipMaps()
    try:
        for number in range(6):
            path = tmp_path / f"map{number % 3}.toml"  # a new file, or a new timeout
            path.write_text(f'url = "{pg_server.url(name)}"\nquery = "{ALIAS_QUERY}"\n')
            path.chmod(0o600)
            ownership = maps.for_settings(
                settings_with(
                    sender_login_maps=f"sql:{path}", sender_login_maps_timeout=f"{2 + number}"
                )
            )
            assert ownership is not None
            assert ownership.answer(Address("sales", "example.com")).owned_by("alice")
        deadline = time.monotonic() + 20  # closing runs on a worker: poll, do not sleep
        while connections() > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert connections() == 1  # six map sets were used; only the current one is open
        assert maps.for_settings(settings_with()) is None  # maps turned off: closed as well
        deadline = time.monotonic() + 20
        while connections() > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert connections() == 0
    finally:
        maps.stop()
        pg_server.drop_database(name)


def test_a_lookup_already_on_its_way_to_a_replaced_map_keeps_no_connection(
    mail_db: str, tmp_path: Path
) -> None:
    source = SqlMap(MapSpec("sql", str(map_file(tmp_path, mail_db))), 3)
    source.dispose()
    probe = [Probe("sales@example.com", False)]
    assert source.first(probe, 3) is not None  # still answers, with a connection of its own
    assert source._engine is None  # and keeps nothing once done


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("mysql://vmail:pw@localhost/vmail", "write mysql+pymysql://"),
        ("mysql+mysqldb://vmail:pw@localhost/vmail", "write mysql+pymysql://"),
        ("postgresql+psycopg2://vmail:pw@localhost/vmail", "write postgresql+psycopg://"),
        ("oracle://vmail:pw@localhost/vmail", "unknown database kind"),
        ("mysql+pymysql://vmail:pw@localhost", "names no database"),
        ("sqlite://", "names no database"),
    ],
)
def test_sql_map_url_shapes_are_checked(url: str, why: str, tmp_path: Path) -> None:
    with pytest.raises(MapError, match=re.escape(why)) as caught:
        read_config(str(map_file(tmp_path, url)))
    assert ":pw@" not in str(caught.value)


def test_a_mysql_map_without_a_server_fails_in_time_with_one_line(tmp_path: Path) -> None:
    """PyMySQL (the mysql extra) is what a mysql+pymysql:// map runs on: a refused
    connection is a MapError naming the URL without its password, not a hang."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"mysql+pymysql://vmail:Sec-ret-1@127.0.0.1:{port}/vmail"
    config = read_config(str(map_file(tmp_path, url, query=ALIAS_QUERY)))
    assert config.url.get_driver_name() == "pymysql"
    source = SqlMap(MapSpec("sql", str(tmp_path / "pfa.toml")), 3)
    started = time.monotonic()
    with pytest.raises(MapError) as caught:
        source.first([Probe("sales@example.com", False)], 3)
    assert time.monotonic() - started < 3 + 2  # the timeout, plus slack for a loaded machine
    message = str(caught.value)
    assert "\n" not in message and "Sec-ret-1" not in message and "***" in message
    assert "127.0.0.1" in message
    source.dispose()
