"""The adapter's sender-login-maps path, driven through pymilter's TestCtx.

The maps are real: Postfix tables read by the real ``postmap`` with a private
main.cf (``postfix-config-dir``).  What is proved here: one lookup per
message whatever the number of recipients; a failing map tempfails only the
recipients whose verdict needed it (dry-run: would-tempfail); the decision
line names the map and key (owned_by, owner_key); the metrics count each
outcome; and a hung map costs a libmilter thread sender-login-maps-timeout
plus the margin, no more.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import Milter
import pytest
from Milter.testctx import TestCtx as MilterTestCtx

from smtpauth_milter.core.networks import NetworkSet
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.daemon.metrics import Metrics
from smtpauth_milter.daemon.milter import SmtpAuthMilter
from smtpauth_milter.daemon.refresh import SnapshotCache
from smtpauth_milter.lookups.ownership import OwnershipMaps
from smtpauth_milter.lookups.runner import DEADLINE_MARGIN
from smtpauth_milter.lookups.spf import SpfChecks
from tests.harness.mta.postfix import write_settled
from tests.support.fixedsource import FixedSource
from tests.unit.test_milter import mail

LOGIN = "bob@example.com"


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    directory = tmp_path / "postfix"
    directory.mkdir()
    write_settled(directory / "main.cf", "compatibility_level = 3.6\n")
    return directory


@pytest.fixture
def table(tmp_path: Path) -> Path:
    path = tmp_path / "owners"
    path.write_text("sales@example.com bob@example.com\n")
    return path


Start = Callable[..., tuple[MilterTestCtx, Metrics]]


@pytest.fixture
def start(monkeypatch: pytest.MonkeyPatch, conf: Path) -> Iterator[Start]:
    """A TestCtx session whose milter has real maps and its own metrics."""
    monkeypatch.setattr(MilterTestCtx, "default_opts", list(MilterTestCtx.default_opts))
    made: list[OwnershipMaps] = []

    def begin(maps: str, **values: str) -> tuple[MilterTestCtx, Metrics]:
        settings = {
            "require-sender-match": "on",
            "postfix-config-dir": str(conf),
            "sender-login-maps": maps,
            "sender-login-maps-ttl": "0",  # nothing cached: every lookup is counted
            **{key.replace("_", "-"): value for key, value in values.items()},
        }
        domains = {"example.com": {}, "example.net": {"require-sender-match": "off"}}
        snapshot = Snapshot.build(settings, domains, NetworkSet.of([]), [], 1)
        cache = SnapshotCache(FixedSource(snapshot), max_stale=300)
        cache.refresh()
        metrics = Metrics()
        owners = OwnershipMaps(observe=metrics.looked_up)
        made.append(owners)
        milter = SmtpAuthMilter(cache, SpfChecks(), metrics, owners)
        monkeypatch.setattr(Milter, "factory", lambda: milter)
        ctx = MilterTestCtx()
        ctx._opts = list(MilterTestCtx.default_opts)
        assert ctx._connect(ip="203.0.113.9") == Milter.CONTINUE
        return ctx, metrics

    yield begin
    for owners in made:
        owners.stop()


def lookups(metrics: Metrics, source: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "smtpauth_milter_lookups_total", {"source": source, "outcome": outcome}
    )
    return value or 0.0


def decisions(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if " action=" in r.getMessage()]


def test_one_lookup_per_message_and_the_line_names_map_and_key(
    start: Start, table: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx, metrics = start(f"texthash:{table}")
    caplog.set_level(logging.INFO, logger="smtpauth_milter")
    assert mail(ctx, "<sales+x@example.com>", login=LOGIN, queue="Q1") == Milter.CONTINUE
    for rcpt in ("<a@remote.test>", "<b@remote.test>", "<c@remote.test>"):
        assert ctx._envrcpt(rcpt) == Milter.CONTINUE
    assert lookups(metrics, "sender-login-maps", "answer") == 1  # three recipients, one lookup
    assert lookups(metrics, f"texthash:{table}", "found") == 1
    lines = decisions(caplog)
    assert len(lines) == 3
    for line in lines:
        assert line.startswith("queue=Q1 action=continue rule=sender-owned ")
        assert line.endswith(f" owned_by=texthash:{table} owner_key=sales@example.com")
    mail(ctx, "<sales@example.com>", login=LOGIN)  # the next message asks again
    ctx._envrcpt("<a@remote.test>")
    assert lookups(metrics, "sender-login-maps", "answer") == 2


def test_a_sender_no_map_owns_is_refused_and_counted_not_found(start: Start, table: Path) -> None:
    ctx, metrics = start(f"texthash:{table}")
    mail(ctx, "<info@example.com>", login=LOGIN)
    assert ctx._envrcpt("<a@remote.test>") == Milter.REJECT
    assert ctx._reply is not None and ctx._reply[0] == "553"
    assert lookups(metrics, f"texthash:{table}", "not-found") == 1


def test_a_failing_map_tempfails_only_the_recipients_that_needed_it(
    start: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    gone = tmp_path / "gone"
    ctx, metrics = start(f"texthash:{gone}")
    caplog.set_level(logging.INFO, logger="smtpauth_milter")
    mail(ctx, "<sales@example.com>", login=LOGIN, queue="Q2")
    for rcpt in ("<carl@example.com>", "<a@remote.test>"):
        assert ctx._envrcpt(rcpt) == Milter.TEMPFAIL
        assert ctx._reply == ("451", "4.3.0", "Temporary policy failure, try again later")
    assert lookups(metrics, f"texthash:{gone}", "error") == 1  # asked once for the message
    assert lookups(metrics, "sender-login-maps", "error") == 1
    assert all("action=tempfail rule=sender-map-failed" in line for line in decisions(caplog))
    unreadable = [
        r.getMessage() for r in caplog.records if "event=map-unreadable" in r.getMessage()
    ]
    assert len(unreadable) == 1 and f"map=texthash:{gone}" in unreadable[0]
    # in the same session, messages whose verdict no map could change go through, unasked:
    # the login's own address, a remote sender, a domain with require-sender-match off
    for sender, rule in (
        (f"<{LOGIN}>", "sender-owned"),
        ("<someone@remote.test>", "non-local-sender"),
        ("<sales@example.net>", "authenticated"),
    ):
        caplog.clear()
        mail(ctx, sender, login=LOGIN)
        assert ctx._envrcpt("<a@remote.test>") == Milter.CONTINUE
        assert f"action=continue rule={rule} " in decisions(caplog)[0]
    assert lookups(metrics, "sender-login-maps", "error") == 1


def test_dry_run_logs_would_tempfail_and_lets_the_mail_through(
    start: Start, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx, _metrics = start(f"texthash:{tmp_path / 'gone'}", dry_run="on")
    caplog.set_level(logging.INFO, logger="smtpauth_milter")
    mail(ctx, "<sales@example.com>", login=LOGIN)
    assert ctx._envrcpt("<a@remote.test>") == Milter.CONTINUE
    assert ctx._reply is None
    [line] = decisions(caplog)
    assert "action=would-tempfail rule=sender-map-failed" in line
    assert 'reply="451 4.3.0 Temporary policy failure, try again later"' in line


def test_a_hung_map_costs_the_libmilter_thread_its_timeout_plus_the_margin(
    start: Start, table: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    hung = bin_dir / "postmap"
    hung.write_text("#!/bin/sh\nexec sleep 60\n")
    hung.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    timeout = 0.5
    ctx, metrics = start(f"texthash:{table}", sender_login_maps_timeout=str(timeout))
    mail(ctx, "<sales@example.com>", login=LOGIN)
    began = time.monotonic()
    assert ctx._envrcpt("<a@remote.test>") == Milter.TEMPFAIL
    took = time.monotonic() - began
    assert took >= timeout  # postmap was given the time, not refused at once
    # the default (3 s) would take longer; 1.5 s of slack for a loaded machine
    assert took < timeout + DEADLINE_MARGIN + 1.5
    assert lookups(metrics, f"texthash:{table}", "error") == 1
