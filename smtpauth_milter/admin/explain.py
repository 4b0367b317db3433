"""``smtpauth-milter check``: run the milter's own decision and explain it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.addresses import AddressError, parse_path
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.core.networks import parse_ip
from smtpauth_milter.core.policy import Action, Request, Verdict, decide_with_spf
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.core.spf import SpfResult
from smtpauth_milter.lookups.spf import SpfAnswer, SpfChecks

CONTINUING = (Action.CONTINUE, Action.WOULD_REJECT, Action.WOULD_TEMPFAIL)


@dataclass(frozen=True)
class Report:
    request: Request
    verdicts: tuple[tuple[str, Verdict], ...]
    settings: Settings | None
    grants: tuple[str, ...]
    spf: SpfAnswer | None = None  # when SPF was consulted, as the milter would

    def _spf_fields(self) -> dict[str, str | None]:
        return {} if self.spf is None else {"spf": self.spf.result.value}

    @property
    def all_continue(self) -> bool:
        return all(verdict.action in CONTINUING for _, verdict in self.verdicts)

    def lines(self) -> list[str]:
        return [
            logfmt.line(
                {
                    "rcpt": rcpt,
                    "action": v.action.value,
                    "rule": v.rule.value,
                    "reply": str(v.reply) if v.reply else None,
                }
                | self._spf_fields()
            )
            for rcpt, v in self.verdicts
        ] + self._spf_lines()

    def _spf_lines(self) -> list[str]:
        if self.spf is None:
            return []
        answer = self.spf
        return [
            logfmt.line(
                {"spf": answer.result.value, "record": answer.record, "detail": answer.detail}
            )
        ]

    def as_json(self) -> dict[str, Any]:
        settings = self.settings.as_values() if self.settings is not None else None
        return {
            "recipients": [
                {
                    "rcpt": rcpt,
                    "action": v.action.value,
                    "rule": v.rule.value,
                    "reply": str(v.reply) if v.reply else None,
                    "domain": v.domain,
                }
                for rcpt, v in self.verdicts
            ],
            "client": str(self.request.client) if self.request.client else None,
            "login": self.request.login,
            "from": self.request.sender,
            "settings": settings,
            "grants": list(self.grants),
            "spf": None
            if self.spf is None
            else {
                "result": self.spf.result.value,
                "record": self.spf.record,
                "detail": self.spf.detail,
            },
        }


def _bracketed(address: str) -> str:
    text = address.strip()
    return text if text.startswith("<") else f"<{text}>"


def explain(
    snapshot: Snapshot,
    client: str | None,
    login: str | None,
    sender: str,
    rcpts: Sequence[str],
    spf: SpfChecks,
) -> Report:
    """The milter's verdicts; SPF is looked up as the milter would, with ``spf``."""
    address = None
    if client is not None:
        address = parse_ip(client)
        if address is None:
            raise SmtpauthError(f"bad --client {client!r}: not an IP address")
    request = Request(address, login or None, _bracketed(sender))
    answers: list[SpfAnswer] = []

    def lookup_spf(asking: Request) -> SpfResult:
        assert asking.client is not None  # needs_spf asks only with a client address
        glob = snapshot.global_settings
        answers.append(spf.check(glob.dns_resolver, glob.spf_timeout, asking.client, asking.sender))
        return answers[-1].result

    decided = []
    for rcpt in rcpts:
        request, verdict = decide_with_spf(snapshot, request, _bracketed(rcpt), lookup_spf)
        decided.append((rcpt, verdict))
    verdicts = tuple(decided)
    try:
        parsed = parse_path(request.sender)
    except AddressError:
        parsed = None
    settings = snapshot.settings_for(parsed.domain) if parsed is not None else None
    grants = snapshot.grants.get(login.strip().lower(), frozenset()) if login else frozenset()
    return Report(
        request, verdicts, settings, tuple(sorted(grants)), answers[0] if answers else None
    )
