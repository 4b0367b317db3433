"""Differential test: our milter against Postfix's own sender login check, 2,000+ pairs.

The corpus (``login_corpus.py``) goes through one private Postfix + Dovecot
twice per map: once decided by Postfix itself (``smtpd_sender_restrictions =
reject_authenticated_sender_login_mismatch``, ``smtpd_sender_login_maps = MAP``,
no milter), once by our milter (``require-sender-match`` on, the same map in
``sender-login-maps``, Postfix's check off).  Every verdict at RCPT (accept or
refuse) must agree, except on the pairs that docs/mail-system-data.md lists in
"Differences from Postfix" (``login_differences.py`` predicts our verdict on
those).  Maps: texthash, lmdb, cdb (built by postmap from the same source) and
pgsql on a real PostgreSQL holding a PostfixAdmin database; that database is
also read through our ``sql:`` maps, and the same data as in-store grants.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.support.pgserver import PgServer

from . import login_differences as diff
from .login_corpus import (
    ALIAS_DOMAINS,
    IDN_DOMAIN,
    MYDESTINATION,
    MYORIGIN,
    REAL_DOMAINS,
    MailSystem,
    Pair,
    build_corpus,
    build_mail_system,
)
from .login_maps_harness import (
    ACCEPT,
    COMMON,
    PFA_ALIAS_QUERY,
    PFA_FULL_QUERY,
    REFUSE,
    load_postfixadmin,
    postfix_decides,
    postmap,
    send_corpus,
    start_corpus_sandbox,
    write_pgsql_cf,
    write_texthash,
)
from .milter_fixture import OurMilter, StoreCli
from .sandbox import LogFile, Sandbox

pytestmark = pytest.mark.mta

SYSTEM = build_mail_system()
CORPUS = build_corpus(SYSTEM)
STORE_DOMAINS = (*REAL_DOMAINS, IDN_DOMAIN, *ALIAS_DOMAINS)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "mail-system-data.md"
Verdicts = dict[Pair, str]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    started = start_corpus_sandbox(tmp_path_factory.mktemp("differential"), SYSTEM.logins)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def milter(sandbox: Sandbox) -> Iterator[OurMilter]:
    store = StoreCli(sandbox.root / "store.sqlite")
    store.run("domain", "add", *STORE_DOMAINS)
    store.run("settings", "set", "require-sender-match", "on")
    store.run("settings", "set", "recipient-delimiter", "+")
    local = ", ".join((*MYDESTINATION, MYORIGIN))
    store.run("settings", "set", "sender-login-maps-local-domains", local)
    store.save_baseline()
    ours = OurMilter(store, sandbox.inet_milter_socket(), LogFile(sandbox.root / "milter.log"))
    saved = os.environ.get("MAIL_CONFIG")
    os.environ["MAIL_CONFIG"] = str(sandbox.postfix.config_dir)  # postmap reads this Postfix
    try:
        ours.start()
    finally:
        os.environ.pop("MAIL_CONFIG")
        if saved is not None:
            os.environ["MAIL_CONFIG"] = saved
    try:
        yield ours
    finally:
        ours.stop()


@pytest.fixture(scope="module")
def owner_file(sandbox: Sandbox) -> Path:
    """The owner table as a texthash source, with its lmdb and cdb builds beside it."""
    source = write_texthash(sandbox.root / "tables" / "owners", SYSTEM.owner_table())
    for kind in ("lmdb", "cdb"):
        postmap(sandbox.postfix.config_dir, kind, source)
        source.with_name(f"owners.{kind}").chmod(0o644)
    return source


@pytest.fixture(scope="module")
def postfixadmin(sandbox: Sandbox, pg_server: PgServer) -> Iterator[dict[str, str]]:
    """A PostfixAdmin database; the Postfix pgsql: maps and our sql: maps that read it."""
    dbname = pg_server.new_database_name("pfa")
    pg_server.create_database(dbname)
    user, password = f"{dbname}_ro", "pfa-ro-secret"
    pg_server.create_user(user, password)
    with pg_server.connect(dbname) as conn:
        load_postfixadmin(conn, SYSTEM)
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {user}")
    port = pg_server.port
    assert port is not None
    tables = sandbox.root / "tables"
    tables.mkdir(exist_ok=True)  # also when no texthash test ran first
    full, alias = (
        write_pgsql_cf(tables / f"{name}.cf", port, dbname, user, password, query)
        for name, query in (("pfa-full", PFA_FULL_QUERY), ("pfa-alias", PFA_ALIAS_QUERY))
    )
    url = pg_server.url(dbname, user=user, password=password)
    sql_full = _sql_map(tables / "pfa-full.toml", url, DOC_PFA_QUERY)
    sql_alias = _sql_map(tables / "pfa-alias.toml", url, DOC_ALIAS_QUERY)
    try:
        yield {
            "pgsql": f"pgsql:{full}, pgsql:{alias}",
            "sql": f"sql:{sql_full}, sql:{sql_alias}",
        }
    finally:
        pg_server.drop_database(dbname)
        pg_server.drop_user(user)


# The PostfixAdmin query of docs/mail-system-data.md, and its catch-all companion.
DOC_PFA_QUERY = """\
SELECT username FROM mailbox WHERE username = :sender AND active
UNION SELECT goto FROM alias WHERE address = :sender AND active
UNION SELECT m.username FROM mailbox m
      JOIN alias_domain ad ON m.username = :user || '@' || ad.target_domain
      WHERE ad.alias_domain = :domain AND m.active AND ad.active
UNION SELECT a.goto FROM alias a
      JOIN alias_domain ad ON a.address = :user || '@' || ad.target_domain
      WHERE ad.alias_domain = :domain AND a.active AND ad.active"""
DOC_ALIAS_QUERY = "SELECT goto FROM alias WHERE address = :sender AND active"


def _sql_map(path: Path, url: str, query: str) -> Path:
    path.write_text(f'url = "{url}"\nquery = """\n{query}\n"""\n', encoding="utf-8")
    path.chmod(0o600)
    return path


_postfix_cache: dict[str, Verdicts] = {}


def postfix_verdicts(sandbox: Sandbox, maps: str) -> Verdicts:
    """Postfix's own verdicts with ``maps`` (each map run once per module)."""
    if maps not in _postfix_cache:
        sandbox.postfix.use_milter(None)
        sandbox.postfix.use_overrides(postfix_decides(maps))
        _postfix_cache[maps] = send_corpus(sandbox, CORPUS)
    return _postfix_cache[maps]


def our_verdicts(
    sandbox: Sandbox, milter: OurMilter, commands: Sequence[Sequence[str]]
) -> Verdicts:
    """Our verdicts after the store is reset and ``commands`` applied; Postfix's check off."""
    milter.sync(commands)
    sandbox.postfix.use_overrides(COMMON)
    sandbox.postfix.use_milter(milter.socket)
    try:
        return send_corpus(sandbox, CORPUS)
    finally:
        sandbox.postfix.use_milter(None)


def assert_agree(
    postfix: Verdicts, ours: Verdicts, differences: list[diff.Difference]
) -> dict[str, int]:
    """Every pair: Postfix's verdict, or the predicted one of the difference that applies."""
    unexpected = {p: v for p, v in (*postfix.items(), *ours.items()) if v not in (ACCEPT, REFUSE)}
    assert not unexpected, f"replies that are neither accept nor refuse: {unexpected}"
    counts = collections.Counter(postfix.values())
    # The corpus means something only if Postfix both accepts and refuses plenty.
    assert counts[ACCEPT] > 300 and counts[REFUSE] > 300, counts
    wanted, used = diff.expected(CORPUS, postfix, differences)
    wrong = [(p, postfix[p], ours[p], wanted[p]) for p in CORPUS if ours[p] != wanted[p]]
    shown = "\n".join(
        f"{p.login} {p.sender}: postfix={a} ours={b} expected={c}" for p, a, b, c in wrong[:40]
    )
    assert not wrong, f"{len(wrong)} of {len(CORPUS)} verdicts disagree:\n{shown}"
    print(f"{len(CORPUS)} pairs, Postfix {dict(counts)}, decided by a listed difference: {used}")
    return used


def map_differences() -> list[diff.Difference]:
    """Where our milter with a map decides unlike Postfix with the same map."""
    return [
        diff.no_domain(),
        diff.not_local(STORE_DOMAINS),
        diff.own_address(),
        diff.unicode_domain(),
    ]


@pytest.mark.parametrize("kind", ["texthash", "lmdb", "cdb"])
def test_postfix_tables_agree_with_postfix(
    sandbox: Sandbox, milter: OurMilter, owner_file: Path, kind: str
) -> None:
    maps = f"{kind}:{owner_file}"
    postfix = postfix_verdicts(sandbox, maps)
    ours = our_verdicts(sandbox, milter, [("settings", "set", "sender-login-maps", maps)])
    used = assert_agree(postfix, ours, map_differences())
    assert min(used.values()) > 0, used  # every listed difference really occurs in the corpus


def test_pgsql_map_agrees_with_postfix(
    sandbox: Sandbox, milter: OurMilter, postfixadmin: dict[str, str]
) -> None:
    maps = postfixadmin["pgsql"]
    postfix = postfix_verdicts(sandbox, maps)
    ours = our_verdicts(sandbox, milter, [("settings", "set", "sender-login-maps", maps)])
    # postmap uses Postfix's own pgsql client: no LATIN1 difference here.
    used = assert_agree(postfix, ours, map_differences())
    assert min(used.values()) > 0, used


def test_sql_source_agrees_with_postfix(
    sandbox: Sandbox, milter: OurMilter, postfixadmin: dict[str, str], owner_file: Path
) -> None:
    postfix = postfix_verdicts(sandbox, postfixadmin["pgsql"])
    sql = postfixadmin["sql"]
    ours = our_verdicts(sandbox, milter, [("settings", "set", "sender-login-maps", sql)])
    utf8 = postfix_verdicts(sandbox, f"texthash:{owner_file}")
    used = assert_agree(postfix, ours, [*map_differences(), diff.latin1(utf8)])
    assert used["pgsql-latin1"] > 0, used


def store_commands(system: MailSystem) -> list[tuple[str, ...]]:
    """The PostfixAdmin data as alias domains and send-as grants."""
    commands: list[tuple[str, ...]] = [("domain", "remove", *ALIAS_DOMAINS)]
    for alias, target in system.alias_domains.items():
        commands.append(("domain", "add", alias, "--alias-of", target))
    for address, goto in system.aliases.items():
        for owner in goto:
            commands.append(("sender", "allow", owner, address))
    return commands


def test_store_grants_agree_with_postfix(
    sandbox: Sandbox, milter: OurMilter, postfixadmin: dict[str, str], owner_file: Path
) -> None:
    postfix = postfix_verdicts(sandbox, postfixadmin["pgsql"])
    ours = our_verdicts(sandbox, milter, store_commands(SYSTEM))
    utf8 = postfix_verdicts(sandbox, f"texthash:{owner_file}")
    differences = [
        diff.no_domain(),
        diff.not_local(STORE_DOMAINS),
        diff.own_address(),
        diff.store_alias_own_address(SYSTEM),
        diff.store_catch_all(SYSTEM),
        diff.store_idn(SYSTEM),
        diff.latin1(utf8),
    ]
    used = assert_agree(postfix, ours, differences)
    assert used["catch-all"] > 0 and used["store-idn"] > 0, used


def test_every_difference_is_documented() -> None:
    text = DOCS.read_text()
    section = text[text.index("## Differences from Postfix") :]
    following = section.find("\n## ")
    section = section if following < 0 else section[:following]
    every = [
        *map_differences(),
        diff.latin1({}),
        diff.store_alias_own_address(SYSTEM),
        diff.store_catch_all(SYSTEM),
        diff.store_idn(SYSTEM),
    ]
    flat = " ".join(section.split())
    missing = [d.name for d in every if " ".join(d.doc.split()) not in flat]
    assert not missing, f"not in docs/mail-system-data.md 'Differences from Postfix': {missing}"
