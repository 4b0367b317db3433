"""The core scenarios through a real Sendmail 8.17 with Cyrus SASL, configured from
``contrib/sendmail/smtpauth-milter.mc`` (see ``sendmail_sandbox.py`` for how it
runs next to Postfix without being installed).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from smtpauth_milter.admin.milterproto.transport import free_tcp_port
from tests.harness.logfile import LogFile
from tests.harness.mta import SwaksResult, libmilter_socket

from .milter_fixture import OurMilter, StoreCli, decision_for, field_of
from .sendmail_sandbox import CONTRIB_MC, Sendmail, start_sendmail

pytestmark = pytest.mark.mta

ALICE = "alice@example.com"
LOCAL = "bob@example.net"
REMOTE = "x@remote.test"
OK = (250, "2.1.5 <{}>... Recipient ok")
AUTH = (530, "5.7.0 Authentication required")
# Sendmail itself puts "<rcpt>... " after the status code of 550, 551 and 553
# replies (sendmail/err.c, fmtmsg), also of a milter's; 530 passes untouched.
MISMATCH = (553, "5.7.1 <{}>... Sender address rejected: not owned by authenticated user")
CUSTOM = (550, "5.7.1 <{}>... Custom text")


@pytest.fixture(scope="module")
def sm_milter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OurMilter]:
    root = tmp_path_factory.mktemp("sendmail-milter")
    store = StoreCli(root / "store.sqlite")
    store.run("domain", "add", "example.com", "example.net")
    store.save_baseline()
    milter = OurMilter(store, f"inet:127.0.0.1:{free_tcp_port()}", LogFile(root / "milter.log"))
    milter.start()
    try:
        yield milter
    finally:
        milter.stop()


@pytest.fixture(scope="module")
def sendmail(tmp_path_factory: pytest.TempPathFactory, sm_milter: OurMilter) -> Iterator[Sendmail]:
    instance = start_sendmail(
        tmp_path_factory.mktemp("sendmail"), libmilter_socket(sm_milter.socket)
    )
    try:
        yield instance
    finally:
        instance.stop()


def replies(result: SwaksResult) -> dict[str, tuple[int, str]]:
    return {r.rcpt: (r.code, r.text) for r in result.rcpts}


def ok(rcpt: str) -> tuple[int, str]:
    return with_rcpt(OK, rcpt)


def with_rcpt(reply: tuple[int, str], rcpt: str) -> tuple[int, str]:
    return reply[0], reply[1].format(rcpt)


def test_sendmail_cf_is_built_from_contrib(sendmail: Sendmail, sm_milter: OurMilter) -> None:
    cf = sendmail.config.read_text()
    socket = libmilter_socket(sm_milter.socket)
    assert f"Xsmtpauth-milter, S={socket}, F=T, " in cf
    assert "O InputMailFilters=smtpauth-milter" in cf
    envfrom = next(line for line in cf.splitlines() if line.startswith("O Milter.macros.envfrom="))
    assert "{auth_authen}" in envfrom and envfrom.split("=", 1)[1].startswith("i,")
    assert "F=T" in CONTRIB_MC.read_text()


def test_role_sender_needs_login(sendmail: Sendmail, sm_milter: OurMilter) -> None:
    sm_milter.sync()
    since = sm_milter.log.mark()
    result = sendmail.smtp("postmaster@example.com", [LOCAL, REMOTE])
    assert replies(result) == {LOCAL: AUTH, REMOTE: AUTH}, result.transcript
    line = decision_for(sm_milter.log, LOCAL, since)
    assert field_of(line, "rule") == "role-auth-required"
    assert field_of(line, "login") == "-"
    # Sendmail has a queue id from MAIL FROM on, and sends it ({i}) at every RCPT.
    assert field_of(line, "queue") != "-"


@pytest.mark.parametrize(
    ("user", "mech"), [(ALICE, "PLAIN"), (ALICE, "LOGIN"), ("carol", "LOGIN"), ("carol", "PLAIN")]
)
def test_authenticated_continues_and_auth_authen_arrives(
    sendmail: Sendmail, sm_milter: OurMilter, user: str, mech: str
) -> None:
    sm_milter.sync()
    since = sm_milter.log.mark()
    result = sendmail.smtp("postmaster@example.com", [LOCAL, REMOTE], user=user, mech=mech)
    assert result.auth is not None and result.auth.code == 235, result.transcript
    assert replies(result) == {LOCAL: ok(LOCAL), REMOTE: ok(REMOTE)}, result.transcript
    for rcpt in (LOCAL, REMOTE):
        line = decision_for(sm_milter.log, rcpt, since)
        assert field_of(line, "login") == user, line
        assert field_of(line, "rule") == "authenticated", line


def test_require_auth_local(sendmail: Sendmail, sm_milter: OurMilter) -> None:
    sm_milter.sync(
        (
            ("settings", "set", "require-auth-local", "on"),
            ("settings", "set", "exempt-local-recipients", "on"),
        )
    )
    result = sendmail.smtp(ALICE, [LOCAL, REMOTE])
    assert replies(result) == {LOCAL: ok(LOCAL), REMOTE: AUTH}, result.transcript
    result = sendmail.smtp(ALICE, [LOCAL, REMOTE], user=ALICE)
    assert replies(result) == {LOCAL: ok(LOCAL), REMOTE: ok(REMOTE)}, result.transcript


def test_sender_mismatch(sendmail: Sendmail, sm_milter: OurMilter) -> None:
    sm_milter.sync(
        (
            ("settings", "set", "require-sender-match", "on"),
            ("sender", "allow", "carol", "@example.net"),
        )
    )
    result = sendmail.smtp("bob@example.com", [REMOTE], user=ALICE)
    assert replies(result) == {REMOTE: with_rcpt(MISMATCH, REMOTE)}, result.transcript
    result = sendmail.smtp("Alice+x@Example.com", [REMOTE], user=ALICE)
    assert replies(result) == {REMOTE: ok(REMOTE)}, result.transcript
    result = sendmail.smtp("sales@example.net", [REMOTE], user="carol", mech="LOGIN")
    assert replies(result) == {REMOTE: ok(REMOTE)}, result.transcript
    result = sendmail.smtp("carol@example.com", [REMOTE], user="carol", mech="LOGIN")
    assert replies(result) == {REMOTE: with_rcpt(MISMATCH, REMOTE)}, result.transcript


def test_custom_reply_reaches_the_client(sendmail: Sendmail, sm_milter: OurMilter) -> None:
    sm_milter.sync((("settings", "set", "auth-required-reply", "550 5.7.1 Custom text"),))
    since = sm_milter.log.mark()
    result = sendmail.smtp("webmaster@example.net", [REMOTE])
    assert replies(result) == {REMOTE: with_rcpt(CUSTOM, REMOTE)}, result.transcript
    line = decision_for(sm_milter.log, REMOTE, since)
    assert 'reply="550 5.7.1 Custom text"' in line, line


def test_milter_down_tempfails_then_recovers(sendmail: Sendmail, sm_milter: OurMilter) -> None:
    """``F=T`` from contrib: with the milter down Sendmail answers 4xx, never accepts."""
    sm_milter.sync()
    sm_milter.stop()
    try:
        result = sendmail.smtp("postmaster@example.com", [REMOTE])
        refusals = [x.reply for x in result.exchanges if x.reply.code >= 400]
        assert refusals, result.transcript
        assert 400 <= refusals[0].code < 500, result.transcript
        assert all(r.code != 250 for r in result.rcpts), result.transcript
    finally:
        sm_milter.start()
    sm_milter.wait_loaded()
    result = sendmail.smtp("postmaster@example.com", [REMOTE])
    assert replies(result) == {REMOTE: AUTH}, result.transcript
