"""Machinery of the differential test: a sandbox with every corpus login, the
ownership tables in each form Postfix reads, and a fast SMTP client.

- :func:`start_corpus_sandbox`: the private Postfix + Dovecot of ``tests.harness.mta``
  whose Dovecot knows every login of the corpus, spelled as written (``+`` and
  non-ASCII allowed, case kept).
- :func:`send_corpus`: one SMTP connection per login (AUTH PLAIN once), then
  MAIL FROM, RCPT TO and RSET per sender; the verdict of each pair.
- :func:`write_texthash`, :func:`postmap`: the owner table as ``texthash:``
  and as the ``lmdb:``/``cdb:`` files ``postmap`` builds from it.
- :func:`load_postfixadmin`, :func:`write_sql_cf`: the same mail system as
  a PostfixAdmin database on PostgreSQL or MariaDB and the map files Postfix
  reads it with.
"""

from __future__ import annotations

import base64
import smtplib
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol

from tests.harness.mta import LOOPBACK, Sandbox, start_sandbox

from .login_corpus import DELIMITERS, PASSWORD, RECIPIENT, MailSystem, Pair

ACCEPT = "accept"
REFUSE = "refuse"
CLIENTS = 4  # SMTP connections at once
# Postfix would end a session after 20 errors (every refusal is one) or 100 RSETs.
SESSION_LIMITS = {
    "smtpd_hard_error_limit": "100000",
    "smtpd_soft_error_limit": "100000",
    "smtpd_junk_command_limit": "100000",
}
# Every accepted RCPT opens a queue file that RSET throws away; with nothing ever
# delivered, Postfix's flow control would pause 1 s (in_flow_delay) before each.
# The same delimiter as our recipient-delimiter; SMTPUTF8 (IDN senders) as at level 3.6.
COMMON = {
    **SESSION_LIMITS,
    "in_flow_delay": "0",
    "recipient_delimiter": DELIMITERS,
    "smtputf8_enable": "yes",
}
DOVECOT_LOGINS_AS_WRITTEN = "auth_username_chars =\nauth_username_format = %u\n"


def postfix_decides(maps: str) -> dict[str, str]:
    """main.cf overrides: Postfix's own check, with ``maps`` as smtpd_sender_login_maps."""
    return {
        **COMMON,
        "smtpd_sender_login_maps": maps,
        "smtpd_sender_restrictions": "reject_authenticated_sender_login_mismatch",
    }


def start_corpus_sandbox(root: Path, logins: Iterable[str]) -> Sandbox:
    """Dovecot (every login, password PASSWORD) and Postfix without a milter; stopped on failure."""
    users = dict.fromkeys(logins, PASSWORD)
    return start_sandbox(root, users, dovecot_extra=DOVECOT_LOGINS_AS_WRITTEN, overrides=COMMON)


# --------------------------------------------------------------------------- SMTP


def _verdict(code: int, stage: str, text: bytes) -> str:
    if 200 <= code < 300:
        return ACCEPT
    if 500 <= code < 600:
        return REFUSE
    return f"{stage} {code} {text.decode('utf-8', 'replace')}"  # never expected: fails the test


def _session(port: int, login: str, senders: Sequence[str]) -> list[tuple[Pair, str]]:
    out: list[tuple[Pair, str]] = []
    with smtplib.SMTP(LOOPBACK, port, local_hostname="client.sandbox.test", timeout=60) as conn:
        conn.ehlo()
        conn.command_encoding = "utf-8"  # IDN senders and logins (the server offers SMTPUTF8)
        token = base64.b64encode(f"\0{login}\0{PASSWORD}".encode()).decode("ascii")
        code, text = conn.docmd("AUTH", f"PLAIN {token}")
        if code != 235:
            raise AssertionError(f"AUTH as {login!r} failed: {code} {text!r}")
        for sender in senders:
            utf8 = "" if sender.isascii() else " SMTPUTF8"
            code, text = conn.docmd("MAIL", f"FROM:<{sender}>{utf8}")
            if code == 250:
                code, text = conn.docmd("RCPT", f"TO:<{RECIPIENT}>")
                verdict = _verdict(code, "RCPT", text)
            else:
                verdict = _verdict(code, "MAIL", text)
            out.append((Pair(login, sender), verdict))
            conn.docmd("RSET")
    return out


def send_corpus(sandbox: Sandbox, pairs: Sequence[Pair]) -> dict[Pair, str]:
    """The verdict (ACCEPT, REFUSE or the unexpected reply) of every pair.

    A pair answered 4xx is sent once more at the end, as any SMTP client would
    retry it: a map's server can fail a query under load (the milter then
    tempfails, rightly: MariaDB's client once said "Resource temporarily
    unavailable" with four workers on two cores).  A second 4xx stands."""
    verdicts = _send(sandbox, pairs)
    again = [pair for pair, verdict in verdicts.items() if verdict.startswith(("RCPT 4", "MAIL 4"))]
    if again:
        print(f"{len(again)} pairs answered 4xx, sent again: {again[:5]}")
        verdicts.update(_send(sandbox, again))
    return verdicts


def _send(sandbox: Sandbox, pairs: Sequence[Pair]) -> dict[Pair, str]:
    by_login: dict[str, list[str]] = {}
    for pair in pairs:
        by_login.setdefault(pair.login, []).append(pair.sender)
    with ThreadPoolExecutor(CLIENTS) as pool:
        sessions = pool.map(lambda item: _session(sandbox.port, *item), by_login.items())
        return dict(result for session in sessions for result in session)


# --------------------------------------------------------------------------- tables


def _texthash_key(key: str) -> str:
    return key  # the corpus has no key that needs quoting (no space, no '"')


def write_texthash(path: Path, table: Mapping[str, Sequence[str]]) -> Path:
    lines = [f"{_texthash_key(key)}\t{', '.join(owners)}\n" for key, owners in table.items()]
    path.parent.mkdir(mode=0o755, exist_ok=True)
    header = "# generated by tests/integration/login_maps_harness.py\n"
    path.write_text(header + "".join(lines), encoding="utf-8")
    path.chmod(0o644)
    return path


def postmap(config_dir: Path, kind: str, source: Path) -> None:
    """Build ``kind:source`` (lmdb, cdb, hash) with the sandbox's main.cf (same folding)."""
    subprocess.run(
        ["postmap", "-c", str(config_dir), f"{kind}:{source}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


# --------------------------------------------------------------------------- PostfixAdmin on SQL

PFA_SCHEMA = """
CREATE TABLE domain (domain varchar(255) PRIMARY KEY, active boolean NOT NULL DEFAULT true);
CREATE TABLE mailbox (username varchar(255) PRIMARY KEY, password varchar(255) NOT NULL DEFAULT '',
  local_part varchar(255) NOT NULL, domain varchar(255) NOT NULL,
  active boolean NOT NULL DEFAULT true);
CREATE TABLE alias (address varchar(255) PRIMARY KEY, goto text NOT NULL,
  domain varchar(255) NOT NULL, active boolean NOT NULL DEFAULT true);
CREATE TABLE alias_domain (alias_domain varchar(255) PRIMARY KEY,
  target_domain varchar(255) NOT NULL, active boolean NOT NULL DEFAULT true);
"""
# PostfixAdmin's documented sender map (mailbox + alias + alias domain); it uses
# %u and %d, so Postfix never sends it the @domain key or a bare local part ...
PFA_FULL_QUERY = """\
SELECT username FROM mailbox WHERE username='%s' AND active = true
  UNION SELECT goto FROM alias WHERE address='%s' AND active = true
  UNION SELECT mailbox.username FROM mailbox, alias_domain
        WHERE alias_domain.alias_domain='%d'
          AND mailbox.username = '%u' || '@' || alias_domain.target_domain
          AND mailbox.active = true AND alias_domain.active = true
  UNION SELECT alias.goto FROM alias, alias_domain
        WHERE alias_domain.alias_domain='%d'
          AND alias.address = '%u' || '@' || alias_domain.target_domain
          AND alias.active = true AND alias_domain.active = true"""
# ... so a second map with only %s answers the catch-all aliases (@domain).
PFA_ALIAS_QUERY = "SELECT goto FROM alias WHERE address='%s' AND active = true"
# The same queries for Postfix's mysql: client: MySQL's || is OR, CONCAT joins.
PFA_FULL_QUERY_MYSQL = PFA_FULL_QUERY.replace(
    "'%u' || '@' || alias_domain.target_domain", "CONCAT('%u', '@', alias_domain.target_domain)"
)


class Cursor(Protocol):
    """What PostfixAdmin loading needs of a DB-API cursor (psycopg and PyMySQL: %s)."""

    def execute(self, query: str, /) -> object: ...
    def executemany(self, query: str, rows: Sequence[Sequence[object]], /) -> object: ...


def load_postfixadmin(cur: Cursor, system: MailSystem) -> None:
    """Create the PostfixAdmin tables (PostgreSQL or MariaDB) and fill them with ``system``."""
    for statement in filter(str.strip, PFA_SCHEMA.split(";")):
        cur.execute(statement)
    domains = {address.rpartition("@")[2] for address in (*system.mailboxes, *system.aliases)}
    cur.executemany("INSERT INTO domain(domain) VALUES (%s)", [(d,) for d in sorted(domains)])
    cur.executemany(
        "INSERT INTO mailbox(username, local_part, domain, active) VALUES (%s, %s, %s, %s)",
        [(u, *u.rsplit("@", 1), ok) for u, ok in system.mailboxes.items()],
    )
    cur.executemany(
        "INSERT INTO alias(address, goto, domain) VALUES (%s, %s, %s)",
        [(a, ",".join(g), a.rpartition("@")[2]) for a, g in system.aliases.items()],
    )
    cur.executemany(
        "INSERT INTO alias_domain(alias_domain, target_domain) VALUES (%s, %s)",
        list(system.alias_domains.items()),
    )


def write_sql_cf(path: Path, port: int, dbname: str, user: str, password: str, query: str) -> Path:
    """A Postfix pgsql: or mysql: map file (a throwaway password, readable by smtpd)."""
    body = "\n".join(
        (
            f"hosts = inet:{LOOPBACK}:{port}",
            f"user = {user}",
            f"password = {password}",
            f"dbname = {dbname}",
            "query = " + query.replace("\n", "\n  "),
            "",
        )
    )
    path.write_text(body, encoding="utf-8")
    path.chmod(0o644)
    return path
