"""The differential test's PostfixAdmin databases: one on PostgreSQL, one on MariaDB.

Each holds the corpus's mail system (``login_maps_harness.load_postfixadmin``)
with a read-only user that has a password, and comes with two pairs of maps
reading it: Postfix's own client (``pgsql:`` / ``mysql:`` ``.cf`` files with
PostfixAdmin's queries) and our ``sql:`` maps with the queries of
docs/mail-system-data.md#postfixadmin (``DOC_*``, checked to be there verbatim).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.harness.mariadb import MariaDbServer
from tests.harness.pgserver import PgServer

from .login_corpus import MailSystem
from .login_maps_harness import (
    PFA_ALIAS_QUERY,
    PFA_FULL_QUERY,
    PFA_FULL_QUERY_MYSQL,
    load_postfixadmin,
    write_sql_cf,
)

# The PostfixAdmin queries of docs/mail-system-data.md, and the catch-all companion.
DOC_PFA_QUERY = """\
SELECT username FROM mailbox WHERE username = :sender AND active
UNION SELECT goto FROM alias WHERE address = :sender AND active
UNION SELECT m.username FROM mailbox m
      JOIN alias_domain ad ON m.username = :user || '@' || ad.target_domain
      WHERE ad.alias_domain = :domain AND m.active AND ad.active
UNION SELECT a.goto FROM alias a
      JOIN alias_domain ad ON a.address = :user || '@' || ad.target_domain
      WHERE ad.alias_domain = :domain AND a.active AND ad.active"""
DOC_PFA_QUERY_MYSQL = """\
SELECT username FROM mailbox WHERE username = :sender AND active = 1
UNION SELECT goto FROM alias WHERE address = :sender AND active = 1
UNION SELECT m.username FROM mailbox m
      JOIN alias_domain ad ON m.username = CONCAT(:user, '@', ad.target_domain)
      WHERE ad.alias_domain = :domain AND m.active = 1 AND ad.active = 1
UNION SELECT a.goto FROM alias a
      JOIN alias_domain ad ON a.address = CONCAT(:user, '@', ad.target_domain)
      WHERE ad.alias_domain = :domain AND a.active = 1 AND ad.active = 1"""
DOC_ALIAS_QUERY = "SELECT goto FROM alias WHERE address = :sender AND active"
READER_PASSWORD = "pfa-ro-secret"
Maps = dict[str, str]  # "postfix": Postfix's client maps, "sql": ours


def _sql_map(path: Path, url: str, query: str) -> Path:
    path.write_text(f'url = "{url}"\nquery = """\n{query}\n"""\n', encoding="utf-8")
    path.chmod(0o600)
    return path


def _maps(
    tables: Path, kind: str, port: int, names: tuple[str, str, str], queries: tuple[str, str]
) -> Maps:
    """Postfix's ``kind:`` maps (full, alias) and our sql: maps (full, alias) on one database."""
    dbname, user, url = names
    full_cf, doc_full = queries
    tables.mkdir(mode=0o755, exist_ok=True)
    full = write_sql_cf(tables / f"{kind}-full.cf", port, dbname, user, READER_PASSWORD, full_cf)
    alias = write_sql_cf(
        tables / f"{kind}-alias.cf", port, dbname, user, READER_PASSWORD, PFA_ALIAS_QUERY
    )
    sql_full = _sql_map(tables / f"{kind}-full.toml", url, doc_full)
    sql_alias = _sql_map(tables / f"{kind}-alias.toml", url, DOC_ALIAS_QUERY)
    return {"postfix": f"{kind}:{full}, {kind}:{alias}", "sql": f"sql:{sql_full}, sql:{sql_alias}"}


@contextmanager
def postfixadmin_on_postgresql(
    tables: Path, server: PgServer, system: MailSystem
) -> Iterator[Maps]:
    dbname = server.new_database_name("pfa")
    server.create_database(dbname)
    user = f"{dbname}_ro"
    server.create_user(user, READER_PASSWORD)
    try:
        with server.connect(dbname) as conn:
            with conn.transaction(), conn.cursor() as cur:
                load_postfixadmin(cur, system)
            conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {user}")
        assert server.port is not None
        url = server.url(dbname, user=user, password=READER_PASSWORD)
        yield _maps(
            tables, "pgsql", server.port, (dbname, user, url), (PFA_FULL_QUERY, DOC_PFA_QUERY)
        )
    finally:
        server.drop_database(dbname)
        server.drop_user(user)


def postfixadmin_on_mariadb(tables: Path, server: MariaDbServer, system: MailSystem) -> Maps:
    """The database lives as long as the (module's) server."""
    dbname, user = "postfixadmin", "pfa_ro"
    server.create_database(dbname)
    server.create_user(user, READER_PASSWORD, reads=dbname)
    with server.connect(dbname) as conn, conn.cursor() as cur:
        load_postfixadmin(cur, system)
    assert server.port is not None
    url = server.url(dbname, user, READER_PASSWORD)
    queries = (PFA_FULL_QUERY_MYSQL, DOC_PFA_QUERY_MYSQL)
    return _maps(tables, "mysql", server.port, (dbname, user, url), queries)
