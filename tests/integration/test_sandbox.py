"""The sandbox itself: real Postfix + Dovecot SASL + swaks, with a tiny test milter.

Tests marked ``mta`` need root, postfix, dovecot-core and swaks; the swaks
parser tests need nothing.
"""

from __future__ import annotations

import pytest

from tests.harness.mta import (
    CONTRIB_MAIN_CF,
    Sandbox,
    SwaksResult,
    parse_swaks,
    render_milter_snippet,
)

from .conftest import ConfigureMilter, StartRejectMilter
from .reject_milter import BLOCKED, WHOAMI

mta = pytest.mark.mta

ALICE = "alice@example.com"
CAROL = "carol"  # a bare login without a domain
OK_LOCAL = "ok@example.com"
REMOTE = "someone@remote.test"
MILTER_REJECT = (550, "5.7.1 blocked by test milter")
TEMPFAIL_DEFAULT = (451, "4.7.1 Service unavailable - try again later")


def replies(result: SwaksResult) -> dict[str, tuple[int, str]]:
    return {r.rcpt: (r.code, r.text) for r in result.rcpts}


def login_seen(result: SwaksResult) -> str:
    """What the test milter saw in {auth_authen}, from its reply to WHOAMI."""
    code, text = replies(result)[WHOAMI]
    assert code == 451, result.transcript
    return text.removeprefix("4.7.1 login=<").removesuffix(">")


# --------------------------------------------------------------------------- Postfix alone


@mta
def test_postfix_loads_contrib_snippet_verbatim(mta_sandbox: Sandbox) -> None:
    main_cf = (mta_sandbox.postfix.config_dir / "main.cf").read_text()
    assert render_milter_snippet(CONTRIB_MAIN_CF.read_text(), "") in main_cf
    assert mta_sandbox.postfix.postconf("milter_default_action") == "tempfail"
    assert "{auth_authen}" in mta_sandbox.postfix.postconf("milter_mail_macros")


@mta
def test_without_milter_everything_is_accepted(mta_sandbox: Sandbox) -> None:
    result = mta_sandbox.smtp(ALICE, [OK_LOCAL, BLOCKED, REMOTE])
    assert result.mail is not None and result.mail.code == 250, result.transcript
    assert [r.code for r in result.rcpts] == [250, 250, 250]


@mta
@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_sasl_login_works_and_bad_password_fails(mta_sandbox: Sandbox, mech: str) -> None:
    good = mta_sandbox.smtp(ALICE, [OK_LOCAL], user=ALICE, mech=mech)
    assert good.auth is not None and good.auth.code == 235, good.transcript
    bad = mta_sandbox.smtp(ALICE, [OK_LOCAL], user=ALICE, password="wrong", mech=mech)
    assert bad.auth is not None and bad.auth.code == 535, bad.transcript
    assert bad.mail is None and bad.rcpts == []


# --------------------------------------------------------------------------- with the test milter


@mta
@pytest.mark.parametrize(("mech", "user"), [("PLAIN", ALICE), ("LOGIN", CAROL)])
def test_authenticated_login_reaches_milter(
    mta_sandbox: Sandbox,
    postfix_with_milter: ConfigureMilter,
    reject_milter: StartRejectMilter,
    mech: str,
    user: str,
) -> None:
    socket = mta_sandbox.inet_milter_socket()
    reject_milter(socket)
    sandbox = postfix_with_milter(socket)

    result = sandbox.smtp(ALICE, [OK_LOCAL, BLOCKED, WHOAMI, REMOTE], user=user, mech=mech)

    assert result.auth is not None and result.auth.code == 235, result.transcript
    assert login_seen(result) == user
    got = replies(result)
    assert got[OK_LOCAL][0] == 250
    assert got[BLOCKED] == MILTER_REJECT
    assert got[REMOTE][0] == 250
    assert [r.rcpt for r in result.rcpts] == [OK_LOCAL, BLOCKED, WHOAMI, REMOTE]


@mta
def test_unauthenticated_local_client_has_no_login(
    mta_sandbox: Sandbox, postfix_with_milter: ConfigureMilter, reject_milter: StartRejectMilter
) -> None:
    socket = mta_sandbox.inet_milter_socket()
    reject_milter(socket)
    sandbox = postfix_with_milter(socket)
    since = sandbox.maillog.mark()

    result = sandbox.smtp(ALICE, [WHOAMI, BLOCKED])

    assert result.auth is None
    assert login_seen(result) == ""
    assert replies(result)[BLOCKED] == MILTER_REJECT
    line = sandbox.maillog.wait_for(rf"milter-reject: RCPT from .*to=<{BLOCKED}>", since)
    assert "550 5.7.1 blocked by test milter" in line


@mta
def test_milter_over_unix_socket(
    mta_sandbox: Sandbox, postfix_with_milter: ConfigureMilter, reject_milter: StartRejectMilter
) -> None:
    socket = mta_sandbox.unix_milter_socket("reject")
    reject_milter(socket)
    sandbox = postfix_with_milter(socket)

    result = sandbox.smtp(ALICE, [OK_LOCAL, BLOCKED, WHOAMI], user=ALICE)

    assert login_seen(result) == ALICE
    assert replies(result)[BLOCKED] == MILTER_REJECT
    assert replies(result)[OK_LOCAL][0] == 250


@mta
def test_milter_down_tempfails_and_reload_takes_effect(
    mta_sandbox: Sandbox, postfix_with_milter: ConfigureMilter, reject_milter: StartRejectMilter
) -> None:
    socket = mta_sandbox.inet_milter_socket()
    milter = reject_milter(socket)
    sandbox = postfix_with_milter(socket)
    assert replies(sandbox.smtp(ALICE, [BLOCKED]))[BLOCKED] == MILTER_REJECT

    milter.stop(0)
    anonymous = sandbox.smtp(ALICE, [OK_LOCAL])
    assert anonymous.mail is not None, anonymous.transcript
    assert (anonymous.mail.code, anonymous.mail.text) == TEMPFAIL_DEFAULT
    assert anonymous.rcpts == []
    # With the milter down Postfix refuses AUTH itself, before MAIL.
    authenticated = sandbox.smtp(ALICE, [OK_LOCAL], user=ALICE)
    assert authenticated.auth == (454, "4.3.0 Try again later"), authenticated.transcript
    assert authenticated.mail is None and authenticated.rcpts == []

    postfix_with_milter(None)  # the reload must really drop the milter
    assert replies(sandbox.smtp(ALICE, [BLOCKED]))[BLOCKED][0] == 250


# --------------------------------------------------------------------------- swaks parsing (no MTA)

TRANSCRIPT = """\
=== Trying 127.0.0.1:2525...
=== Connected to 127.0.0.1.
<-  220 mta.sandbox.test ESMTP sandbox
 -> EHLO client.sandbox.test
<-  250-mta.sandbox.test
<-  250-AUTH PLAIN LOGIN
<-  250 CHUNKING
 -> AUTH LOGIN
<-  334 VXNlcm5hbWU6
 -> Y2Fyb2w=
<-  334 UGFzc3dvcmQ6
 -> Y2Fyb2wtc2VjcmV0
<-  235 2.7.0 Authentication successful
 -> MAIL FROM:<alice@example.com>
<-  250 2.1.0 Ok
 -> RCPT TO:<ok@example.com>
<-  250 2.1.5 Ok
 -> RCPT TO:<blocked@example.net>
<** 550-5.7.1 first line
<** 550 5.7.1 second line
 ~> RCPT TO:<tls@example.net>
<~  250 2.1.5 Ok
 -> QUIT
<-  221 2.0.0 Bye
=== Connection closed with remote host.
"""


def test_parse_swaks_pairs_commands_and_multiline_replies() -> None:
    result = SwaksResult(TRANSCRIPT, 0, parse_swaks(TRANSCRIPT))
    assert result.auth is not None and result.auth.code == 235
    assert result.mail is not None and result.mail.code == 250
    assert result.rcpts == [
        ("ok@example.com", 250, "2.1.5 Ok"),
        ("blocked@example.net", 550, "5.7.1 first line\n5.7.1 second line"),
        ("tls@example.net", 250, "2.1.5 Ok"),
    ]
    assert result.rcpt("BLOCKED@example.net").code == 550


def test_parse_swaks_stops_after_failed_mail_from() -> None:
    transcript = """\
<-  220 mta.sandbox.test ESMTP sandbox
 -> EHLO client.sandbox.test
<-  250 CHUNKING
 -> MAIL FROM:<alice@example.com>
<** 451 4.7.1 Service unavailable - try again later
 -> QUIT
<-  221 2.0.0 Bye
"""
    result = SwaksResult(transcript, 23, parse_swaks(transcript))
    assert result.mail is not None and result.mail.code == 451
    assert result.rcpts == []
    with pytest.raises(AssertionError, match="no RCPT TO"):
        result.rcpt("ok@example.com")
