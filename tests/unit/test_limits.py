"""Per-login limits: values, window arithmetic, per-domain resolution and each verdict
(docs/policy.md#stolen-logins)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from smtpauth_milter.admin.doctor.limits import check_login_limits
from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.limits import (
    Counts,
    Duration,
    Event,
    Limit,
    LimitKind,
    LoginLimits,
    Outcome,
    frozen_verdict,
    judge,
    login_domain,
)
from smtpauth_milter.core.loginpolicy import combined, counted_login, event_of, limits_of
from smtpauth_milter.core.networks import NetworkSet
from smtpauth_milter.core.policy import Action, Request, Rule, Verdict
from smtpauth_milter.core.settings import Settings, canonical_value
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.core.window import WindowCount, WindowSet, buckets, client_key, width


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("200/1h", "200/1h"),
        (" 10 / 1m ", "10/1m"),
        ("10/60s", "10/1m"),
        ("5/120", "5/2m"),
        ("1000/24h", "1000/1d"),
        ("OFF", "off"),
    ],
)
def test_limit_values_are_stored_canonical(typed: str, stored: str) -> None:
    assert canonical_value("login-max-messages", typed) == stored
    assert str(Limit.parse(stored)) == stored


@pytest.mark.parametrize(
    "bad",
    ["", "200", "0/1h", "-1/1h", "200/", "200/0s", "200/59s", "200/90s", "200/8d", "x/1h", "2/1w"],
)
def test_bad_limits_are_refused_with_one_line(bad: str) -> None:
    with pytest.raises(SettingError, match="bad limit") as caught:
        canonical_value("login-max-recipients", bad, domain=True)
    assert "\n" not in str(caught.value)


def test_action_replies_and_duration_are_checked() -> None:
    assert canonical_value("login-limit-action", " Freeze ") == "freeze"
    with pytest.raises(SettingError, match="tempfail or freeze"):
        canonical_value("login-limit-action", "reject")
    with pytest.raises(SettingError, match="must be a 4xx"):
        canonical_value("login-limit-reply", "550 5.7.1 no")
    assert canonical_value("login-frozen-reply", "554 5.7.1 frozen").startswith("554")
    assert canonical_value("login-freeze-duration", "120m") == "2h"
    assert str(Duration.parse("off")) == "off"
    with pytest.raises(SettingError, match="login-freeze-duration"):
        canonical_value("login-freeze-duration", "10s")


# --- window arithmetic ---------------------------------------------------------


def test_bucket_width_is_a_sixtieth_of_the_window() -> None:
    assert (width(60), buckets(60)) == (1, 60)
    assert (width(3600), buckets(3600)) == (60, 60)
    assert (width(86400), buckets(86400)) == (1440, 60)


def test_an_event_counts_for_the_whole_window_and_at_most_one_bucket_more() -> None:
    count = WindowCount(3600)  # buckets of 60 s
    count.add(1_000_000.0)  # bucket 16666 starts at 999_960
    assert count.total(1_000_000.0) == 1
    assert count.total(1_000_000.0 + 3599) == 1  # within the hour: counted
    assert count.total(999_960.0 + 3600 + 59.9) == 1  # one bucket more at most
    assert count.total(999_960.0 + 3600 + 60) == 0  # out of the window
    assert count.prune(999_960.0 + 3600 + 60)


def test_edges_of_a_bucket() -> None:
    count = WindowCount(60)  # buckets of 1 s
    count.add(100.0)
    count.add(100.999)
    count.add(101.0)
    assert count.total(101.0) == 3
    assert count.total(160.999) == 3  # bucket 100 is still the oldest in the window
    assert count.total(161.0) == 1  # bucket 100 left; bucket 101 stays
    assert count.total(162.0) == 0


def test_the_kept_total_is_always_the_sum_over_the_window() -> None:
    """WindowCount keeps its total between calls; 5,000 random adds, totals and prunes,
    with the clock going forward, standing still and stepping back, against a plain sum."""
    rng = random.Random(20)
    count = WindowCount(60)  # buckets of 1 s: the window moves often
    events: list[tuple[float, int]] = []
    now = 1_000.0
    for _ in range(5_000):
        now = max(0.0, now + rng.choice([0.0, 0.3, 1.0, 7.0, -5.0, -90.0, 70.0]))
        op = rng.random()
        if op < 0.5:
            n = rng.randint(1, 3)
            count.add(now, n)
            events.append((now, n))
        elif op < 0.9:
            first = int(now) - 60
            assert count.total(now) == sum(n for at, n in events if int(at) >= first)
        else:
            count.prune(now)
            events = [(at, n) for at, n in events if int(at) >= int(now) - 60]


def test_a_clock_that_steps_back_never_lets_events_fall_out_early() -> None:
    count = WindowCount(600)
    count.add(10_000.0, 5)
    assert count.total(10_000.0 - 3600) == 5  # an hour back: the "future" events count
    assert not count.prune(10_000.0 - 3600)
    count.add(10_000.0 - 3600, 2)
    assert count.total(10_000.0) == 5  # an hour later the older ones are gone
    clients = WindowSet(600)
    clients.add(10_000.0, "192.0.2.1")
    clients.add(9_000.0, "192.0.2.1")  # the clock stepped back: the newer bucket stays
    assert clients.keys(10_500.0) == {"192.0.2.1"}


def test_distinct_clients_ipv6_by_64() -> None:
    clients = WindowSet(3600)
    for text in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9", "2001:db8:1:3::1", "192.0.2.7"):
        clients.add(500.0, client_key(ipaddress.ip_address(text)))
    assert clients.keys(500.0) == {"2001:db8:1:2::/64", "2001:db8:1:3::/64", "192.0.2.7"}
    assert clients.prune(500.0 + 3600 + 61)


# --- per-domain resolution -----------------------------------------------------


def _snapshot() -> Snapshot:
    return Snapshot.build(
        {"login-max-messages": "50/1h"},
        {
            "example.com": {"login-max-messages": "5/1m", "login-limit-action": "freeze"},
            "x.org": {},
        },
        NetworkSet.of(()),
        [],
    )


def test_limits_come_from_the_logins_domain_else_global() -> None:
    snapshot = _snapshot()
    com = limits_of(snapshot.settings_for("example.com") or snapshot.global_settings)
    assert dict(com.limits)[LimitKind.MESSAGES] == Limit(5, 60)
    assert com.action == "freeze"
    glob = limits_of(snapshot.global_settings)
    assert dict(glob.limits)[LimitKind.MESSAGES] == Limit(50, 3600)
    assert dict(glob.limits)[LimitKind.RECIPIENTS] == Limit(1000, 3600)  # the default
    assert login_domain("alice@Example.COM") == "example.com"
    assert login_domain("alice") is None


def test_a_limit_that_is_off_is_not_held() -> None:
    limits = limits_of(Settings.resolve({"login-max-messages": "off"}))
    assert LimitKind.MESSAGES not in dict(limits.limits)
    assert limits.window(LimitKind.MESSAGES) == 0
    assert judge(limits, Counts(messages=10**6), Event(True, True)).outcome is Outcome.PASS


# --- verdicts --------------------------------------------------------------------


def _limits(**values: str) -> LoginLimits:
    base = {
        "login-max-messages": "3/1h",
        "login-max-recipients": "5/1h",
        "login-max-client-ips": "2/1h",
        "login-max-mismatches": "2/10m",
    }
    return limits_of(Settings.resolve(base | values))


def test_the_first_message_over_the_limit_is_tempfailed() -> None:
    limits = _limits()
    assert judge(limits, Counts(messages=2), Event(True, True)).outcome is Outcome.PASS
    verdict = judge(limits, Counts(messages=3), Event(True, True))
    assert (verdict.outcome, verdict.limit, verdict.count) == (
        Outcome.TEMPFAIL,
        LimitKind.MESSAGES,
        4,
    )
    assert verdict.reply is not None and verdict.reply.code == 452
    # a second recipient of a message already counted does not count the message again
    assert judge(limits, Counts(messages=3, recipients=1), Event(True, False)).outcome is (
        Outcome.PASS
    )


def test_recipients_and_client_ips() -> None:
    limits = _limits()
    assert judge(limits, Counts(recipients=5), Event(True)).limit is LimitKind.RECIPIENTS
    assert judge(limits, Counts(client_ips=2), Event(True)).outcome is Outcome.PASS
    over = judge(limits, Counts(client_ips=2, new_client=True), Event(True))
    assert (over.limit, over.count) == (LimitKind.CLIENT_IPS, 3)


def test_mismatches_freeze_on_the_one_over_the_limit() -> None:
    limits = _limits(**{"login-limit-action": "freeze"})
    assert judge(limits, Counts(mismatches=1), Event(False, mismatch=True)).outcome is (
        Outcome.PASS
    )
    verdict = judge(limits, Counts(mismatches=2), Event(False, mismatch=True))
    assert (verdict.outcome, verdict.limit, verdict.count) == (
        Outcome.FREEZE,
        LimitKind.MISMATCHES,
        3,
    )
    assert verdict.reply is not None and verdict.reply.code == 550


def test_mismatches_with_tempfail_leave_the_policys_refusal_and_hold_later_mail() -> None:
    limits = _limits()
    assert judge(limits, Counts(mismatches=2), Event(False, mismatch=True)).outcome is (
        Outcome.PASS
    )
    assert judge(limits, Counts(mismatches=3), Event(True, True)).outcome is Outcome.TEMPFAIL
    # a refusal that is not a mismatch adds nothing
    assert judge(limits, Counts(messages=99), Event(False)).outcome is Outcome.PASS


def test_dry_run_says_what_it_would_do() -> None:
    tempfail = _limits(**{"dry-run": "on"})
    assert judge(tempfail, Counts(messages=3), Event(True, True)).outcome is (
        Outcome.WOULD_TEMPFAIL
    )
    freeze = _limits(**{"dry-run": "on", "login-limit-action": "freeze"})
    verdict = judge(freeze, Counts(messages=3), Event(True, True))
    assert verdict.outcome is Outcome.WOULD_FREEZE and not verdict.outcome.refuses


def test_a_frozen_login_is_refused_also_in_dry_run() -> None:
    verdict = frozen_verdict(_limits(**{"dry-run": "on"}))
    assert verdict.outcome is Outcome.FROZEN and verdict.outcome.refuses
    assert verdict.reply is not None and not verdict.reply.temporary


# --- where limits meet the policy ------------------------------------------------


def test_only_authenticated_decisions_outside_trusted_networks_count() -> None:
    client = ipaddress.ip_address("192.0.2.9")
    ok = Verdict(Action.CONTINUE, Rule.SENDER_OWNED)
    assert counted_login(Request(client, " Alice@Example.com ", "<a@example.com>"), ok) == (
        "alice@example.com"
    )
    assert counted_login(Request(client, None, "<a@example.com>"), ok) is None
    trusted = Verdict(Action.CONTINUE, Rule.TRUSTED_NETWORK)
    assert counted_login(Request(client, "alice", "<a@example.com>"), trusted) is None
    stale = Verdict(Action.TEMPFAIL, Rule.NO_SETTINGS)
    assert counted_login(Request(client, "alice", "<a@example.com>"), stale) is None


def test_a_limit_never_turns_a_refusal_into_an_accept() -> None:
    refused = Verdict(Action.REJECT, Rule.SENDER_MISMATCH, domain="example.com")
    limits = _limits(**{"dry-run": "on", "login-limit-action": "freeze"})
    would = judge(limits, Counts(mismatches=2), event_of(refused, False))
    assert would.outcome is Outcome.WOULD_FREEZE
    assert combined(refused, would) is refused
    frozen = combined(refused, frozen_verdict(limits))
    assert (frozen.action, frozen.rule) == (Action.REJECT, Rule.LOGIN_FROZEN)
    over = combined(
        Verdict(Action.CONTINUE, Rule.SENDER_OWNED),
        judge(_limits(), Counts(messages=3), Event(True, True)),
    )
    assert (over.action, over.rule) == (Action.TEMPFAIL, Rule.LOGIN_MAX_MESSAGES)


def test_doctor_warns_where_limits_are_off_while_logins_must_own_their_senders() -> None:
    snapshot = Snapshot.build(
        {"require-sender-match": "on", "login-max-mismatches": "off"},
        {
            "example.com": {"login-max-messages": "off", "login-max-recipients": "off"},
            "example.org": {},
            "example.net": {"require-sender-match": "off", "login-max-messages": "off"},
        },
        NetworkSet.of(()),
        [],
    )
    lines = [finding.line() for finding in check_login_limits(snapshot)]
    assert lines == [
        "warning: login-max-mismatches is off globally while require-sender-match is on: "
        "a stolen password could send without limit — fix: smtpauth-milter settings unset "
        "login-max-mismatches (the default: 20/1h)",
        "warning: login-max-messages, login-max-recipients, login-max-mismatches are off for "
        "example.com while require-sender-match is on: a stolen password could send without "
        "limit — fix: smtpauth-milter settings unset --domain example.com login-max-messages "
        "(the default: 200/1h)",
    ]
    assert check_login_limits(_snapshot()) == []
