"""The freeze report: its settings, its text, and what happens when it cannot be sent
(docs/policy.md#telling-people). Through Postfix: tests/integration/test_login_limits_postfix.py."""

from __future__ import annotations

import dataclasses
import ipaddress
import socket

import pytest

from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.policy import Action, Request, Rule, decide
from smtpauth_milter.core.settings import canonical_value
from smtpauth_milter.daemon import notify
from smtpauth_milter.daemon.logins import LoginLimiter
from smtpauth_milter.daemon.notify import FreezeReport, Notifier, message
from tests.unit.test_login_limiter import snapshot

REPORT = FreezeReport(
    "alice@example.com",
    "login-max-messages",
    201,
    1_800_000_000.0,
    "milter@mx1",
    "postmaster@example.com",
    "127.0.0.1:25",
    ("198.51.100.7", "2001:db8:1::/64"),
    (("<alice@example.com>", "<x@remote.test>"),),
)


def test_notify_settings_are_checked() -> None:
    assert canonical_value("notify-address", " Postmaster@Example.COM ") == (
        "Postmaster@example.com"
    )
    assert canonical_value("notify-address", "") == ""
    assert canonical_value("notify-relay", "127.0.0.1") == "127.0.0.1:25"
    assert canonical_value("notify-relay", "[::1]:2525") == "[::1]:2525"
    for key, bad in (("notify-address", "not an address"), ("notify-relay", "mx.example:25")):
        with pytest.raises(SettingError, match=f"bad {key}"):
            canonical_value(key, bad)
    with pytest.raises(SettingError, match="global only"):
        canonical_value("notify-address", "a@example.com", domain=True)


def test_the_report_says_what_was_seen_and_how_to_unfreeze() -> None:
    mail = message(REPORT)
    assert mail["To"] == "postmaster@example.com"
    assert "alice@example.com" in mail["Subject"]
    text = mail.get_content()
    for expected in (
        "login-max-messages with 201",
        "smtpauth-milter login unfreeze alice@example.com",
        "2001:db8:1::/64",
        "<alice@example.com> -> <x@remote.test>",
        "milter@mx1",
    ):
        assert expected in text


def test_a_relay_that_refuses_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once closed
    report = dataclasses.replace(REPORT, relay=f"127.0.0.1:{port}")
    assert not Notifier().send(report)
    assert "event=login-notify-failed login=alice@example.com" in caplog.text


def test_the_hot_path_only_queues_one_report_per_freeze(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(notify, "QUEUE", 1)
    notifier = Notifier()  # not started: reports wait in the queue
    limiter = LoginLimiter("milter@test", notifier=notifier)
    snap = snapshot(
        login_max_messages="1/1h",
        login_limit_action="freeze",
        notify_address="postmaster@example.com",
    )
    for login in ("a@example.com", "b@example.com"):
        request = Request(ipaddress.ip_address("203.0.113.9"), login, f"<{login}>")
        for _ in range(3):
            verdict = decide(snap, request, "<x@remote.test>")
            verdict = limiter.apply(snap, request, verdict, True, rcpt="<x@remote.test>")
        assert (verdict.action, verdict.rule) == (Action.REJECT, Rule.LOGIN_FROZEN)
    queued = notifier._queue.get_nowait()
    assert queued is not None and queued.login == "a@example.com"
    assert queued.recent[-1] == ("<a@example.com>", "<x@remote.test>")
    assert notifier._queue.empty(), "one per freeze; the second freeze found the queue full"
    assert "event=login-notify-dropped login=b@example.com" in caplog.text


def test_the_report_shows_the_last_ten_envelopes_of_that_login_only() -> None:
    notifier = Notifier()  # not started: the report waits in the queue
    limiter = LoginLimiter("milter@test", notifier=notifier)
    snap = snapshot(
        login_max_recipients="15/1h",
        login_limit_action="freeze",
        notify_address="postmaster@example.com",
    )
    alice = Request(ipaddress.ip_address("203.0.113.9"), "a@example.com", "<a@example.com>")
    bob = Request(ipaddress.ip_address("203.0.113.10"), "b@example.com", "<b@example.com>")
    for n in range(16):  # the 16th recipient of alice's freezes her
        for request in (alice, bob):
            rcpt = f"<r{n}@remote.test>"
            limiter.apply(snap, request, decide(snap, request, rcpt), True, rcpt=rcpt)
    queued = notifier._queue.get_nowait()
    assert queued is not None and queued.login == "a@example.com"
    assert queued.recent == tuple(("<a@example.com>", f"<r{n}@remote.test>") for n in range(6, 16))


def test_what_the_mta_sent_cannot_add_lines_or_headers_to_the_report() -> None:
    hostile = dataclasses.replace(
        REPORT,
        login="evil\r\nBcc: victim@example.net",
        recent=(("<a@x.test>\nInjected: line", "<b@x.test>\u202e"),),
    )
    mail = message(hostile)
    assert mail["Bcc"] is None and "\r" not in mail["Subject"]
    text = mail.get_content()
    assert "\nInjected" not in text and "\u202e" not in text
    assert "evil\\r\\nBcc: victim@example.net" in text
