"""require-header-from-match through a real Postfix + Dovecot SASL and our real milter.

Each session sends a whole message with swaks (``--data``), so Postfix runs
the milter's header and end-of-header steps; the milter's verdict is the reply
to the final ``.`` of DATA. The envelope sender is not local, so the envelope
rules (docs/policy.md#the-envelope-decision) let every recipient through and only the header rule
decides. Also checked: with the setting off nowhere, the milter negotiates no
header steps (Postfix sends it no header at all).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.logfile import LogFile
from tests.harness.mta import Reply, Sandbox, deliver

from .milter_fixture import OurMilter, StoreCli, field_of

pytestmark = pytest.mark.mta

LOCAL_DOMAINS = ("example.com", "example.net")
ENVELOPE = "list-bounces@remote.test"  # never local: the envelope rules let it through
RCPT = "x@remote.test"
HF_ON = ("settings", "set", "require-header-from-match", "on")
MISMATCH = "550 5.7.1 From header not owned by authenticated user"
AUTH = "530 5.7.0 Authentication required"
ACCEPTED = "250"


@dataclass(frozen=True)
class Case:
    id: str
    setup: tuple[tuple[str, ...], ...]
    headers: tuple[str, ...]  # header lines of the message, as sent
    user: str | None
    reply: str  # "250" or the full reply the client must get at end of DATA
    rule: str
    action: str = "reject"
    envelope: str = ENVELOPE


CASES = [
    Case("owned", (HF_ON,), ("From: Alice <alice@example.com>",), "alice@example.com", ACCEPTED, "header-from-owned", "continue"),
    Case("not-owned", (HF_ON,), ("From: Alice <alice@example.com>",), "bob@example.com", MISMATCH, "header-from-mismatch"),
    Case("unauthenticated", (HF_ON,), ("From: alice@example.com",), None, AUTH, "header-from-auth-required"),
    Case("sender-owned", (HF_ON,), ("From: alice@example.com", "Sender: Bob <bob@example.com>"), "bob@example.com", ACCEPTED, "header-sender-owned", "continue"),
    Case("grant-domain-encoded-name", (HF_ON, ("sender", "allow", "carol", "@example.net")), ("From: =?utf-8?q?J=C3=B6rg?= <joerg@example.net>",), "carol", ACCEPTED, "header-from-owned", "continue"),
    Case("two-from-addresses", (HF_ON,), ("From: alice@example.com, bob@example.com",), "alice@example.com", MISMATCH, "bad-header-from"),
    Case("two-from-fields", (HF_ON,), ("From: alice@example.com", "From: alice@example.com"), "alice@example.com", MISMATCH, "bad-header-from"),
    # Postfix's cleanup adds a missing From: from the envelope sender before the milter sees it
    Case("no-from-postfix-adds-envelope", (HF_ON,), ("Subject: no From",), "alice@example.com", ACCEPTED, "header-from-not-checked", "continue"),
    Case("no-from-local-envelope", (HF_ON,), ("Subject: no From",), "bob@example.com", MISMATCH, "header-from-mismatch", envelope="alice@example.com"),
    Case("unparseable-from", (HF_ON,), ("From: alice@example.com <evil@remote.test>",), "alice@example.com", MISMATCH, "bad-header-from"),
    Case("remote-from", (HF_ON,), ("From: someone@remote.test",), None, ACCEPTED, "header-from-not-checked", "continue"),
    Case(
        "per-domain-custom-reply",
        (("settings", "set", "--domain", "example.net", "require-header-from-match", "on"),
         ("settings", "set", "--domain", "example.net", "header-from-mismatch-reply", "554 5.7.1 Not your From on example.net")),
        ("From: Dave <dave@example.net>",), "alice@example.com", "554 5.7.1 Not your From on example.net", "header-from-mismatch",
    ),
    Case("other-domain-off", (("settings", "set", "--domain", "example.net", "require-header-from-match", "on"),), ("From: alice@example.com",), "bob@example.com", ACCEPTED, "header-from-not-checked", "continue"),
    Case("dry-run", (HF_ON, ("settings", "set", "dry-run", "on")), ("From: alice@example.com",), "bob@example.com", ACCEPTED, "header-from-mismatch", "would-reject"),
    Case("trusted-network", (HF_ON, ("network", "add", "127.0.0.1/32")), ("From: alice@example.com",), None, ACCEPTED, "trusted-network", "continue"),
]  # fmt: skip


def send(
    sandbox: Sandbox,
    tmp: Path,
    headers: tuple[str, ...],
    user: str | None,
    envelope: str = ENVELOPE,
) -> tuple[Reply, str]:
    """One whole message; the reply to the end of DATA and the transcript."""
    message = tmp / "message.eml"
    message.write_text("\r\n".join((*headers, "To: x@remote.test", "", "Hello.", "")))
    password = sandbox.users[user] if user is not None else None
    return deliver(sandbox.port, envelope, [RCPT], str(message), user, password)


@pytest.fixture(scope="module")
def milter(tmp_path_factory: pytest.TempPathFactory, mta_sandbox: Sandbox) -> Iterator[OurMilter]:
    root = tmp_path_factory.mktemp("header-from")
    store = StoreCli(root / "store.sqlite")
    store.run("domain", "add", *LOCAL_DOMAINS)
    store.save_baseline()
    ours = OurMilter(store, mta_sandbox.inet_milter_socket(), LogFile(root / "milter.log"))
    ours.start()
    try:
        yield ours
    finally:
        mta_sandbox.postfix.use_milter(None)
        ours.stop()


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for c in CASES])
def test_header_from_at_end_of_data(
    mta_sandbox: Sandbox, milter: OurMilter, case: Case, tmp_path: Path
) -> None:
    mta_sandbox.postfix.use_milter(milter.socket)
    milter.sync(case.setup)
    since = milter.log.mark()
    reply, transcript = send(mta_sandbox, tmp_path, case.headers, case.user, case.envelope)
    if case.reply == ACCEPTED:
        assert reply.code == 250, transcript
    else:
        code, _, text = case.reply.partition(" ")
        assert (reply.code, reply.text) == (int(code), text), transcript
    milter.log.wait_for(r" rule=\S+ .* header_from=", since)  # written just after the reply
    lines = milter.log.find(r" rule=\S+ .* header_from=", since)
    assert len(lines) == 1, f"{lines}\n{milter.log.text(since)}"
    assert (field_of(lines[0], "action"), field_of(lines[0], "rule")) == (case.action, case.rule)
    assert field_of(lines[0], "login") == (case.user or "-")
    assert field_of(lines[0], "queue") != "-", lines[0]  # Postfix sends i at end of headers


def test_no_header_steps_when_the_setting_is_off(
    mta_sandbox: Sandbox, milter: OurMilter, tmp_path: Path
) -> None:
    """Nobody has it on: Postfix sends no header, so a spoofed From: is not even seen."""
    mta_sandbox.postfix.use_milter(milter.socket)
    milter.sync(())
    since = milter.log.mark()
    reply, transcript = send(mta_sandbox, tmp_path, ("From: alice@example.com",), None)
    assert reply.code == 250, transcript
    milter.log.wait_for(rf"rcpt=<{RCPT}>", since)
    assert milter.log.find(r"header_from=", since) == []
