"""decide() with sender-login-maps: pure, the map answer is an input."""

from __future__ import annotations

from smtpauth_milter.core.networks import NetworkSet, parse_cidr
from smtpauth_milter.core.ownermaps import NOT_FOUND, failed, found
from smtpauth_milter.core.ownership import map_lookup_sender
from smtpauth_milter.core.policy import Action, Request, Rule, decide
from smtpauth_milter.core.snapshot import Snapshot

MAPS = "texthash:/etc/postfix/owners"


def snap(maps: str = MAPS, **domain: str) -> Snapshot:
    values = {"require-sender-match": "on", "sender-login-maps": maps}
    return Snapshot.build(
        values,
        {"example.com": dict(domain), "example.net": {"require-sender-match": "off"}},
        NetworkSet.of([parse_cidr("192.0.2.0/24")]),
        [],
    )


ALICE = Request(None, "alice@example.com", "<sales@example.com>")


def test_lookup_needed_only_when_it_could_change_the_verdict() -> None:
    s = snap()
    assert map_lookup_sender(s, ALICE) is not None
    assert map_lookup_sender(snap(maps=""), ALICE) is None  # no maps
    assert map_lookup_sender(s, Request(None, "alice@example.com", "<alice@example.com>")) is None
    # A sub-address is asked too: the maps may name its full address (docs/policy.md#sub-addresses)
    assert map_lookup_sender(s, Request(None, "alice@example.com", "<alice+x@example.com>"))
    assert map_lookup_sender(s, Request(None, None, "<sales@example.com>")) is None
    assert map_lookup_sender(s, Request(None, "alice@example.com", "<>")) is None
    assert map_lookup_sender(s, Request(None, "alice@example.com", "<x@remote.test>")) is None
    assert map_lookup_sender(s, Request(None, "alice@example.com", "<x@example.net>")) is None
    trusted = Request(
        parse_cidr("192.0.2.1/32").network_address, "a@example.com", "<s@example.com>"
    )
    assert map_lookup_sender(s, trusted) is None


def test_map_owner_continues_and_says_which_map_and_key() -> None:
    answer = found(MAPS, "sales@example.com", "bob@example.com, ALICE@example.com")
    verdict = decide(snap(), ALICE, "<x@remote.test>", answer)
    assert (verdict.action, verdict.rule) == (Action.CONTINUE, Rule.SENDER_OWNED)
    assert (verdict.owned_by, verdict.owner_key) == (MAPS, "sales@example.com")


def test_built_in_form_is_named() -> None:
    verdict = decide(
        snap(), Request(None, "alice@example.com", "<alice@example.com>"), "<x@y.test>"
    )
    assert verdict.owned_by == "login"


def test_other_owner_or_no_owner_is_a_mismatch() -> None:
    for answer in (found(MAPS, "sales@example.com", "bob@example.com"), NOT_FOUND):
        verdict = decide(snap(), ALICE, "<x@remote.test>", answer)
        assert (verdict.action, verdict.rule) == (Action.REJECT, Rule.SENDER_MISMATCH)
        assert verdict.reply is not None and verdict.reply.code == 553


def test_failed_or_missing_answer_fails_closed_with_tempfail_reply() -> None:
    s = snap()
    for answer in (failed("postmap: fatal: open database"), None):
        verdict = decide(s, ALICE, "<x@remote.test>", answer)
        assert (verdict.action, verdict.rule) == (Action.TEMPFAIL, Rule.SENDER_MAP_FAILED)
        assert verdict.reply == s.global_settings.tempfail_reply


def test_failed_map_in_dry_run_only_logs() -> None:
    verdict = decide(snap(**{"dry-run": "on"}), ALICE, "<x@remote.test>", failed("down"))
    assert verdict.action is Action.WOULD_TEMPFAIL
