"""``smtpauth-milter check``: run the milter's own decision and explain it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.addresses import AddressError, parse_path
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.core.networks import parse_ip
from smtpauth_milter.core.ownermaps import MapAnswer
from smtpauth_milter.core.policy import Action, Request, Verdict, decide, map_lookup_sender
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.lookups.ownership import OwnershipMaps

CONTINUING = (Action.CONTINUE, Action.WOULD_REJECT, Action.WOULD_TEMPFAIL)


@dataclass(frozen=True)
class Report:
    request: Request
    verdicts: tuple[tuple[str, Verdict], ...]
    settings: Settings | None
    grants: tuple[str, ...]
    owners: MapAnswer | None = None  # what sender-login-maps said, when they were asked

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
                    **_ownership(v),
                }
            )
            for rcpt, v in self.verdicts
        ] + self._map_lines()

    def _map_lines(self) -> list[str]:
        if self.owners is None:
            return []
        answer = self.owners
        fields = {
            "sender-login-maps": answer.outcome.value,
            "map": answer.map,
            "key": answer.key,
            "owners": ",".join(answer.owners) if answer.map else None,
            "error": answer.error,
        }
        return [logfmt.line({k: v for k, v in fields.items() if v is not None})]

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
                    "owned_by": v.owned_by,
                    "owner_key": v.owner_key,
                }
                for rcpt, v in self.verdicts
            ],
            "sender_login_maps": None
            if self.owners is None
            else {
                "outcome": self.owners.outcome.value,
                "map": self.owners.map,
                "key": self.owners.key,
                "owners": list(self.owners.owners),
                "error": self.owners.error,
            },
            "client": str(self.request.client) if self.request.client else None,
            "login": self.request.login,
            "from": self.request.sender,
            "settings": settings,
            "grants": list(self.grants),
        }


def _ownership(verdict: Verdict) -> dict[str, str | None]:
    if verdict.owned_by is None:
        return {}
    return {"owned_by": verdict.owned_by, "owner_key": verdict.owner_key}


def _bracketed(address: str) -> str:
    text = address.strip()
    return text if text.startswith("<") else f"<{text}>"


def explain(
    snapshot: Snapshot,
    client: str | None,
    login: str | None,
    sender: str,
    rcpts: Sequence[str],
    maps: OwnershipMaps | None = None,
) -> Report:
    """The milter's decision per recipient; sender-login-maps are asked here, on this
    thread, with the milter's deadlines, when (and only when) the milter would ask them."""
    address = None
    if client is not None:
        address = parse_ip(client)
        if address is None:
            raise SmtpauthError(f"bad --client {client!r}: not an IP address")
    request = Request(address, login or None, _bracketed(sender))
    owners = None
    wanted = map_lookup_sender(snapshot, request)
    ownership = maps.for_settings(snapshot.global_settings) if maps is not None else None
    if wanted is not None and ownership is not None:
        owners = ownership.answer_now(wanted)
    verdicts = tuple((rcpt, decide(snapshot, request, _bracketed(rcpt), owners)) for rcpt in rcpts)
    try:
        parsed = parse_path(request.sender)
    except AddressError:
        parsed = None
    settings = snapshot.settings_for(parsed.domain) if parsed is not None else None
    grants = snapshot.grants.get(login.strip().lower(), frozenset()) if login else frozenset()
    return Report(request, verdicts, settings, tuple(sorted(grants)), owners)
