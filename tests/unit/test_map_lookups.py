"""Map sources and the cached, bounded, fail-closed ownership lookup.

Postfix tables are read with the real ``postmap`` (a private main.cf via
``postmap -c DIR``, as postfix-config-dir sets it); the order and cache tests use in-memory sources and the
injected clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from smtpauth_milter.core.addresses import Address
from smtpauth_milter.core.ownermaps import MapOutcome, MapSpec, parse_map_spec
from smtpauth_milter.lookups.keys import Probe
from smtpauth_milter.lookups.ownership import Ownership, Rules, find_owners
from smtpauth_milter.lookups.postfix import MapError, PostfixTable
from smtpauth_milter.lookups.runner import LookupRunner
from tests.harness.mta.postfix import write_settled
from tests.support.clock import Clock


@pytest.fixture
def postfix_dir(tmp_path: Path) -> str:
    conf = tmp_path / "pf"
    conf.mkdir()
    write_settled(conf / "main.cf", "compatibility_level = 3.6\n")
    return str(conf)


class Dict:
    """An in-memory map that counts the keys it was asked."""

    def __init__(self, name: str, table: dict[str, str], fail: str | None = None) -> None:
        self.name = name
        self.table = table
        self.fail = fail
        self.asked: list[list[str]] = []

    def first(self, probes: Sequence[Probe], seconds: float) -> tuple[str, str] | None:
        self.asked.append([p.key for p in probes])
        if self.fail:
            raise MapError(self.fail)
        return next(((p.key, self.table[p.key]) for p in probes if p.key in self.table), None)


def probes(*keys: str) -> list[Probe]:
    return [Probe(k, i > 0) for i, k in enumerate(keys)]


def test_key_major_order_the_earlier_key_wins_over_the_earlier_map() -> None:
    a = Dict("a", {"@d": "from-a"})
    b = Dict("b", {"u@d": "from-b"})
    answer = find_owners([a, b], probes("u@d", "@d"), 5)
    assert (answer.map, answer.key, answer.owners) == ("b", "u@d", ("from-b",))
    assert b.asked == [["u@d"]]  # b is asked only for keys before a's answer


def test_same_key_the_earlier_map_wins_and_later_maps_are_not_asked() -> None:
    a, b = Dict("a", {"u@d": "x"}), Dict("b", {"u@d": "y"})
    assert find_owners([a, b], probes("u@d", "@d"), 5).map == "a"
    assert b.asked == []


def test_texthash_through_real_postmap(tmp_path: Path, postfix_dir: str) -> None:
    table = tmp_path / "owners"
    table.write_text(
        'Bob@Example.COM  bob, BobAdmin\n@shared.example team1,team2\n"john doe"@x.test jd\n'
    )
    source = PostfixTable(MapSpec("texthash", str(table)), postfix_dir)
    assert source.first(probes("bob@example.com", "@example.com"), 5) == (
        "bob@example.com",
        "bob, BobAdmin",
    )
    assert source.first(probes("x@shared.example", "@shared.example"), 5) == (
        "@shared.example",
        "team1,team2",
    )
    assert source.first(probes('"john doe"@x.test'), 5) == ('"john doe"@x.test', "jd")
    assert source.first(probes("nobody@nowhere.test", "@nowhere.test"), 5) is None


def test_pattern_tables_see_only_the_full_address(tmp_path: Path, postfix_dir: str) -> None:
    table = tmp_path / "owners.regexp"
    table.write_text("/^@example\\.com$/ everybody\n/^(.+)@example\\.com$/ $1@example.com\n")
    source = PostfixTable(MapSpec("regexp", str(table)), postfix_dir)
    assert source.first(probes("alice+x@example.com", "alice@example.com", "@example.com"), 5) == (
        "alice+x@example.com", "alice+x@example.com",
    )  # fmt: skip
    assert source.first([Probe("@example.com", True)], 5) is None


def test_missing_table_or_broken_postfix_is_an_error_not_a_miss(
    tmp_path: Path, postfix_dir: str
) -> None:
    gone = PostfixTable(MapSpec("texthash", str(tmp_path / "gone")), postfix_dir)
    with pytest.raises(MapError, match="fatal: open database"):
        gone.first(probes("a@b.test"), 5)
    table = tmp_path / "t"
    table.write_text("a@b.test a\n")
    no_main_cf = PostfixTable(MapSpec("texthash", str(table)), str(tmp_path / "none"))
    with pytest.raises(MapError, match=r"main\.cf"):
        no_main_cf.first(probes("a@b.test"), 5)


def test_postmap_that_hangs_is_cut_at_its_timeout(tmp_path: Path) -> None:
    hang = tmp_path / "postmap"
    hang.write_text("#!/bin/sh\nexec sleep 30\n")
    hang.chmod(0o755)
    source = PostfixTable(MapSpec("texthash", "/x"), postmap=str(hang))
    with pytest.raises(MapError, match=r"no answer within 0\.3 s"):
        source.first(probes("a@b.test"), 0.3)


def ownership(sources: list[Dict], clock: Clock, ttl: float = 60) -> Ownership:
    rules = Rules("+", frozenset())
    return Ownership(sources, rules, ttl, 5, runner=LookupRunner("t"), clock=clock)


SALES = Address("sales", "example.com")


def test_answers_positive_and_negative_are_cached_for_the_ttl() -> None:
    clock = Clock()
    source = Dict("m", {"sales@example.com": "alice@example.com"})
    maps = ownership([source], clock, ttl=10)
    assert maps.answer(SALES).owned_by("alice@example.com")
    assert maps.answer(Address("x", "example.com")).outcome is MapOutcome.NOT_FOUND
    source.table = {"x@example.com": "bob"}  # the outside data changes
    clock.now += 9
    assert maps.answer(SALES).owned_by("alice@example.com")  # still cached
    assert maps.answer(Address("x", "example.com")).outcome is MapOutcome.NOT_FOUND
    assert len(source.asked) == 2
    clock.now += 1.5
    assert maps.answer(SALES).outcome is MapOutcome.NOT_FOUND  # removed alias refused
    assert maps.answer(Address("x", "example.com")).owned_by("bob")  # new alias honoured


def test_failure_is_a_failed_answer_logged_once_per_interval_and_never_cached(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    source = Dict("m", {"sales@example.com": "alice"}, fail="postmap: fatal: open database")
    maps = ownership([source], clock)
    with caplog.at_level(logging.WARNING, "smtpauth_milter"):
        for _ in range(3):
            answer = maps.answer(SALES)
            assert answer.outcome is MapOutcome.FAILED and "open database" in (answer.error or "")
        clock.now += 61
        maps.answer(SALES)
        source.fail = None
        assert maps.answer(SALES).owned_by("alice")  # recovers by itself
    lines = [r.getMessage() for r in caplog.records]
    assert sum("event=map-unreadable map=m" in line for line in lines) == 2
    assert sum("event=map-recovered map=m" in line for line in lines) == 1


def test_a_hung_map_costs_the_caller_only_the_deadline() -> None:
    release = threading.Event()

    class Hung(Dict):
        def first(self, probes: Sequence[Probe], seconds: float) -> tuple[str, str] | None:
            release.wait(10)
            return None

    maps = Ownership([Hung("h", {})], Rules("+", frozenset()), 60, 0.2, runner=LookupRunner("t"))
    try:
        answer = maps.answer(SALES)
        assert answer.outcome is MapOutcome.FAILED and "no answer within 0.7 s" in (
            answer.error or ""
        )
    finally:
        release.set()


def test_map_spec_shapes() -> None:
    assert parse_map_spec("TEXTHASH:/etc/postfix/x").text == "texthash:/etc/postfix/x"
    for bad, why in (
        ("texthash", "TYPE:/path"), ("nosuch:/x", "unknown type"), ("hash:relative", "absolute"),
        ("proxy:mysql:/etc/x.cf", "proxy"),
    ):  # fmt: skip
        with pytest.raises(Exception, match=why):
            parse_map_spec(bad)


@pytest.mark.parametrize("kind", ["regexp", "pcre"])
def test_pattern_tables_answer_only_the_first_key_in_the_whole_lookup(
    kind: str, tmp_path: Path, postfix_dir: str
) -> None:
    """As Postfix: a regexp:/pcre: table sees only the full address, never the keys
    without extension, the bare local part or @domain; a fixed table behind it does."""
    patterns = tmp_path / f"owners.{kind}"
    patterns.write_text(
        "/^@example\\.com$/ domain-pattern\n"  # the @domain key: never asked
        "/^alice$/ bare-pattern\n"  # the bare local part (a local domain): never asked
        "/^bob@example\\.com$/ bob-pattern\n"  # bob+x's key without extension: never asked
        "/^(carol)\\+.*@example\\.com$/ ${1}@example.com\n"
    )
    fixed = tmp_path / "owners"
    fixed.write_text("@example.com everyone\n")
    sources = [
        PostfixTable(MapSpec(kind, str(patterns)), postfix_dir),
        PostfixTable(MapSpec("texthash", str(fixed)), postfix_dir),
    ]
    maps = Ownership(
        sources, Rules("+", frozenset({"example.com"})), 60, 5, runner=LookupRunner("t")
    )
    for local in ("dave", "alice", "bob+x"):  # only the fixed table's @domain answers
        answer = maps.answer_now(Address(local, "example.com"))
        assert (answer.map, answer.key, answer.owners) == (
            f"texthash:{fixed}", "@example.com", ("everyone",),
        ), local  # fmt: skip
    answer = maps.answer_now(Address("Carol+Lists", "Example.com"))
    assert (answer.map, answer.key, answer.owners) == (
        f"{kind}:{patterns}", "carol+lists@example.com", ("carol@example.com",),
    )  # fmt: skip
    assert maps.answer_now(Address("bob", "example.com")).owners == ("bob-pattern",)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (b"bob\xff\xfe", "UTF-8"),  # postmap itself warns and skips the line
        (b"bob\x01admin", "control characters"),
        (b"bob\xe2\x80\x8badmin", "control characters"),  # U+200B, a format character
    ],
)
def test_a_map_that_answers_garbage_fails_instead_of_owning_nobody(
    tmp_path: Path, postfix_dir: str, value: bytes, why: str
) -> None:
    table = tmp_path / "owners"
    table.write_bytes(b"bob@example.com " + value + b"\nok@example.com alice, bob\n")
    source = PostfixTable(MapSpec("texthash", str(table)), postfix_dir)
    with pytest.raises(MapError, match=why):
        find_owners([source], probes("bob@example.com"), 5)
    answer = find_owners([source], probes("ok@example.com"), 5)  # the rest still answers
    assert answer.outcome is MapOutcome.FOUND
    assert answer.owners == ("alice", "bob")


def test_a_map_failing_and_answering_by_turns_writes_one_pair_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Other lookups answering (through the same map or another) do not reset the map's
    warning: on main every failure wrote map-unreadable and every answer map-recovered."""
    clock = Clock()
    flaky = Dict("flaky", {"sales@example.com": "alice"})
    other = Dict("other", {"info@example.com": "bob"})
    maps = ownership([flaky, other], clock, ttl=0)
    with caplog.at_level(logging.WARNING, "smtpauth_milter"):
        for _ in range(20):  # 20 failures and 20 answers within 40 s
            flaky.fail = "postmap: fatal: open database"
            assert maps.answer(SALES).outcome is MapOutcome.FAILED
            flaky.fail = None
            assert maps.answer(SALES).owned_by("alice")
            clock.now += 2
        flaky.fail = "postmap: fatal: open database"
        clock.now += 20  # a minute after the first line
        maps.answer(SALES)
    lines = [r.getMessage() for r in caplog.records]
    unreadable = [line for line in lines if "event=map-unreadable map=flaky" in line]
    assert len(unreadable) == 2 and "failures=20" in unreadable[1]
    assert sum("event=map-recovered map=flaky" in line for line in lines) == 1
    assert not any("map=other" in line for line in lines)


def test_a_map_reader_that_raises_anything_is_a_logged_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not only MapError: a driver refusing a URL option (ValueError) is a failed answer
    with its reason in the log (on main: a tempfail with no log line)."""

    class Broken(Dict):
        def first(self, probes: Sequence[Probe], seconds: float) -> tuple[str, str] | None:
            raise ValueError("could not convert string to float: 'abc'")

    maps = ownership([Broken("sql:/etc/x.toml", {})], Clock())
    with caplog.at_level(logging.WARNING, "smtpauth_milter"):
        answer = maps.answer(SALES)
    assert answer.outcome is MapOutcome.FAILED and "'abc'" in (answer.error or "")
    [line] = [r.getMessage() for r in caplog.records]
    assert "event=map-unreadable map=sql:/etc/x.toml" in line and "to float: 'abc'" in line
