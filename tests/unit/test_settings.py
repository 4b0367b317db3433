"""Settings: validation, effective values and provenance (docs/policy.md#settings)."""

from __future__ import annotations

import pytest

from smtpauth_milter.core.addresses import normalise, parse_address
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.networks import NetworkSet
from smtpauth_milter.core.replies import Reply
from smtpauth_milter.core.settings import SETTINGS, Settings, Source, canonical_value, effective
from smtpauth_milter.core.snapshot import Snapshot, grant_login, grant_target

BOOL_KEYS = [
    "require-auth-local",
    "exempt-local-recipients",
    "require-sender-match",
    "require-auth-role",
    "bare-login-match",
    "dry-run",
    "require-header-from-match",
    "spf-exempt",
    "spf-exempt-role",
]
LOGIN_LIMIT_DEFAULTS = {
    "login-max-messages": "200/1h",
    "login-max-recipients": "1000/1h",
    "login-max-client-ips": "20/1h",
    "login-max-mismatches": "20/1h",
    "login-limit-action": "tempfail",
    "login-limit-reply": "452 4.7.1 Too much mail from this login, try again later",
    "login-frozen-reply": "550 5.7.1 Sending is suspended for this login: "
    "contact your mail administrator",
    "login-freeze-duration": "off",
    "notify-address": "",
    "notify-relay": "127.0.0.1:25",
}
DOMAIN_KEYS = [
    *BOOL_KEYS,
    "role-senders",
    "auth-required-reply",
    "sender-mismatch-reply",
    "header-from-mismatch-reply",
    *(key for key in LOGIN_LIMIT_DEFAULTS if not key.startswith("notify-")),
]
GLOBAL_ONLY_KEYS = [
    "bad-sender-reply",
    "tempfail-reply",
    "recipient-delimiter",
    "dns-resolver",
    "spf-timeout",
    "sender-login-maps-timeout",
    "postfix-config-dir",
    "notify-address",
    "notify-relay",
]

DOCUMENTED_DEFAULTS = {
    "require-auth-local": "off",
    "exempt-local-recipients": "off",
    "require-sender-match": "off",
    "require-auth-role": "on",
    "role-senders": "postmaster, abuse, webmaster",
    "bare-login-match": "off",
    "dry-run": "off",
    "auth-required-reply": "530 5.7.0 Authentication required",
    "sender-mismatch-reply": ("553 5.7.1 Sender address rejected: not owned by authenticated user"),
    "require-header-from-match": "off",
    "header-from-mismatch-reply": "550 5.7.1 From header not owned by authenticated user",
    "bad-sender-reply": "553 5.1.7 Bad sender address syntax",
    "tempfail-reply": "451 4.3.0 Temporary policy failure, try again later",
    "recipient-delimiter": "+",
    "sender-login-maps": "",
    "sender-login-maps-ttl": "60",
    "sender-login-maps-local-domains": "",
    "sender-login-maps-timeout": "3",
    "postfix-config-dir": "",
    "spf-exempt": "off",
    "spf-exempt-role": "off",
    "dns-resolver": "",
    "spf-timeout": "3",
    **LOGIN_LIMIT_DEFAULTS,
}


def test_every_spec_setting_exists_with_its_default() -> None:
    assert {key: d.default for key, d in SETTINGS.items()} == DOCUMENTED_DEFAULTS


@pytest.mark.parametrize("key", DOMAIN_KEYS + GLOBAL_ONLY_KEYS)
def test_defaults_are_canonical(key: str) -> None:
    assert canonical_value(key, SETTINGS[key].default) == SETTINGS[key].default


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        pytest.param(word, expected, id=word)
        for word, expected in [
            ("on", "on"),
            ("off", "off"),
            ("true", "on"),
            ("false", "off"),
            ("yes", "on"),
            ("no", "off"),
            ("1", "on"),
            ("0", "off"),
            ("ON", "on"),
            ("Off", "off"),
            ("TRUE", "on"),
            ("False", "off"),
            ("YeS", "on"),
            ("nO", "off"),
            (" on ", "on"),
        ]
    ],
)
@pytest.mark.parametrize("key", BOOL_KEYS)
def test_bool_spellings(key: str, spelling: str, expected: str) -> None:
    assert canonical_value(key, spelling) == expected
    assert canonical_value(key, spelling, domain=True) == expected


@pytest.mark.parametrize(
    "spelling",
    ["", "maybe", "2", "-1", "enable", "o n", "y", "n", "t", "f", "onn", "on,off"],
)
def test_bad_bool_is_refused(spelling: str) -> None:
    with pytest.raises(SettingError):
        canonical_value("require-auth-local", spelling)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("postmaster, abuse, webmaster", "postmaster, abuse, webmaster", id="default"),
        pytest.param("Postmaster,ABUSE", "postmaster, abuse", id="case-and-spacing"),
        pytest.param(" a , b ,, c ,", "a, b, c", id="blank-items-dropped"),
        pytest.param("abuse, Abuse, ABUSE", "abuse", id="duplicates-dropped"),
        pytest.param("noc,hostmaster", "noc, hostmaster", id="custom"),
        pytest.param("", "", id="empty-list"),
        pytest.param("no-reply, no.reply", "no-reply, no.reply", id="punctuation"),
    ],
)
def test_list_canonicalisation(text: str, expected: str) -> None:
    assert canonical_value("role-senders", text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("postmaster@example.com", id="address"),
        pytest.param("john doe", id="space"),
        pytest.param("<abuse>", id="brackets"),
        pytest.param('"abuse"', id="quotes"),
        pytest.param("ab\nuse", id="newline"),
        pytest.param("ab\x00use", id="nul"),
    ],
)
def test_bad_list_item_is_refused(text: str) -> None:
    with pytest.raises(SettingError):
        canonical_value("role-senders", text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("+", "+", id="plus"),
        pytest.param("+-", "+-", id="plus-minus"),
        pytest.param("", "", id="empty-is-off"),
        pytest.param("++-", "+-", id="duplicates-dropped"),
        pytest.param("_", "_", id="underscore"),
        pytest.param(" + ", "+", id="padded"),
    ],
)
def test_delimiter(text: str, expected: str) -> None:
    assert canonical_value("recipient-delimiter", text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("@", id="at"),
        pytest.param("+@", id="plus-at"),
        pytest.param("<", id="bracket"),
        pytest.param('"', id="quote"),
        pytest.param("+ -", id="inner-space"),
        pytest.param(",", id="comma"),
        pytest.param("\x00", id="nul"),
        pytest.param("+\n-", id="newline"),
        pytest.param("+-=_.!#$%", id="too-many"),
    ],
)
def test_bad_delimiter_is_refused(text: str) -> None:
    with pytest.raises(SettingError):
        canonical_value("recipient-delimiter", text)


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        pytest.param(
            "auth-required-reply",
            " 530 5.7.0 Please log in ",
            "530 5.7.0 Please log in",
            id="auth-required",
        ),
        pytest.param("tempfail-reply", "450 4.07.01 later", "450 4.7.1 later", id="tempfail"),
    ],
)
def test_reply_values_are_canonical(key: str, text: str, expected: str) -> None:
    assert canonical_value(key, text) == expected


@pytest.mark.parametrize(
    ("key", "text"),
    [
        pytest.param("auth-required-reply", "530 4.7.0 Authentication required", id="class"),
        pytest.param("sender-mismatch-reply", "250 2.0.0 ok", id="success"),
        pytest.param("bad-sender-reply", "nonsense", id="nonsense"),
        pytest.param("tempfail-reply", "451 4.3.0 a\r\nb", id="crlf"),
        pytest.param("tempfail-reply", "550 5.7.1 go away", id="tempfail-permanent"),
        pytest.param("tempfail-reply", "554 5.3.0 policy down", id="tempfail-permanent-2"),
    ],
)
def test_bad_reply_value_is_refused(key: str, text: str) -> None:
    with pytest.raises(SettingError):
        canonical_value(key, text)


@pytest.mark.parametrize("key", ["require-auth", "Require-Auth-Local", "", "dry_run"])
def test_unknown_key_is_refused(key: str) -> None:
    with pytest.raises(SettingError):
        canonical_value(key, "on")


@pytest.mark.parametrize("key", GLOBAL_ONLY_KEYS)
def test_global_only_key_refused_per_domain(key: str) -> None:
    value = SETTINGS[key].default
    assert canonical_value(key, value) == value
    with pytest.raises(SettingError):
        canonical_value(key, value, domain=True)


@pytest.mark.parametrize("key", DOMAIN_KEYS)
def test_domain_key_accepted_per_domain(key: str) -> None:
    value = SETTINGS[key].default
    assert canonical_value(key, value, domain=True) == value


@pytest.mark.parametrize(
    ("global_values", "overrides", "expected"),
    [
        pytest.param({}, None, ("off", Source.DEFAULT), id="default"),
        pytest.param({}, {}, ("off", Source.DEFAULT), id="default-empty-overrides"),
        pytest.param({"dry-run": "on"}, None, ("on", Source.GLOBAL), id="global"),
        pytest.param({"dry-run": "off"}, {}, ("off", Source.GLOBAL), id="global-equal-default"),
        pytest.param({}, {"dry-run": "on"}, ("on", Source.DOMAIN), id="domain-over-default"),
        pytest.param(
            {"dry-run": "on"}, {"dry-run": "off"}, ("off", Source.DOMAIN), id="domain-over-global"
        ),
        pytest.param(
            {"dry-run": "on"},
            {"require-auth-local": "on"},
            ("on", Source.GLOBAL),
            id="other-override-inherits-global",
        ),
    ],
)
def test_effective_provenance(
    global_values: dict[str, str], overrides: dict[str, str] | None, expected: tuple[str, Source]
) -> None:
    assert effective("dry-run", global_values, overrides) == expected


def test_effective_ignores_domain_value_of_global_only_key() -> None:
    got = effective(
        "recipient-delimiter", {"recipient-delimiter": "-"}, {"recipient-delimiter": "_"}
    )
    assert got == ("-", Source.GLOBAL)
    got = effective("tempfail-reply", {}, {"tempfail-reply": "450 4.0.0 x"})
    assert got == (DOCUMENTED_DEFAULTS["tempfail-reply"], Source.DEFAULT)


def test_resolve_defaults() -> None:
    s = Settings.resolve({})
    assert s.require_auth_local is False
    assert s.exempt_local_recipients is False
    assert s.require_sender_match is False
    assert s.require_auth_role is True
    assert s.role_senders == frozenset({"postmaster", "abuse", "webmaster"})
    assert s.bare_login_match is False
    assert s.dry_run is False
    assert s.auth_required_reply == Reply(530, "5.7.0", "Authentication required")
    assert s.sender_mismatch_reply == Reply.parse(DOCUMENTED_DEFAULTS["sender-mismatch-reply"])
    assert s.bad_sender_reply == Reply(553, "5.1.7", "Bad sender address syntax")
    assert s.tempfail_reply == Reply.parse(DOCUMENTED_DEFAULTS["tempfail-reply"])
    assert s.recipient_delimiter == "+"


def test_resolve_with_global_and_domain_overrides() -> None:
    global_values = {
        "require-auth-local": "on",
        "dry-run": "yes",
        "role-senders": "noc",
        "recipient-delimiter": "+-",
        "auth-required-reply": "530 5.7.0 Global says log in",
    }
    overrides = {
        "require-auth-local": "off",
        "role-senders": "Abuse, hostmaster",
        "auth-required-reply": "550 5.7.1 Domain says log in",
        "recipient-delimiter": "_",  # global only: must be ignored per domain
    }
    glob = Settings.resolve(global_values)
    dom = Settings.resolve(global_values, overrides)
    assert glob.require_auth_local is True
    assert dom.require_auth_local is False
    assert glob.dry_run is dom.dry_run is True
    assert glob.role_senders == frozenset({"noc"})
    assert dom.role_senders == frozenset({"abuse", "hostmaster"})
    assert glob.auth_required_reply.text == "Global says log in"
    assert dom.auth_required_reply == Reply(550, "5.7.1", "Domain says log in")
    assert glob.recipient_delimiter == dom.recipient_delimiter == "+-"
    assert dom.require_auth_role is True  # unset everywhere -> default


def test_resolve_empty_role_list_means_no_role_senders() -> None:
    assert Settings.resolve({"role-senders": ""}).role_senders == frozenset()


def test_as_values_round_trips_through_resolve() -> None:
    s = Settings.resolve(
        {"dry-run": "1", "role-senders": "b, a", "spf-timeout": "2.50", "dns-resolver": "::1"}
    )
    values = s.as_values()
    assert set(values) == set(SETTINGS)
    assert values["dry-run"] == "on"
    assert values["spf-timeout"] == "2.5"
    assert values["dns-resolver"] == "[::1]:53"
    assert Settings.resolve(values) == s


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", "", id="empty-means-system"),
        pytest.param("  ", "", id="blank-means-system"),
        pytest.param("127.0.0.1", "127.0.0.1:53", id="v4-default-port"),
        pytest.param(" 192.0.2.53:5353 ", "192.0.2.53:5353", id="v4-port"),
        pytest.param("[2001:DB8::53]:5353", "[2001:db8::53]:5353", id="v6-bracketed"),
        pytest.param("[::1]", "[::1]:53", id="v6-bracketed-no-port"),
        pytest.param("::1", "[::1]:53", id="v6-bare"),
    ],
)
def test_dns_resolver(text: str, expected: str) -> None:
    assert canonical_value("dns-resolver", text) == expected
    assert canonical_value("dns-resolver", expected) == expected


@pytest.mark.parametrize(
    "text",
    [
        "localhost",
        "resolver.example.com:53",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:dns",
        "127.0.0.1:",
        "[::1",
        "[::1]53",
        "2001:db8::1:53x",
        "300.1.1.1",
        "127.0.0.1:5\n3",
    ],
)
def test_bad_dns_resolver_is_refused(text: str) -> None:
    with pytest.raises(SettingError, match="bad dns-resolver"):
        canonical_value("dns-resolver", text)


@pytest.mark.parametrize(
    ("text", "expected"), [("3", "3"), ("0.5", "0.5"), (" 2.50 ", "2.5"), ("30", "30")]
)
@pytest.mark.parametrize("key", ["spf-timeout", "sender-login-maps-timeout"])
def test_timeouts(key: str, text: str, expected: str) -> None:
    assert canonical_value(key, text) == expected


@pytest.mark.parametrize("text", ["0", "-1", "30.5", "nan", "inf", "", "3s", "1e400"])
@pytest.mark.parametrize("key", ["spf-timeout", "sender-login-maps-timeout"])
def test_bad_timeouts_are_refused(key: str, text: str) -> None:
    with pytest.raises(SettingError, match=f"bad {key} "):
        canonical_value(key, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", ""), ("  ", ""), ("/etc/postfix-out/", "/etc/postfix-out"), ("/", "/")],
)
def test_postfix_config_dir(text: str, expected: str) -> None:
    assert canonical_value("postfix-config-dir", text) == expected


@pytest.mark.parametrize("text", ["etc/postfix", "/etc/post fix", "/etc/\x01", "~/postfix"])
def test_bad_postfix_config_dir_is_refused(text: str) -> None:
    with pytest.raises(SettingError, match="bad directory"):
        canonical_value("postfix-config-dir", text)


@pytest.mark.parametrize(
    ("login", "expected"),
    [
        pytest.param("bob", "bob", id="plain"),
        pytest.param("  Bob ", "bob", id="trim-and-fold"),
        pytest.param("Bob@Example.COM", "bob@example.com", id="address-login"),
    ],
)
def test_grant_login(login: str, expected: str) -> None:
    assert grant_login(login) == expected


@pytest.mark.parametrize("login", ["", "   ", "bo b", "bo\nb", "b\x00ob", "bob\tx"])
def test_bad_grant_login(login: str) -> None:
    with pytest.raises(SettingError):
        grant_login(login)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param("alice@example.com", "alice@example.com", id="address"),
        pytest.param("Alice@Example.COM", "alice@example.com", id="address-case"),
        pytest.param(" alice@example.com. ", "alice@example.com", id="address-padded-dot"),
        pytest.param('"alice"@example.com', "alice@example.com", id="needless-quotes"),
        pytest.param('"john doe"@example.com', '"john doe"@example.com', id="quoted"),
        pytest.param("@example.com", "@example.com", id="domain"),
        pytest.param("@Example.COM.", "@example.com", id="domain-case-dot"),
        pytest.param("@exämple.com", "@xn--exmple-cua.com", id="domain-idn"),
        pytest.param("@XN--EXMPLE-CUA.COM", "@xn--exmple-cua.com", id="domain-a-label"),
        pytest.param("jöran@exämple.com", "jöran@xn--exmple-cua.com", id="address-idn"),
    ],
)
def test_grant_target(target: str, expected: str) -> None:
    assert grant_target(target) == expected


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("Alice+x@Example.COM", id="address"),
        pytest.param("@exämple.com", id="domain-idn"),
        pytest.param('"john doe"@example.com', id="quoted-space"),
        pytest.param('"\u00a0bob"@example.com', id="quoted-leading-nbsp"),
        pytest.param('"bob\u2003"@example.com', id="quoted-trailing-em-space"),
    ],
)
def test_grant_target_is_stable_when_re_validated(target: str) -> None:
    # export -> import and the snapshot re-read a stored target: it must not change.
    stored = grant_target(target)
    assert grant_target(stored) == stored


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("", id="empty"),
        pytest.param("@", id="bare-at"),
        pytest.param("alice", id="no-at"),
        pytest.param("a@b@example.com", id="two-at"),
        pytest.param("@@example.com", id="double-at-domain"),
        pytest.param("@exa mple.com", id="bad-domain"),
        pytest.param("@☃.com", id="bad-idn"),
        pytest.param("alice@☃.com", id="address-bad-idn"),
        pytest.param("alice@exam\nple.com", id="newline"),
        pytest.param("john doe@example.com", id="unquoted-space"),
    ],
)
def test_bad_grant_target(target: str) -> None:
    with pytest.raises(SettingError):
        grant_target(target)


@pytest.mark.parametrize(
    "target",
    [
        "alice+tag@example.com",
        "a.+x@example.com",
        "Bob@Example.com",
        '"john doe+x"@example.com',
        "jöran+x@example.com",
        "+only@example.com",
    ],
)
def test_grant_targets_load_like_senders_normalise(target: str) -> None:
    """A stored grant must match exactly the sender form the policy compares with:
    normalised, and never cut at a delimiter (docs/policy.md#sub-addresses)."""
    snapshot = Snapshot.build(
        {}, {"example.com": {}}, NetworkSet.of([]), [("u", grant_target(target))]
    )
    assert snapshot.grants["u"] == frozenset({normalise(parse_address(target), "")})
