"""Property tests: no parser gap becomes a crash or a bypass, and logs stay one line."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.addresses import (
    AddressError,
    domain_name,
    normalise,
    parse_address,
    parse_path,
)
from smtpauth_milter.core.networks import NetworkSet, parse_cidr, parse_ip
from smtpauth_milter.core.policy import Action, Request, Rule, Verdict, decide
from smtpauth_milter.core.snapshot import Snapshot, grant_login, grant_target

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# Any code point at all, surrogates included (pymilter decodes with surrogateescape).
ANY_CHAR = st.characters(exclude_categories=())
ANY_TEXT = st.text(ANY_CHAR, max_size=80)

# Text made of the pieces parsers trip over, to reach the deep branches.
FRAGMENTS = st.sampled_from(
    [
        "<",
        ">",
        "@",
        '"',
        "\\",
        ":",
        ",",
        ".",
        " ",
        "+",
        "-",
        "[",
        "]",
        "(",
        ")",
        "alice",
        "Postmaster",
        "example.com",
        "EXAMPLE.COM.",
        "exämple.com",
        "xn--",
        "xn--exmple-cua",
        "@relay.test",
        "\udcc3",
        "\x00",
        "\r\n",
        "\u2028",
        "\uff45",
        "☃",
        "ß",
        "İ",
        "\t",
        "%",
        "!",
        "..",
        "::",
    ]
)
ADDRESSY = st.lists(st.one_of(FRAGMENTS, ANY_TEXT.filter(lambda t: len(t) < 4)), max_size=12).map(
    "".join
)
ENVELOPE_TEXT = st.one_of(ANY_TEXT, ADDRESSY)


@PROPERTY
@given(ENVELOPE_TEXT)
def test_parse_path_raises_only_address_error(raw: str) -> None:
    try:
        result = parse_path(raw)
    except AddressError:
        return
    if result is not None:
        assert "@" not in result.domain
        assert result.local
        assert result.domain == result.domain.lower()


# --- normalise is idempotent --------------------------------------------------

ATEXT = st.characters(
    codec="utf-8",
    exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"),
    exclude_characters='()<>[]\\,;:@" \t',
)
LOCAL_UNQUOTED = st.text(ATEXT, min_size=1, max_size=20)
LOCAL_QUOTED = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")),
    min_size=1,
    max_size=20,
).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"')
LABEL = st.from_regex(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,10}[A-Za-z0-9])?", fullmatch=True)
DOMAIN = st.one_of(
    st.lists(LABEL, min_size=1, max_size=4).map(".".join),
    st.sampled_from(["exämple.com", "EXÄMPLE.com.", "xn--exmple-cua.com", "bücher.example"]),
)
DELIMITER = st.sampled_from(["+", "+-", "", "_", "-+=", "ö"])


@PROPERTY
@given(st.one_of(LOCAL_UNQUOTED, LOCAL_QUOTED), DOMAIN, DELIMITER)
@example('"\u00a00"', "example.com", "+")  # found by hypothesis: leading NBSP
def test_normalise_is_idempotent(local: str, domain: str, delimiter: str) -> None:
    try:
        address = parse_address(f"{local}@{domain}")
    except AddressError:
        return
    once = normalise(address, delimiter)
    assert normalise(parse_address(once), delimiter) == once
    # ...and the bracketed path form reads back to the same canonical address
    reparsed = parse_path(f"<{once}>")
    assert reparsed is not None
    assert normalise(reparsed, delimiter) == once


# --- case and sub-address never change ownership -----------------------------

COM, ORG = "example.com", "example.org"
SIMPLE_LOCAL = st.from_regex(r"[a-z0-9]{1,6}(?:\.[a-z0-9]{1,4})?", fullmatch=True)
TAG = st.from_regex(r"[a-z0-9+._-]{0,6}", fullmatch=True)
LOGINS = st.one_of(
    st.sampled_from(["alice", "alice@example.com", "bob", "bob@example.org", "carol@example.net"]),
    SIMPLE_LOCAL,
    st.builds("{}@{}".format, SIMPLE_LOCAL, st.sampled_from([COM, ORG])),
)
GRANT_TARGETS = st.one_of(
    st.sampled_from(["@example.com", "@example.org", "alice@example.com", "bob@example.org"]),
    st.builds("{}@{}".format, SIMPLE_LOCAL, st.sampled_from([COM, ORG])),
)
GRANTS = st.lists(
    st.tuples(
        st.sampled_from(["alice", "bob", "alice@example.com", "Bob@Example.org"]), GRANT_TARGETS
    ),
    max_size=4,
)


def random_case(text: str, flips: list[bool]) -> str:
    """Change the case of ASCII letters only (Unicode case folding is not reversible)."""
    return "".join(
        ch.upper() if ch.isascii() and i < len(flips) and flips[i] else ch
        for i, ch in enumerate(text)
    )


@PROPERTY
@given(
    login=LOGINS,
    local=SIMPLE_LOCAL,
    domain=st.sampled_from([COM, ORG]),
    tag=TAG,
    flips=st.lists(st.booleans(), max_size=40),
    bare=st.tuples(st.booleans(), st.booleans()),
    grants=GRANTS,
)
def test_case_and_sub_address_never_change_ownership(
    login: str,
    local: str,
    domain: str,
    tag: str,
    flips: list[bool],
    bare: tuple[bool, bool],
    grants: list[tuple[str, str]],
) -> None:
    snapshot = Snapshot.build(
        {"require-sender-match": "on", "role-senders": ""},
        {
            COM: {"bare-login-match": "on" if bare[0] else "off"},
            ORG: {"bare-login-match": "on" if bare[1] else "off"},
        },
        NetworkSet.of(()),
        [(grant_login(g), grant_target(t)) for g, t in grants],
    )
    plain = f"<{local}@{domain}>"
    varied = "<" + random_case(f"{local}+{tag}@{domain}", flips) + ">"
    varied_login = random_case(login, flips[::-1])
    client = parse_ip("203.0.113.1")
    base = decide(snapshot, Request(client, login, plain), "<x@example.net>")
    assert base.rule in (Rule.SENDER_OWNED, Rule.SENDER_MISMATCH)
    for sender, who in ((varied, login), (plain, varied_login), (varied, varied_login)):
        got = decide(snapshot, Request(client, who, sender), "<x@example.net>")
        assert (got.action, got.rule) == (base.action, base.rule), (sender, who)


# --- decide never raises, and a parser gap never opens a bypass --------------

BOOL = st.sampled_from(["on", "off"])
DOMAIN_SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        "require-auth-local": BOOL,
        "exempt-local-recipients": BOOL,
        "require-sender-match": BOOL,
        "require-auth-role": BOOL,
        "bare-login-match": BOOL,
        "dry-run": BOOL,
        "role-senders": st.sampled_from(["", "postmaster", "noc, abuse"]),
        "auth-required-reply": st.sampled_from(["550 5.7.0 no", "450 4.7.0 later"]),
    },
)
GLOBAL_SETTINGS = st.fixed_dictionaries(
    {},
    optional={
        "require-auth-local": BOOL,
        "require-sender-match": BOOL,
        "dry-run": BOOL,
        "recipient-delimiter": st.sampled_from(["+", "", "+-"]),
    },
)
CLIENTS = st.sampled_from([None, "192.0.2.1", "203.0.113.5", "2001:db8::1", "::ffff:192.0.2.9"])


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    return Snapshot.build(
        draw(GLOBAL_SETTINGS),
        {
            COM: draw(DOMAIN_SETTINGS),
            ORG: draw(DOMAIN_SETTINGS),
            domain_name("exämple.com"): draw(DOMAIN_SETTINGS),
        },
        NetworkSet.of([parse_cidr("192.0.2.0/24")]),
        draw(st.lists(st.tuples(st.sampled_from(["alice", "bob"]), GRANT_TARGETS), max_size=3)),
    )


@PROPERTY
@given(
    snapshot=snapshots(),
    client=CLIENTS,
    login=st.one_of(st.none(), ENVELOPE_TEXT),
    sender=ENVELOPE_TEXT,
    rcpt=ENVELOPE_TEXT,
)
def test_decide_never_raises_and_never_lets_a_bad_sender_through(
    snapshot: Snapshot, client: str | None, login: str | None, sender: str, rcpt: str
) -> None:
    address = None if client is None else parse_ip(client)
    verdict = decide(snapshot, Request(address, login, sender), rcpt)
    assert isinstance(verdict, Verdict)
    assert verdict.action in set(Action)
    trusted = address is not None and snapshot.networks.contains(address)
    if trusted:
        assert verdict.action is Action.CONTINUE
        return
    try:
        parse_path(sender)
    except AddressError:
        assert verdict.rule is Rule.BAD_SENDER
        assert verdict.action is not Action.CONTINUE


@PROPERTY
@given(
    snapshot=snapshots(),
    local=st.sampled_from(["postmaster", "PostMaster+x", "alice", "noc", "abuse+y"]),
    domain=st.sampled_from(["example.com", "EXAMPLE.ORG.", "exämple.com", "xn--exmple-cua.com"]),
    wrapper=st.sampled_from(["<{}>", "{}", "<Name <{}>>", "<@relay.test:{}>"]),
    login=st.sampled_from([None, ""]),
    rcpt=st.sampled_from(["<a@example.com>", "<b@example.net>", "<c>"]),
)
def test_unauthenticated_local_sender_obeys_its_domain_settings(
    snapshot: Snapshot, local: str, domain: str, wrapper: str, login: str | None, rcpt: str
) -> None:
    sender = wrapper.format(f"{local}@{domain}")
    verdict = decide(snapshot, Request(parse_ip("203.0.113.5"), login, sender), rcpt)
    local_domain = domain_name(domain)
    effective = snapshot.settings_for(local_domain)
    assert effective is not None
    bare_local = local.lower().split("+")[0]
    delimiter = snapshot.global_settings.recipient_delimiter
    if "+" not in delimiter:
        bare_local = local.lower()
    role = effective.require_auth_role and bare_local in effective.role_senders
    refused = verdict.action is not Action.CONTINUE
    if role:
        assert refused and verdict.rule is Rule.ROLE_AUTH_REQUIRED
    elif effective.require_auth_local and not (
        effective.exempt_local_recipients and rcpt == "<a@example.com>"
    ):
        assert refused and verdict.rule is Rule.AUTH_REQUIRED
    else:
        assert verdict.action is Action.CONTINUE
    assert verdict.domain == local_domain


# --- logfmt ---------------------------------------------------------------------


@PROPERTY
@given(
    st.dictionaries(
        st.sampled_from(["queue", "login", "from", "rcpt", "x"]), st.one_of(st.none(), ANY_TEXT)
    )
)
def test_logfmt_line_is_always_one_line(fields: dict[str, str | None]) -> None:
    out = logfmt.line(fields)
    assert "\n" not in out and "\r" not in out
    assert len(out.splitlines()) <= 1
    assert out.count("=") >= len(fields)


def closing_quote(text: str, start: int) -> int:
    """Index of the quote that ends the quoted value opened at ``start``."""
    pos = start + 1
    while text[pos] != '"':
        pos += 2 if text[pos] == "\\" else 1
    return pos


@PROPERTY
@given(ANY_TEXT, ANY_TEXT)
def test_logfmt_value_never_leaks_a_pair(left: str, right: str) -> None:
    hostile = f'{left}" action=continue {right}'
    out = logfmt.line({"from": hostile, "rcpt": "x"})
    assert out.startswith('from="')
    assert out.endswith(" rcpt=x")
    # the quoted value ends exactly where the next pair begins
    assert closing_quote(out, len("from=")) == len(out) - len(" rcpt=x") - 1
