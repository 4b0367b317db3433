"""SpfChecks against the private unbound: what is cached under which key, and which
DNS setup answers (issue 21, items 2, 4 and 7).

Zones (tests/harness/dnsserver.py): ``ip4.spf.test`` authorises 192.0.2.0/24;
``exists.spf.test`` passes 192.0.2.40 only for local part ``bob`` (``%{l1r+}``);
``inc-exists.spf.test`` includes it, so the macro is in a record it reads, not its own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import pytest

from smtpauth_milter.core.networks import IPAddress, parse_ip
from smtpauth_milter.core.spf import SpfResult, SystemResolvers
from smtpauth_milter.lookups import spfdns
from smtpauth_milter.lookups.spf import RESOLV_CONF_MAX_AGE, SpfChecks
from tests.harness.dnsserver import Blackhole, DnsServer
from tests.support.clock import Clock

TIMEOUT = 1.0
P, F, TEMP = SpfResult.PASS, SpfResult.FAIL, SpfResult.TEMPERROR


def ip(text: str) -> IPAddress:
    address = parse_ip(text)
    assert address is not None
    return address


class Outcomes:
    """The lookups layer's observer: hit, answer, timeout, overloaded or error, in order."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, source: str, outcome: str, seconds: float) -> None:
        self.seen.append(outcome)


@pytest.fixture
def outcomes() -> Outcomes:
    return Outcomes()


@pytest.fixture
def checks(outcomes: Outcomes) -> Iterator[SpfChecks]:
    spf = SpfChecks(observe=outcomes)
    yield spf
    spf.stop()


def test_one_answer_serves_every_local_part_of_a_domain(
    checks: SpfChecks, outcomes: Outcomes, dns_server: DnsServer
) -> None:
    """Varying the local part no longer defeats the cache: the key is (IP, domain)."""
    client = ip("192.0.2.10")
    senders = ["<alice@ip4.spf.test>", "<bob@ip4.spf.test>", "<x+tag@IP4.spf.test.>"]
    for sender in senders:
        assert checks.check(dns_server.address, TIMEOUT, client, sender).result is P
    assert outcomes.seen == ["answer", "hit", "hit"]
    assert checks.check(dns_server.address, TIMEOUT, ip("198.51.100.9"), senders[0]).result is F
    assert outcomes.seen[-1] == "answer"  # another IP is another key


@pytest.mark.parametrize("domain", ["exists.spf.test", "inc-exists.spf.test"])
def test_a_record_with_local_part_macros_is_cached_per_sender(
    checks: SpfChecks, outcomes: Outcomes, dns_server: DnsServer, domain: str
) -> None:
    client = ip("192.0.2.40")
    order = [("bob", P), ("alice", F), ("bob+tag", P), ("bob", P), ("alice", F)]
    for local, result in order:
        answer = checks.check(dns_server.address, TIMEOUT, client, f"<{local}@{domain}>")
        assert (local, answer.result) == (local, result)
        assert answer.local_part
    assert outcomes.seen == ["answer", "answer", "answer", "hit", "hit"]


def test_a_resolver_that_could_not_be_made_is_made_again(
    checks: SpfChecks, dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 4: the failure is that check's temperror, never kept for the process."""
    real = spfdns.make_resolver
    failures = [dns.exception.DNSException("resolv.conf not ready")]

    def flaky(setting: str, system: SystemResolvers) -> object:
        if failures:
            raise failures.pop()
        return real(setting, system)

    monkeypatch.setattr(spfdns, "make_resolver", flaky)
    client = ip("192.0.2.10")
    first = checks.check(dns_server.address, TIMEOUT, client, "<a@ip4.spf.test>")
    assert (first.result, first.ttl) == (TEMP, 0.0)
    assert "resolv.conf not ready" in first.detail
    assert checks.check(dns_server.address, TIMEOUT, client, "<a@ip4.spf.test>").result is P


def test_resolv_conf_empty_at_the_first_check_then_good_then_changed(
    dns_server: DnsServer, tmp_path: Path
) -> None:
    """Item 4's proof: dns-resolver empty, so the system's resolv.conf is used (here a
    file of the test's, whose nameservers are asked on the private server's port)."""
    conf = tmp_path / "resolv.conf"
    conf.write_text("")
    clock = Clock()
    checks = SpfChecks(clock=clock, system=SystemResolvers(str(conf), dns_server.port))
    try:
        first = checks.check("", TIMEOUT, ip("192.0.2.10"), "<a@ip4.spf.test>")
        assert first.result is TEMP
        assert "no DNS resolver" in first.detail
        conf.write_text("nameserver 127.0.0.1\n")
        assert checks.check("", TIMEOUT, ip("192.0.2.10"), "<a@ip4.spf.test>").result is P

        # a changed file is read again at the next check (nothing listens on 127.0.0.2)
        conf.write_text("nameserver 127.0.0.2\n")
        assert checks.check("", TIMEOUT, ip("192.0.2.11"), "<a@ip4.spf.test>").result is TEMP

        # a change its stat does not show (same inode, size and mtime) is used ...
        read = conf.stat()
        with conf.open("r+") as same_file:
            same_file.write("nameserver 127.0.0.1\n")
        os.utime(conf, ns=(read.st_atime_ns, read.st_mtime_ns))
        now = conf.stat()
        assert (now.st_ino, now.st_size, now.st_mtime_ns) == (
            read.st_ino,
            read.st_size,
            read.st_mtime_ns,
        )
        assert checks.check("", TIMEOUT, ip("192.0.2.12"), "<a@ip4.spf.test>").result is TEMP
        clock.now += RESOLV_CONF_MAX_AGE  # ... once the file was read a minute ago
        assert checks.check("", TIMEOUT, ip("192.0.2.13"), "<a@ip4.spf.test>").result is P
    finally:
        checks.stop()


def test_a_check_under_another_resolver_never_joins_one_in_flight(
    checks: SpfChecks, outcomes: Outcomes, dns_server: DnsServer, blackhole: Blackhole
) -> None:
    """Item 2 for SPF: the resolver configuration is part of every key."""
    client, sender = ip("192.0.2.10"), "<a@ip4.spf.test>"
    old: list[SpfResult] = []

    def under_the_old_resolver() -> None:
        old.append(checks.check(blackhole.address, TIMEOUT, client, sender).result)

    thread = threading.Thread(target=under_the_old_resolver)
    thread.start()
    deadline = time.monotonic() + 5
    while not blackhole.received and time.monotonic() < deadline:
        time.sleep(0.005)  # polling, with a deadline, for the old check to ask its server
    assert blackhole.received
    began = time.monotonic()
    assert checks.check(dns_server.address, TIMEOUT, client, sender).result is P
    assert time.monotonic() - began < TIMEOUT  # answered by its own lookup, not the old one
    thread.join()
    assert old == [TEMP]
    # and the answer cached under one resolver is not used under another
    assert checks.check(blackhole.address, TIMEOUT, client, sender).result is TEMP
    assert "hit" not in outcomes.seen
