"""Policy corners through a real Postfix + Dovecot SASL and our real milter (with --metrics).

- bad-header-from applies only to mail of a domain with require-header-from-match
  in effect, with that domain's dry-run (whole messages, answered at end of DATA);
- a recipient Postfix routes off-site (``victim%gmail.com@example.com``,
  ``gmail.com!victim@example.com``) is not exempted as local;
- role senders listed with a ``-`` match when ``-`` is a recipient delimiter;
- end-of-headers decisions show in ``smtpauth_milter_decisions_total``.

The sandbox's Postfix relays for anybody (``relay_domains = static:ALL``) and
does not trust 127.0.0.1 (``mynetworks``); the milter has no trusted network.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from smtpauth_milter.admin.milterproto.transport import free_tcp_port
from smtpauth_milter.core import logfmt
from tests.harness.logfile import LogFile
from tests.harness.mta import LOOPBACK, Reply, Sandbox, deliver

from .milter_fixture import OurMilter, StoreCli, decision_for, field_of

pytestmark = pytest.mark.mta

LOCAL_DOMAINS = ("example.com", "example.net")
AUTH = (530, "5.7.0 Authentication required")
HF_MISMATCH = "550 5.7.1 From header not owned by authenticated user"
# Postfix adds a missing From: only for clients in local_header_rewrite_clients
# (by default our own 127.0.0.1); empty, the milter sees the message as sent.
NO_HEADER_REWRITE = {"local_header_rewrite_clients": ""}


@pytest.fixture(scope="module")
def milter(tmp_path_factory: pytest.TempPathFactory, mta_sandbox: Sandbox) -> Iterator[OurMilter]:
    root = tmp_path_factory.mktemp("policy-corners")
    store = StoreCli(root / "store.sqlite")
    store.run("domain", "add", *LOCAL_DOMAINS)
    store.save_baseline()
    metrics = ("--metrics", f"{LOOPBACK}:{free_tcp_port()}")
    ours = OurMilter(store, mta_sandbox.inet_milter_socket(), LogFile(root / "milter.log"), metrics)
    ours.start()
    try:
        yield ours
    finally:
        mta_sandbox.postfix.use_milter(None)
        mta_sandbox.postfix.use_overrides({})
        ours.stop()


def scrape(milter: OurMilter) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{milter.extra_args[1]}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def send_message(
    sandbox: Sandbox,
    tmp: Path,
    envelope: str,
    rcpts: Sequence[str],
    headers: Sequence[str],
    user: str | None = None,
) -> tuple[Reply, str]:
    """One whole message with swaks; the reply to the end of DATA and the transcript."""
    message = tmp / "message.eml"
    message.write_text("\r\n".join((*headers, "Subject: corners", "", "Hello.", "")))
    password = sandbox.users[user] if user is not None else None
    return deliver(sandbox.port, envelope, rcpts, str(message), user, password)


def header_decision(milter: OurMilter, since: int) -> tuple[str, str, str]:
    """(action, rule, domain) of the one end-of-headers decision logged after ``since``."""
    milter.log.wait_for(r" rule=\S+ .* header_from=", since)  # written just after the reply
    lines = milter.log.find(r" rule=\S+ .* header_from=", since)
    assert len(lines) == 1, milter.log.text(since)
    return field_of(lines[0], "action"), field_of(lines[0], "rule"), field_of(lines[0], "domain")


# --- 4. bad-header-from, per domain ---------------------------------------------------------

HEADER_SETUP = (
    ("settings", "set", "--domain", "example.com", "require-header-from-match", "on"),
    ("settings", "set", "--domain", "example.com", "dry-run", "on"),
    ("settings", "set", "--domain", "example.net", "require-header-from-match", "on"),
)

# (id, envelope, From: lines, end-of-DATA reply code, action, rule, domain)
HEADER_CASES = [
    ("two-remote-addresses", "list@remote.test", ("From: a@remote.net, b@remote.net",), 250, "continue", "header-from-not-checked", "-"),
    ("no-from-remote-envelope", "list@remote.test", (), 250, "continue", "header-from-not-checked", "-"),
    ("no-from-dry-run-domain", "alice@example.com", (), 250, "would-reject", "bad-header-from", "example.com"),
    ("two-from-dry-run-domain", "list@remote.test", ("From: a@remote.test, alice@example.com",), 250, "would-reject", "bad-header-from", "example.com"),
    ("no-from-enforcing-domain", "dave@example.net", (), 550, "reject", "bad-header-from", "example.net"),
    ("two-from-enforcing-domain", "list@remote.test", ("From: x@remote.test", "From: dave@example.net"), 550, "reject", "bad-header-from", "example.net"),
    ("unparseable-enforcing-domain", "list@remote.test", ("From: dave@example.net <evil@remote.test>",), 550, "reject", "bad-header-from", "example.net"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("envelope", "froms", "code", "action", "rule", "domain"),
    [pytest.param(*case[1:], id=case[0]) for case in HEADER_CASES],
)
def test_bad_header_from_only_for_its_domain(
    mta_sandbox: Sandbox,
    milter: OurMilter,
    tmp_path: Path,
    envelope: str,
    froms: tuple[str, ...],
    code: int,
    action: str,
    rule: str,
    domain: str,
) -> None:
    mta_sandbox.postfix.use_overrides(NO_HEADER_REWRITE)
    mta_sandbox.postfix.use_milter(milter.socket)
    milter.sync(HEADER_SETUP)
    before = scrape(milter)
    since = milter.log.mark()
    reply, transcript = send_message(mta_sandbox, tmp_path, envelope, ["x@remote.test"], froms)
    assert reply.code == code, transcript
    if code == 550:
        assert f"{reply.code} {reply.text}" == HF_MISMATCH, transcript
    assert header_decision(milter, since) == (action, rule, domain)
    if not froms:  # Postfix really left the message without a From:
        assert " header_from=- " in milter.log.find(r" header_from=", since)[0]
    counter = f'smtpauth_milter_decisions_total{{action="{action}",rule="{rule}"}}'
    assert scrape(milter)[counter] == before.get(counter, 0) + 1


# --- 5. recipients Postfix routes elsewhere -------------------------------------------------

EXEMPT = (
    ("settings", "set", "require-auth-local", "on"),
    ("settings", "set", "exempt-local-recipients", "on"),
)
PERCENT = "victim%gmail.com@example.com"
BANG = "gmail.com!victim@example.com"


def test_postfix_routes_percent_and_bang_recipients_off_site(
    mta_sandbox: Sandbox, milter: OurMilter, tmp_path: Path
) -> None:
    """What the milter guards against: Postfix delivers these to victim@gmail.com."""
    mta_sandbox.postfix.use_overrides({})
    mta_sandbox.postfix.use_milter(milter.socket)
    milter.sync(EXEMPT)
    since = mta_sandbox.maillog.mark()
    user = "alice@example.com"  # logged in: the milter lets it through
    reply, transcript = send_message(mta_sandbox, tmp_path, user, [PERCENT, BANG], (), user=user)
    assert reply.code == 250, transcript
    for original in (PERCENT, BANG):
        mta_sandbox.maillog.wait_for(rf"to=<victim@gmail\.com>, orig_to=<{original}>", since, 10)


def test_routed_recipients_are_not_exempt_as_local(mta_sandbox: Sandbox, milter: OurMilter) -> None:
    mta_sandbox.postfix.use_overrides({})
    mta_sandbox.postfix.use_milter(milter.socket)
    milter.sync(EXEMPT)
    since = milter.log.mark()
    result = mta_sandbox.smtp("alice@example.com", ["bob@example.net", PERCENT, BANG])
    assert result.mail is not None and result.mail.code == 250, result.transcript
    assert result.rcpt("bob@example.net")[1:] == (250, "2.1.5 Ok"), result.transcript
    assert field_of(decision_for(milter.log, "bob@example.net", since), "rule") == "local-recipient"
    for routed in (PERCENT, BANG):
        assert result.rcpt(routed)[1:] == AUTH, result.transcript
        line = rcpt_decision(milter, routed, since)
        assert (field_of(line, "action"), field_of(line, "rule")) == ("reject", "auth-required")


def rcpt_decision(milter: OurMilter, rcpt: str, since: int) -> str:
    """The one decision line for ``rcpt``, whose value logfmt quotes (``%`` and ``!``)."""
    needle = f" rcpt={logfmt.value(f'<{rcpt}>')} "
    milter.log.wait_for(re.escape(needle), since)  # written just after the reply
    found = [line for line in milter.log.find(r" action=\S+ rule=", since) if needle in line]
    assert len(found) == 1, milter.log.text(since)
    return found[0]


# --- 6. role senders with the delimiter in their name ---------------------------------------


@pytest.mark.parametrize(
    ("sender", "code", "rule"),
    [
        pytest.param("no-reply@example.com", 530, "role-auth-required", id="no-reply"),
        pytest.param("Mailer-Daemon@example.net", 530, "role-auth-required", id="mailer-daemon"),
        pytest.param("no-reply+bounce@example.com", 530, "role-auth-required", id="sub-addressed"),
        pytest.param("postmaster-x@example.com", 530, "role-auth-required", id="cut-at-dash"),
        pytest.param("no-replies@example.com", 250, "auth-not-required", id="not-a-role"),
    ],
)
def test_role_senders_match_as_written(
    mta_sandbox: Sandbox, milter: OurMilter, sender: str, code: int, rule: str
) -> None:
    mta_sandbox.postfix.use_overrides({})
    mta_sandbox.postfix.use_milter(milter.socket)
    milter.sync(
        (
            ("settings", "set", "recipient-delimiter", "+-"),
            ("settings", "set", "role-senders", "postmaster, no-reply, mailer-daemon"),
        )
    )
    since = milter.log.mark()
    result = mta_sandbox.smtp(sender, ["x@remote.test"])
    assert result.rcpt("x@remote.test").code == code, result.transcript
    assert field_of(decision_for(milter.log, "x@remote.test", since), "rule") == rule
