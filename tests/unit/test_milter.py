"""The pymilter adapter driven through pymilter's own TestCtx."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import Milter
import pytest
from Milter.testctx import TestCtx as MilterTestCtx

from smtpauth_milter.core.networks import NetworkSet, parse_cidr
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.daemon import milter as adapter
from smtpauth_milter.daemon.milter import SmtpAuthMilter, client_address
from smtpauth_milter.daemon.refresh import SnapshotCache
from smtpauth_milter.lookups.spf import SpfChecks
from tests.support.fixedsource import FixedSource


def make_snapshot(**global_values: str) -> Snapshot:
    values = {key.replace("_", "-"): value for key, value in global_values.items()}
    return Snapshot.build(
        values,
        {"example.com": {"exempt-local-recipients": "on"}, "example.org": {}},
        NetworkSet.of([parse_cidr("192.0.2.0/24")]),
        [("carol", "@example.org")],
        serial=1,
    )


Session = Callable[..., MilterTestCtx]


@pytest.fixture
def session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., MilterTestCtx]]:
    """Start a MilterTestCtx session against a milter answering from ``snapshot``."""
    monkeypatch.setattr(MilterTestCtx, "default_opts", list(MilterTestCtx.default_opts))

    def start(snapshot: Snapshot | None, ip: str = "203.0.113.9") -> MilterTestCtx:
        cache = SnapshotCache(FixedSource(snapshot) if snapshot else _DeadSource(), max_stale=300)
        cache.refresh()
        spf = SpfChecks()  # no snapshot here has spf-exempt on: never asked
        monkeypatch.setattr(Milter, "factory", lambda: SmtpAuthMilter(cache, spf))
        ctx = MilterTestCtx()
        ctx._opts = list(MilterTestCtx.default_opts)
        assert ctx._connect(ip=ip) == Milter.CONTINUE
        return ctx

    yield start


class _DeadSource(FixedSource):
    def __init__(self) -> None:
        pass

    def prepare(self) -> None:
        raise OSError("store unreachable")


def mail(
    ctx: MilterTestCtx, sender: str, login: str | None = None, queue: str | None = None
) -> int:
    ctx._macros.clear()
    if login is not None:
        ctx._setsymval("{auth_authen}", login)
    if queue is not None:
        ctx._setsymval("i", queue)
    return int(ctx._envfrom(sender))


def test_negotiation_asks_only_for_the_macros_and_steps_it_needs(
    session: Session,
) -> None:
    ctx = session(make_snapshot())
    assert ctx._symlist[Milter.M_ENVFROM] == {b"i", b"{auth_authen}"}
    assert ctx._symlist[Milter.M_ENVRCPT] == {b"i"}
    for step in (Milter.P_NOHELO, Milter.P_NOHDRS, Milter.P_NOEOH, Milter.P_NOBODY):
        assert ctx._protocol & step
    assert not ctx._protocol & Milter.P_NODATA, "DATA is kept: skipping it stalls Postfix on TCP"
    assert not ctx._protocol & (Milter.P_NOMAIL | Milter.P_NORCPT | Milter.P_NOCONNECT)
    assert ctx._opts[0] == Milter.SETSYMLIST, "we modify nothing, so we ask for no actions"


def test_unauthenticated_local_sender_per_recipient(session: Session) -> None:
    ctx = session(make_snapshot(require_auth_local="on"))
    assert mail(ctx, "<alice@example.com>") == Milter.CONTINUE
    assert ctx._envrcpt("<bob@example.com>") == Milter.CONTINUE
    assert ctx._envrcpt("<someone@example.net>") == Milter.REJECT
    assert ctx._reply == ("530", "5.7.0", "Authentication required")


def test_the_login_macro_makes_the_session_authenticated(session: Session) -> None:
    ctx = session(make_snapshot(require_auth_local="on", require_sender_match="on"))
    assert mail(ctx, "<alice@example.org>", login="alice@example.org") == Milter.CONTINUE
    assert ctx._envrcpt("<x@remote.test>") == Milter.CONTINUE
    assert mail(ctx, "<alice@example.org>", login="bob@example.org") == Milter.CONTINUE
    assert ctx._envrcpt("<x@remote.test>") == Milter.REJECT
    assert ctx._reply == (
        "553",
        "5.7.1",
        "Sender address rejected: not owned by authenticated user",
    )
    assert mail(ctx, "<anyone@example.org>", login="carol") == Milter.CONTINUE
    assert ctx._envrcpt("<x@remote.test>") == Milter.CONTINUE


def test_trusted_client_address_from_connect(session: Session) -> None:
    ctx = session(make_snapshot(require_auth_local="on"), ip="192.0.2.77")
    mail(ctx, "<postmaster@example.com>")
    assert ctx._envrcpt("<x@remote.test>") == Milter.CONTINUE


def test_custom_reply_with_percent_reaches_setreply_escaped(session: Session) -> None:
    ctx = session(make_snapshot(auth_required_reply="550 5.7.1 100% sure: log in"))
    mail(ctx, "<PostMaster@Example.COM>")
    assert ctx._envrcpt("<x@remote.test>") == Milter.REJECT
    assert ctx._reply == ("550", "5.7.1", "100%% sure: log in")


def test_a_4xx_configured_reply_tempfails(session: Session) -> None:
    ctx = session(make_snapshot(auth_required_reply="450 4.7.1 Try with a login"))
    mail(ctx, "<abuse@example.com>")
    assert ctx._envrcpt("<x@remote.test>") == Milter.TEMPFAIL
    assert ctx._reply == ("450", "4.7.1", "Try with a login")


def test_dry_run_continues_and_logs_would_reject(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = session(make_snapshot(dry_run="on"))
    caplog.set_level(logging.INFO, logger="smtpauth_milter")
    mail(ctx, "<postmaster@example.com>", queue="4Xyz")
    assert ctx._envrcpt("<x@remote.test>") == Milter.CONTINUE
    assert ctx._reply is None
    line = caplog.records[-1].getMessage()
    assert line.startswith("queue=4Xyz action=would-reject rule=role-auth-required ")
    assert 'reply="530 5.7.0 Authentication required"' in line


def test_one_log_line_per_recipient_with_every_field(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = session(make_snapshot(require_auth_local="on"))
    caplog.set_level(logging.INFO, logger="smtpauth_milter")
    mail(ctx, "<alice@example.com>")
    ctx._envrcpt("<bob@example.net>")
    ctx._setsymval("i", "4Xyz")
    ctx._envrcpt("<carl@example.com>")
    lines = [r.getMessage() for r in caplog.records if "action=" in r.getMessage()]
    assert lines == [
        "queue=- action=reject rule=auth-required client=203.0.113.9 login=- "
        "from=<alice@example.com> rcpt=<bob@example.net> domain=example.com "
        'reply="530 5.7.0 Authentication required"',
        "queue=4Xyz action=continue rule=local-recipient client=203.0.113.9 login=- "
        "from=<alice@example.com> rcpt=<carl@example.com> domain=example.com reply=-",
    ]


def test_a_hostile_envelope_cannot_split_the_log_line(
    session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = session(make_snapshot())
    caplog.set_level(logging.INFO, logger="smtpauth_milter")
    mail(ctx, "<x@remote.test>", login="eve\r\nqueue=forged action=continue")
    ctx._envrcpt("<a@b.test>\n2026 INFO queue=X action=continue")
    message = caplog.records[-1].getMessage()
    assert "\n" not in message and "\r" not in message
    assert message.startswith("queue=- action=continue rule=non-local-sender ")
    assert 'rcpt="<a@b.test>\\n2026 INFO queue=X action=continue"' in message
    assert 'login="eve\\r\\nqueue=forged action=continue"' in message


def test_a_store_down_at_start_tempfails_with_4xx(session: Session) -> None:
    ctx = session(None)
    mail(ctx, "<someone@remote.test>")
    assert ctx._envrcpt("<x@remote.test>") == Milter.TEMPFAIL
    assert ctx._reply == ("451", "4.3.0", "Temporary policy failure, try again later")


def test_an_internal_error_is_a_logged_4xx_not_5xx(
    session: Session, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = session(make_snapshot(require_auth_local="on"))
    mail(ctx, "<alice@example.com>")

    def explode(*_args: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(adapter, "decide_with_spf", explode)
    caplog.set_level(logging.INFO, logger="smtpauth_milter")
    assert ctx._envrcpt("<x@remote.test>") == Milter.TEMPFAIL
    assert ctx._reply is not None and ctx._reply[0].startswith("4")
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and errors[0].exc_info is not None
    assert "event=internal-error callback=envrcpt" in errors[0].getMessage()


@pytest.mark.parametrize(
    ("hostaddr", "expected"),
    [
        (("203.0.113.9", 25), "203.0.113.9"),
        (("2001:db8::1", 25, 0, 0), "2001:db8::1"),
        (("::ffff:192.0.2.1", 25, 0, 0), "192.0.2.1"),
        ("/var/run/socket", None),
        (None, None),
    ],
)
def test_client_address_forms(hostaddr: object, expected: str | None) -> None:
    address = client_address(hostaddr)
    assert (str(address) if address else None) == expected
