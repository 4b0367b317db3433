"""``smtpauth-milter check``: run the milter's own decision and explain it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.addresses import AddressError, parse_path
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.core.networks import parse_ip
from smtpauth_milter.core.policy import Action, Request, Verdict, decide
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.core.snapshot import Snapshot

CONTINUING = (Action.CONTINUE, Action.WOULD_REJECT, Action.WOULD_TEMPFAIL)


@dataclass(frozen=True)
class Report:
    request: Request
    verdicts: tuple[tuple[str, Verdict], ...]
    settings: Settings | None
    grants: tuple[str, ...]
    alias_of: str | None = None  # the sender's domain is an alias domain of this one

    @property
    def all_continue(self) -> bool:
        return all(verdict.action in CONTINUING for _, verdict in self.verdicts)

    def lines(self) -> list[str]:
        """One line per recipient; ``owned_by`` only when the login owns the sender."""
        lines = []
        for rcpt, v in self.verdicts:
            fields = {
                "rcpt": rcpt,
                "action": v.action.value,
                "rule": v.rule.value,
                "reply": str(v.reply) if v.reply else None,
            }
            if v.owned_by is not None:
                fields["owned_by"] = v.owned_by.value
            lines.append(logfmt.line(fields))
        return lines

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
                    "owned_by": v.owned_by.value if v.owned_by else None,
                }
                for rcpt, v in self.verdicts
            ],
            "client": str(self.request.client) if self.request.client else None,
            "login": self.request.login,
            "from": self.request.sender,
            "settings": settings,
            "alias_of": self.alias_of,
            "grants": list(self.grants),
        }


def _bracketed(address: str) -> str:
    text = address.strip()
    return text if text.startswith("<") else f"<{text}>"


def explain(
    snapshot: Snapshot, client: str | None, login: str | None, sender: str, rcpts: Sequence[str]
) -> Report:
    address = None
    if client is not None:
        address = parse_ip(client)
        if address is None:
            raise SmtpauthError(f"bad --client {client!r}: not an IP address")
    request = Request(address, login or None, _bracketed(sender))
    verdicts = tuple((rcpt, decide(snapshot, request, _bracketed(rcpt))) for rcpt in rcpts)
    try:
        parsed = parse_path(request.sender)
    except AddressError:
        parsed = None
    settings = snapshot.settings_for(parsed.domain) if parsed is not None else None
    alias_of = snapshot.aliases.get(parsed.domain) if parsed is not None else None
    grants = snapshot.grants.get(login.strip().lower(), frozenset()) if login else frozenset()
    return Report(request, verdicts, settings, tuple(sorted(grants)), alias_of)
