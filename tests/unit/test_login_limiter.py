"""The login limiter on the hot path: counting in memory, each action, dry run, exemptions,
trusted networks, the site-wide counts read back, an outage (docs/policy.md#stolen-logins)."""

from __future__ import annotations

import dataclasses
import ipaddress
import threading
from collections.abc import Callable, Iterator

import Milter
import pytest
from Milter.testctx import TestCtx as MilterTestCtx

from smtpauth_milter.core.networks import NetworkSet, parse_cidr
from smtpauth_milter.core.policy import Action, Request, Rule, Verdict, decide
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.daemon import logins
from smtpauth_milter.daemon.logins import LoginLimiter
from smtpauth_milter.daemon.metrics import Metrics
from smtpauth_milter.daemon.milter import SmtpAuthMilter
from smtpauth_milter.daemon.refresh import SnapshotCache
from smtpauth_milter.lookups.spf import SpfChecks
from smtpauth_milter.store.loginstate import FrozenState, Readback
from tests.support.clock import Clock
from tests.support.fixedsource import FixedSource

T0 = 1_800_000_000.0


def snapshot(domain: dict[str, str] | None = None, **global_values: str) -> Snapshot:
    values = {"require-sender-match": "on"} | {
        key.replace("_", "-"): value for key, value in global_values.items()
    }
    return Snapshot.build(
        values,
        {"example.com": domain or {}},
        NetworkSet.of([parse_cidr("192.0.2.0/24")]),
        [],
        serial=1,
    )


def send(
    limiter: LoginLimiter,
    snap: Snapshot,
    login: str = "alice@example.com",
    sender: str = "<alice@example.com>",
    rcpts: int = 1,
    client: str = "203.0.113.9",
) -> list[Verdict]:
    """One message: its recipients' verdicts, as the milter would apply them."""
    request = Request(ipaddress.ip_address(client), login, sender)
    counted, verdicts = False, []
    for n in range(rcpts):
        verdict = decide(snap, request, f"<r{n}@remote.test>")
        verdict = limiter.apply(snap, request, verdict, not counted)
        counted = counted or not verdict.refuses
        verdicts.append(verdict)
    return verdicts


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def limiter(clock: Clock) -> LoginLimiter:
    return LoginLimiter("milter@test", clock)


def test_the_message_over_the_limit_is_tempfailed_until_the_window_allows(
    limiter: LoginLimiter, clock: Clock
) -> None:
    snap = snapshot(login_max_messages="3/1m")
    for _ in range(3):
        assert send(limiter, snap, rcpts=2)[1].action is Action.CONTINUE
    over = send(limiter, snap)[0]
    assert (over.action, over.rule) == (Action.TEMPFAIL, Rule.LOGIN_MAX_MESSAGES)
    assert over.reply is not None and over.reply.code == 452
    assert send(limiter, snap, login="bob@example.com", sender="<bob@example.com>")[0].action is (
        Action.CONTINUE
    ), "another login is not held back"
    clock.now += 61  # the window and one bucket later
    assert send(limiter, snap)[0].action is Action.CONTINUE


def test_freeze_refuses_every_later_message_until_unfrozen(
    limiter: LoginLimiter, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    snap = snapshot({"login-max-recipients": "2/1h", "login-limit-action": "freeze"})
    assert [v.action for v in send(limiter, snap, rcpts=3)] == [
        Action.CONTINUE,
        Action.CONTINUE,
        Action.REJECT,
    ]
    assert "event=login-frozen login=alice@example.com limit=login-max-recipients count=3" in (
        caplog.text
    )
    clock.now += 7200  # frozen until unfrozen, whatever the window says
    frozen = send(limiter, snap, client="198.51.100.1")[0]
    assert (frozen.action, frozen.rule) == (Action.REJECT, Rule.LOGIN_FROZEN)
    assert frozen.reply is not None and frozen.reply.code == 550
    assert limiter.frozen_count() == 1
    batch = limiter.take()
    assert set(batch.freezes) == {"alice@example.com"}
    stored = FrozenState(None, None, "login-max-recipients", 3)
    limiter.absorb(Readback({}, {}, {"alice@example.com": stored}), batch, clock.now)
    assert send(limiter, snap)[0].rule is Rule.LOGIN_FROZEN
    unfrozen = FrozenState(None, "root", "login-max-recipients", 3)
    told = limiter.absorb(
        Readback({}, {}, {"alice@example.com": unfrozen}), limiter.take(), clock.now
    )
    assert told == [("alice@example.com", "root")]
    assert send(limiter, snap)[0].action is Action.CONTINUE, "counts start afresh"


def test_mismatches_freeze_the_login(limiter: LoginLimiter) -> None:
    snap = snapshot(login_max_mismatches="10/10m", login_limit_action="freeze")
    for _ in range(10):
        assert send(limiter, snap, sender="<boss@example.com>")[0].rule is Rule.SENDER_MISMATCH
    eleventh = send(limiter, snap, sender="<boss@example.com>")[0]
    assert (eleventh.action, eleventh.rule) == (Action.REJECT, Rule.LOGIN_MAX_MISMATCHES)
    assert send(limiter, snap)[0].rule is Rule.LOGIN_FROZEN, "its own sender too"


def test_client_addresses_ipv6_by_64(limiter: LoginLimiter) -> None:
    snap = snapshot(login_max_client_ips="2/1h")
    assert send(limiter, snap, client="2001:db8:0:1::1")[0].action is Action.CONTINUE
    assert send(limiter, snap, client="2001:db8:0:1::ffff")[0].action is Action.CONTINUE
    assert send(limiter, snap, client="198.51.100.7")[0].action is Action.CONTINUE
    third = send(limiter, snap, client="2001:db8:0:2::1")[0]
    assert third.rule is Rule.LOGIN_MAX_CLIENT_IPS
    assert send(limiter, snap, client="198.51.100.7")[0].action is Action.CONTINUE


def test_dry_run_logs_would_and_refuses_nothing(limiter: LoginLimiter) -> None:
    snap = snapshot({"dry-run": "on", "login-max-messages": "1/1h", "login-limit-action": "freeze"})
    send(limiter, snap)
    would = send(limiter, snap)[0]
    assert (would.action, would.rule) == (Action.WOULD_REJECT, Rule.LOGIN_MAX_MESSAGES)
    assert limiter.frozen_count() == 0 and not limiter.take().freezes


def test_exempt_logins_trusted_networks_and_anonymous_mail_are_not_counted(
    limiter: LoginLimiter,
) -> None:
    snap = dataclasses.replace(
        snapshot(login_max_messages="1/1h"), exempt_logins=frozenset({"lists@example.com"})
    )
    for _ in range(3):
        assert send(limiter, snap, "Lists@Example.com", "<lists@example.com>")[0].action is (
            Action.CONTINUE
        )
        assert send(limiter, snap, client="192.0.2.5")[0].rule is Rule.TRUSTED_NETWORK
        assert send(limiter, snap, login=None, sender="<x@remote.test>")[0].action is (
            Action.CONTINUE
        )
    assert limiter.take().counts == {}
    assert send(limiter, snap)[0].action is Action.CONTINUE


def test_bare_logins_use_the_global_limits(limiter: LoginLimiter) -> None:
    snap = snapshot({"login-max-messages": "100/1h"}, login_max_messages="1/1h")
    send(limiter, snap, login="alice", sender="<x@remote.test>")
    assert send(limiter, snap, login="alice", sender="<x@remote.test>")[0].rule is (
        Rule.LOGIN_MAX_MESSAGES
    )


def test_other_milters_counts_add_up_and_an_outage_falls_back_to_this_ones(
    limiter: LoginLimiter, clock: Clock
) -> None:
    snap = snapshot(login_max_messages="10/1h")
    send(limiter, snap)
    batch = limiter.take()
    assert batch.counts == {
        ("alice@example.com", "messages", 60, int(T0) // 60): 1,
        ("alice@example.com", "recipients", 60, int(T0) // 60): 1,  # the default 1000/1h
    }
    others = Readback({("alice@example.com", "messages", 60): 10}, {}, {})
    limiter.absorb(others, batch, clock.now)
    assert send(limiter, snap)[0].rule is Rule.LOGIN_MAX_MESSAGES
    clock.now += 11  # no exchange since: the site-wide count is stale, this milter's own is 1
    assert send(limiter, snap)[0].action is Action.CONTINUE
    failed = limiter.take()
    limiter.give_back(failed, clock.now)
    assert limiter.take().counts == failed.counts, "kept for the next exchange"


def test_absorb_merges_the_logins_read_back_each_with_its_read_time(
    limiter: LoginLimiter, clock: Clock
) -> None:
    """An exchange reads back only its batch's logins: those replace what was known of
    them, the others keep their last site-wide count until it is stale (per login)."""
    snap = snapshot(login_max_messages="10/1h")
    alice, bob = "alice@example.com", "bob@example.com"
    both = {(alice, "messages", 60): 10, (bob, "messages", 60): 10}
    limiter.absorb(Readback(both, {}, {}, frozenset({alice, bob})), limiter.take(), clock.now)
    clock.now += 5
    limiter.absorb(
        Readback({(bob, "messages", 60): 2}, {}, {}, frozenset({bob})), limiter.take(), clock.now
    )
    assert send(limiter, snap)[0].rule is Rule.LOGIN_MAX_MESSAGES, "alice kept her count"
    assert send(limiter, snap, login=bob, sender="<bob@example.com>")[0].action is (
        Action.CONTINUE
    ), "bob's was updated"
    read = limiter.take()
    assert read.logins() >= {alice, bob}, "both judged: both read back next"
    limiter.absorb(Readback({}, {}, {}, frozenset({bob})), read, clock.now)  # bob: none left
    clock.now += 6  # alice's count is 11 s old: stale; bob's (read 6 s ago) is not
    assert send(limiter, snap)[0].action is Action.CONTINUE, "alice counted on her own"
    assert limiter.site_logins() == 2


def test_a_login_refused_for_a_limit_is_read_back_every_exchange(
    limiter: LoginLimiter, clock: Clock
) -> None:
    """Held back here, it sends nothing here: without this its site-wide count would go
    stale and the next try after a pause would be counted on its own (docs/policy.md)."""
    snap = snapshot(login_max_messages="2/1h")
    for _ in range(3):
        send(limiter, snap)
    assert "alice@example.com" in limiter.take().logins()
    clock.now += 60
    assert limiter.take().logins() == {"alice@example.com"}, "no event, still read back"
    limiter.prune(clock.now + 3600 + 60)
    assert limiter.take().logins() == set(), "forgotten with the login"


def test_pruning_and_unfreezing_forget_the_site_wide_counts(
    limiter: LoginLimiter, clock: Clock
) -> None:
    snap = snapshot(login_max_messages="10/1h")
    logins = [f"u{n}@example.com" for n in range(20)]
    for login in logins:
        send(limiter, snap, login=login, sender=f"<{login}>")
    batch = limiter.take()
    counts = {(login, "messages", 60): 1 for login in logins}
    frozen = {logins[0]: FrozenState(None, None)}
    limiter.absorb(Readback(counts, {}, frozen, frozenset(batch.logins())), batch, clock.now)
    assert limiter.site_logins() == 20
    unfrozen = {logins[0]: FrozenState(None, "admin")}
    limiter.absorb(Readback({}, {}, unfrozen, frozenset()), limiter.take(), clock.now)
    assert limiter.site_logins() == 19, "the store forgot an unfrozen login's counts"
    limiter.prune(clock.now + 10)
    assert (limiter.active_logins(), limiter.site_logins()) == (19, 19)
    limiter.prune(clock.now + 11)  # read 11 s ago: stale, never used again
    assert (limiter.active_logins(), limiter.site_logins()) == (19, 0)
    limiter.prune(clock.now + 3600 + 60)
    assert (limiter.active_logins(), limiter.site_logins()) == (0, 0)


def test_pruning_lets_go_of_the_lock_between_chunks_of_logins(
    limiter: LoginLimiter, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libmilter's threads wait for one chunk of a prune at most, not for every login."""
    monkeypatch.setattr(logins, "PRUNE_CHUNK", 10)
    snap = snapshot(login_max_messages="10/1h")
    for n in range(35):
        send(limiter, snap, login=f"u{n}@example.com", sender=f"<u{n}@example.com>")

    class Recording:  # the lock, and how many logins each hold of it forgot
        def __init__(self) -> None:
            self.lock = threading.Lock()
            self.forgot: list[int] = []

        def __enter__(self) -> None:
            self.lock.acquire()
            self.before = limiter.active_logins()

        def __exit__(self, *exc: object) -> None:
            self.forgot.append(self.before - limiter.active_logins())
            self.lock.release()

    recording = Recording()
    limiter._lock = recording  # type: ignore[assignment]
    limiter.prune(clock.now + 3600 + 60)
    assert limiter.active_logins() == 0
    assert sorted(recording.forgot, reverse=True)[:4] == [10, 10, 10, 5]


def test_counts_on_their_way_to_the_store_still_count(limiter: LoginLimiter, clock: Clock) -> None:
    """While the login-sync thread writes a batch (between take and absorb) its counts are
    neither pending nor in the site-wide count read back: they must count all the same."""
    snap = snapshot(login_max_messages="5/1h")
    others = Readback({("alice@example.com", "messages", 60): 2}, {}, {})  # another milter's
    limiter.absorb(others, limiter.take(), clock.now)
    for _ in range(2):
        assert send(limiter, snap)[0].action is Action.CONTINUE
    batch = limiter.take()  # the exchange begins: these two are on their way
    assert send(limiter, snap)[0].action is Action.CONTINUE, "the fifth in the hour"
    assert send(limiter, snap)[0].rule is Rule.LOGIN_MAX_MESSAGES, "the sixth, site-wide"
    limiter.give_back(batch, clock.now)  # the exchange failed: pending again, counted once
    assert send(limiter, snap)[0].rule is Rule.LOGIN_MAX_MESSAGES
    kept = limiter.take().counts
    assert kept[("alice@example.com", "messages", 60, int(T0) // 60)] == 3, "each one once"


def test_frozen_logins_stay_frozen_through_an_outage(limiter: LoginLimiter, clock: Clock) -> None:
    snap = snapshot()
    limiter.absorb(
        Readback({}, {}, {"alice@example.com": FrozenState(None, None)}), limiter.take(), T0
    )
    clock.now += 3600  # no exchange for an hour
    assert send(limiter, snap)[0].rule is Rule.LOGIN_FROZEN


def test_memory_is_pruned(limiter: LoginLimiter, clock: Clock) -> None:
    snap = snapshot(login_max_messages="10/1m", login_max_client_ips="5/1m")
    for n in range(50):
        send(limiter, snap, login=f"u{n}@example.com", sender=f"<u{n}@example.com>")
    assert limiter.active_logins() == 50
    limiter.prune(clock.now + 62)
    assert limiter.active_logins() == 50, "the default 1000/1h recipients still count them"
    limiter.prune(clock.now + 3600 + 60)
    assert limiter.active_logins() == 0


# --- through the adapter (pymilter's TestCtx) --------------------------------------


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Snapshot], MilterTestCtx]]:
    monkeypatch.setattr(MilterTestCtx, "default_opts", list(MilterTestCtx.default_opts))
    limiter = LoginLimiter("milter@test")

    def start(snap: Snapshot) -> MilterTestCtx:
        cache = SnapshotCache(FixedSource(snap), max_stale=300)
        cache.refresh()
        spf = SpfChecks()
        monkeypatch.setattr(Milter, "factory", lambda: SmtpAuthMilter(cache, spf, limiter=limiter))
        ctx = MilterTestCtx()
        ctx._opts = list(MilterTestCtx.default_opts)
        assert ctx._connect(ip="203.0.113.9") == Milter.CONTINUE
        return ctx

    yield start


def test_the_milter_counts_a_message_once_and_tempfails_the_one_over(
    session: Callable[[Snapshot], MilterTestCtx],
) -> None:
    ctx = session(snapshot(login_max_messages="2/1h"))
    for _ in range(2):
        ctx._macros.clear()
        ctx._setsymval("{auth_authen}", "alice@example.com")
        assert ctx._envfrom("<alice@example.com>") == Milter.CONTINUE
        assert ctx._envrcpt("<a@remote.test>") == Milter.CONTINUE
        assert ctx._envrcpt("<b@remote.test>") == Milter.CONTINUE
    ctx._macros.clear()
    ctx._setsymval("{auth_authen}", "alice@example.com")
    ctx._envfrom("<alice@example.com>")
    assert ctx._envrcpt("<a@remote.test>") == Milter.TEMPFAIL
    assert ctx._reply == ("452", "4.7.1", "Too much mail from this login, try again later")


def test_unwritten_counts_kept_through_an_outage_are_bounded(
    limiter: LoginLimiter, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("smtpauth_milter.daemon.logins.MAX_KEPT", 10)
    snap = snapshot(login_max_messages="1/1h")
    for n in range(8):
        send(limiter, snap, login=f"u{n}@example.com", sender=f"<u{n}@example.com>")
    limiter.give_back(limiter.take(), clock.now)  # 16 counts: more than 10 kept
    assert limiter.take().counts == {}
    assert send(limiter, snap, login="u0@example.com", sender="<u0@example.com>")[0].action is (
        Action.TEMPFAIL
    ), "this milter still counts them in its own windows"


def test_a_header_from_the_login_does_not_own_counts_as_a_mismatch(limiter: LoginLimiter) -> None:
    snap = snapshot(
        require_header_from_match="on", login_max_mismatches="1/1h", login_limit_action="freeze"
    )
    request = Request(ipaddress.ip_address("203.0.113.9"), "alice@example.com", "<a@example.com>")
    refused = Verdict(Action.REJECT, Rule.HEADER_FROM_MISMATCH, domain="example.com")
    assert limiter.apply_header(snap, request, refused, None) is refused
    frozen = limiter.apply_header(snap, request, refused, None)
    assert (frozen.action, frozen.rule) == (Action.REJECT, Rule.LOGIN_MAX_MISMATCHES)
    owned = Verdict(Action.CONTINUE, Rule.HEADER_FROM_OWNED)
    assert limiter.apply_header(snap, request, owned, None) is owned, "checked at RCPT, not here"


def test_metrics_count_what_a_limit_did_and_nothing_else(limiter: LoginLimiter) -> None:
    metrics = Metrics()
    snap = dataclasses.replace(
        snapshot(login_max_messages="1/1h"), exempt_logins=frozenset({"lists@example.com"})
    )
    request = Request(ipaddress.ip_address("203.0.113.9"), "alice@example.com", "<alice@x.test>")
    lists = Request(request.client, "lists@example.com", "<lists@x.test>")
    ok = Verdict(Action.CONTINUE, Rule.NON_LOCAL_SENDER)
    for _ in range(3):
        limiter.apply(snap, request, ok, True, metrics)
        limiter.apply(snap, lists, ok, True, metrics)
    value = metrics.registry.get_sample_value
    labels = {"limit": "login-max-messages", "action": "tempfail"}
    assert value("smtpauth_milter_login_limit_total", labels) == 2
    assert value("smtpauth_milter_frozen_logins") == 0
    samples = [s for m in metrics.registry.collect() for s in m.samples]
    assert {s.labels.get("action") for s in samples if "login_limit" in s.name} == {"tempfail"}
