"""Differential test: our milter against Postfix's own sender login check, 2,000+ pairs.

The corpus (``login_corpus.py``) goes through one private Postfix + Dovecot
twice per map: once decided by Postfix itself (``smtpd_sender_restrictions =
reject_authenticated_sender_login_mismatch``, ``smtpd_sender_login_maps = MAP``,
no milter), once by our milter (``require-sender-match`` on, the same map in
``sender-login-maps``, Postfix's check off).  Every verdict at RCPT (accept or
refuse) must agree, except on the pairs that docs/mail-system-data.md lists in
"Differences from Postfix" (``login_differences.py`` predicts our verdict on
those).  Maps: texthash, lmdb, cdb (built by postmap from the same source),
pgsql on a real PostgreSQL and mysql on a real MariaDB, each holding the same
PostfixAdmin database (login_maps_databases.py); both databases are also read
through our ``sql:`` maps, and the same data is tried as in-store grants.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tests.harness.logfile import LogFile
from tests.harness.mariadb import MariaDbServer
from tests.harness.mta import Sandbox
from tests.harness.pgserver import PgServer

from . import login_differences as diff
from .login_corpus import (
    ALIAS_DOMAINS,
    DELIMITERS,
    IDN_DOMAIN,
    MYDESTINATION,
    MYORIGIN,
    REAL_DOMAINS,
    MailSystem,
    Pair,
    build_corpus,
    build_mail_system,
)
from .login_maps_databases import (
    DOC_ALIAS_QUERY,
    DOC_PFA_QUERY,
    DOC_PFA_QUERY_MYSQL,
    Maps,
    postfixadmin_on_mariadb,
    postfixadmin_on_postgresql,
)
from .login_maps_harness import (
    ACCEPT,
    COMMON,
    REFUSE,
    postfix_decides,
    postmap,
    send_corpus,
    start_corpus_sandbox,
    write_texthash,
)
from .milter_fixture import OurMilter, StoreCli

pytestmark = pytest.mark.mta

SYSTEM = build_mail_system()
CORPUS = build_corpus(SYSTEM)
TABLE = SYSTEM.owner_table()  # what every map answers
STORE_DOMAINS = (*REAL_DOMAINS, IDN_DOMAIN, *ALIAS_DOMAINS)
DOCS = Path(__file__).resolve().parents[2] / "docs" / "mail-system-data.md"
Verdicts = dict[Pair, str]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    started = start_corpus_sandbox(tmp_path_factory.mktemp("differential"), SYSTEM.logins)
    try:
        yield started
    finally:
        started.stop(wait=False)


@pytest.fixture(scope="module")
def milter(sandbox: Sandbox) -> Iterator[OurMilter]:
    store = StoreCli(sandbox.root / "store.sqlite")
    store.run("domain", "add", *STORE_DOMAINS)
    store.run("settings", "set", "require-sender-match", "on")
    store.run("settings", "set", "recipient-delimiter", DELIMITERS)
    local = ", ".join((*MYDESTINATION, MYORIGIN))
    store.run("settings", "set", "sender-login-maps-local-domains", local)
    # Each login sends its 28 pairs (mismatches among them) once per test, to compare
    # ownership with Postfix's: the per-login limits (docs/policy.md#stolen-logins)
    # would hold a login back partway, so they are off here.
    for limit in ("messages", "recipients", "client-ips", "mismatches"):
        store.run("settings", "set", f"login-max-{limit}", "off")
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
def postfixadmin(sandbox: Sandbox, pg_server: PgServer) -> Iterator[Maps]:
    """A PostfixAdmin database on PostgreSQL; Postfix's pgsql: maps and our sql: maps on it."""
    with postfixadmin_on_postgresql(sandbox.root / "tables", pg_server, SYSTEM) as maps:
        yield maps


@pytest.fixture(scope="module")
def postfixadmin_mysql(
    sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Maps]:
    """The same on a private MariaDB; Postfix's mysql: maps and our sql: maps (PyMySQL)."""
    with MariaDbServer(tmp_path_factory.mktemp("mariadb")) as server:
        print(f"MariaDB installed and started in {server.started_in:.2f} s")
        yield postfixadmin_on_mariadb(sandbox.root / "tables", server, SYSTEM)


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


def map_differences(utf8_keys: bool = True) -> list[diff.Difference]:
    """Where our milter with a map decides unlike Postfix with the same map
    (``utf8_keys`` False: the map never matches a non-ASCII key, Postfix's pgsql:)."""
    return [
        diff.no_domain(),
        diff.not_local(STORE_DOMAINS),
        diff.own_address(diff.map_names(TABLE, utf8_keys)),
        diff.other_spelling(TABLE, utf8_keys),
    ]


def overturned(postfix: Verdicts, difference: diff.Difference) -> int:
    """Pairs on which ``difference`` predicts the opposite of Postfix's verdict."""
    return sum(1 for p in CORPUS if difference.predict(p) not in (None, postfix[p]))


def assert_agree_with_map(
    postfix: Verdicts, ours: Verdicts, differences: list[diff.Difference]
) -> dict[str, int]:
    """assert_agree, and every listed difference occurs: the other spelling of an
    internationalised domain really turns some of Postfix's refusals into accepts."""
    used = assert_agree(postfix, ours, differences)
    assert min(used.values()) > 0, used
    spelling = next(d for d in differences if d.name == "other-spelling")
    assert overturned(postfix, spelling) > 0, "no pair shows the other spelling's answer"
    return used


# docs/policy.md#sub-addresses, with recipient_delimiter = +- (login, sender): verdict.
DELIMITER_EXAMPLES = {
    ("bob-smith@example.com", "bob@example.com"): REFUSE,
    ("jean-pierre@example.com", "jean@example.com"): REFUSE,
    ("bob+work@example.com", "bob@example.com"): REFUSE,
    ("bob@example.com", "bob+news@example.com"): ACCEPT,
    ("sam@example.com", "sales-team@example.com"): ACCEPT,
    ("sam@example.com", "sales@example.com"): REFUSE,
    ("sam@example.com", "sales-team-x@example.com"): REFUSE,
    ("mary.ann@example.com", "news+jobs@example.net"): ACCEPT,
    ("mary@example.com", "mary.ann@example.com"): REFUSE,
    # the map's own entry for bob-smith@ wins (in the store: bob-smith@ holds a grant)
    ("bob@example.com", "bob-smith@example.com"): REFUSE,
}


def assert_delimiter_examples(postfix: Verdicts, ours: Verdicts, store: bool = False) -> None:
    """The reported pairs, decided by Postfix and by us as docs/policy.md says."""
    examples = dict(DELIMITER_EXAMPLES)
    if store:  # the store knows no mailbox jean-pierre@: jean@ owns it as its sub-address
        examples[("jean@example.com", "jean-pierre@example.com")] = ACCEPT
    got = {pair: (postfix[Pair(*pair)], ours[Pair(*pair)]) for pair in examples}
    wanted = {pair: (REFUSE if store and pair[0] == "jean@example.com" else v, v)
              for pair, v in examples.items()}  # fmt: skip
    assert got == wanted


def set_maps(maps: str) -> list[tuple[str, ...]]:
    return [("settings", "set", "sender-login-maps", maps)]


@pytest.mark.parametrize("kind", ["texthash", "lmdb", "cdb"])
def test_postfix_tables_agree_with_postfix(
    sandbox: Sandbox, milter: OurMilter, owner_file: Path, kind: str
) -> None:
    maps = f"{kind}:{owner_file}"
    postfix = postfix_verdicts(sandbox, maps)
    ours = our_verdicts(sandbox, milter, set_maps(maps))
    assert_agree_with_map(postfix, ours, map_differences())
    assert_delimiter_examples(postfix, ours)


def test_pgsql_map_agrees_with_postfix(
    sandbox: Sandbox, milter: OurMilter, postfixadmin: Maps
) -> None:
    maps = postfixadmin["postfix"]
    postfix = postfix_verdicts(sandbox, maps)
    ours = our_verdicts(sandbox, milter, set_maps(maps))
    # postmap runs Postfix's own pgsql client: its LATIN1 hits our keys as well.
    assert_agree_with_map(postfix, ours, map_differences(utf8_keys=False))


def test_sql_source_agrees_with_postfix(
    sandbox: Sandbox, milter: OurMilter, postfixadmin: Maps, owner_file: Path
) -> None:
    postfix = postfix_verdicts(sandbox, postfixadmin["postfix"])
    ours = our_verdicts(sandbox, milter, set_maps(postfixadmin["sql"]))
    utf8 = postfix_verdicts(sandbox, f"texthash:{owner_file}")
    used = assert_agree_with_map(postfix, ours, [*map_differences(), diff.latin1(utf8)])
    assert used["pgsql-latin1"] > 0, used


@pytest.mark.mariadb
def test_mysql_map_agrees_with_postfix(
    sandbox: Sandbox, milter: OurMilter, postfixadmin_mysql: Maps
) -> None:
    maps = postfixadmin_mysql["postfix"]
    postfix = postfix_verdicts(sandbox, maps)
    ours = our_verdicts(sandbox, milter, set_maps(maps))
    assert_agree_with_map(postfix, ours, map_differences())


@pytest.mark.mariadb
def test_sql_source_on_mysql_agrees_with_postfix(
    sandbox: Sandbox, milter: OurMilter, postfixadmin_mysql: Maps
) -> None:
    postfix = postfix_verdicts(sandbox, postfixadmin_mysql["postfix"])
    ours = our_verdicts(sandbox, milter, set_maps(postfixadmin_mysql["sql"]))
    # Postfix's mysql: client speaks utf8mb4 (libmariadb's default), like PyMySQL:
    # non-ASCII keys match through both, unlike pgsql: (LATIN1).
    assert_agree_with_map(postfix, ours, map_differences())


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
    sandbox: Sandbox, milter: OurMilter, postfixadmin: Maps, owner_file: Path
) -> None:
    postfix = postfix_verdicts(sandbox, postfixadmin["postfix"])
    ours = our_verdicts(sandbox, milter, store_commands(SYSTEM))
    utf8 = postfix_verdicts(sandbox, f"texthash:{owner_file}")
    differences = [
        diff.no_domain(),
        diff.not_local(STORE_DOMAINS),
        diff.own_address(diff.store_names(SYSTEM)),
        diff.store_alias_own_address(SYSTEM),
        diff.store_catch_all(SYSTEM),
        diff.store_idn(SYSTEM),
        diff.store_sub_address(SYSTEM),
        diff.latin1(utf8),
    ]
    used = assert_agree(postfix, ours, differences)
    assert min(used.values()) > 0, used
    assert overturned(postfix, diff.store_idn(SYSTEM)) > 0  # a row's other spelling counts
    assert_delimiter_examples(postfix, ours, store=True)


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
        diff.store_sub_address(SYSTEM),
    ]
    flat = " ".join(section.split())
    missing = [d.name for d in every if " ".join(d.doc.split()) not in flat]
    assert not missing, f"not in docs/mail-system-data.md 'Differences from Postfix': {missing}"


def test_documented_queries_are_the_tested_ones() -> None:
    flat = " ".join(DOCS.read_text().split())
    for query in (DOC_PFA_QUERY, DOC_PFA_QUERY_MYSQL, DOC_ALIAS_QUERY):
        assert " ".join(query.split()) in flat, query
