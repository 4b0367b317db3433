"""``smtpauth-milter check``: run the milter's own decisions and explain them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.addresses import AddressError, parse_path
from smtpauth_milter.core.errors import SmtpauthError
from smtpauth_milter.core.networks import parse_ip
from smtpauth_milter.core.ownermaps import MapAnswer
from smtpauth_milter.core.ownership import map_lookup_sender
from smtpauth_milter.core.policy import (
    Action,
    Request,
    Verdict,
    decide_header,
    decide_with_spf,
)
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.core.snapshot import Snapshot
from smtpauth_milter.core.spf import SpfAnswer, SpfResult
from smtpauth_milter.lookups.ownership import OwnershipMaps
from smtpauth_milter.lookups.spf import SpfChecks

CONTINUING = (Action.CONTINUE, Action.WOULD_REJECT, Action.WOULD_TEMPFAIL)


@dataclass(frozen=True)
class Headers:
    """The raw values of every ``From:`` and ``Sender:`` field of a message, in order."""

    froms: tuple[str, ...]
    senders: tuple[str, ...] = ()


@dataclass(frozen=True)
class Report:
    request: Request
    verdicts: tuple[tuple[str, Verdict], ...]
    settings: Settings | None
    grants: tuple[str, ...]
    headers: Headers | None = None
    header_verdict: Verdict | None = None
    spf: SpfAnswer | None = None  # when SPF was consulted, as the milter would
    owners: MapAnswer | None = None  # when sender-login-maps were asked, as the milter would
    alias_of: str | None = None  # the sender's domain is an alias domain of this one

    def _spf_fields(self) -> dict[str, str | None]:
        return {} if self.spf is None else {"spf": self.spf.result.value}

    @property
    def all_continue(self) -> bool:
        every = [v for _, v in self.verdicts]
        if self.header_verdict is not None:
            every.append(self.header_verdict)
        return all(verdict.action in CONTINUING for verdict in every)

    def lines(self) -> list[str]:
        lines = [
            logfmt.line({"rcpt": rcpt, **_outcome(v), **self._spf_fields()})
            for rcpt, v in self.verdicts
        ]
        if self.headers is not None and self.header_verdict is not None:
            header_from = " | ".join(self.headers.froms) if self.headers.froms else None
            lines.append(logfmt.line({"header_from": header_from, **_outcome(self.header_verdict)}))
        if self.spf is not None:
            answer = self.spf
            fields = {"spf": answer.result.value, "record": answer.record, "detail": answer.detail}
            lines.append(logfmt.line(fields))
        if self.owners is not None:
            lines.append(logfmt.line(_map_fields(self.owners)))
        return lines

    def as_json(self) -> dict[str, Any]:
        settings = self.settings.as_values() if self.settings is not None else None
        result: dict[str, Any] = {
            "recipients": [
                {"rcpt": rcpt, **_outcome(v), "domain": v.domain} for rcpt, v in self.verdicts
            ],
            "client": str(self.request.client) if self.request.client else None,
            "login": self.request.login,
            "from": self.request.sender,
            "settings": settings,
            "alias_of": self.alias_of,
            "grants": list(self.grants),
            "sender_login_maps": None if self.owners is None else _map_fields(self.owners),
            "spf": None
            if self.spf is None
            else {
                "result": self.spf.result.value,
                "record": self.spf.record,
                "detail": self.spf.detail,
            },
        }
        if self.headers is not None and self.header_verdict is not None:
            verdict = self.header_verdict
            result["headers"] = {
                "from": list(self.headers.froms),
                "sender": list(self.headers.senders),
                **_outcome(verdict),
                "domain": verdict.domain,
            }
        return result


def _outcome(verdict: Verdict) -> dict[str, str | None]:
    outcome = {
        "action": verdict.action.value,
        "rule": verdict.rule.value,
        "reply": str(verdict.reply) if verdict.reply else None,
    }
    if verdict.owned_by is not None:  # which form proved ownership (a map: and its key)
        outcome["owned_by"] = verdict.owned_by
        if verdict.owner_key is not None:  # as on the log line
            outcome["owner_key"] = verdict.owner_key
    return outcome


def _map_fields(answer: MapAnswer) -> dict[str, str | None]:
    """What sender-login-maps said: the map and key that matched and their owners."""
    return {
        "sender_login_maps": answer.outcome.value,
        "map": answer.map,
        "key": answer.key,
        "owners": ",".join(answer.owners) if answer.map else None,
        "error": answer.error,
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
    headers: Headers | None = None,
    maps: OwnershipMaps | None = None,
) -> Report:
    """Each recipient's verdict and, given ``headers``, the end-of-headers verdict: the
    very calls the milter makes, SPF looked up with ``spf`` as the milter would, and
    sender-login-maps asked on this thread (same deadlines) when the milter would ask."""
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

    owners = None
    wanted = map_lookup_sender(snapshot, request)
    ownership = maps.for_settings(snapshot.global_settings) if maps is not None else None
    if wanted is not None and ownership is not None:
        owners = ownership.answer_now(wanted)
    decided = []
    for rcpt in rcpts:
        request, verdict = decide_with_spf(snapshot, request, _bracketed(rcpt), lookup_spf, owners)
        decided.append((rcpt, verdict))
    verdicts = tuple(decided)
    header_verdict = None
    if headers is not None:
        header_verdict = decide_header(snapshot, request, headers.froms, headers.senders)
    try:
        parsed = parse_path(request.sender)
    except AddressError:
        parsed = None
    settings = snapshot.settings_for(parsed.domain) if parsed is not None else None
    alias_of = snapshot.aliases.get(parsed.domain) if parsed is not None else None
    grants = snapshot.grants.get(login.strip().lower(), frozenset()) if login else frozenset()
    return Report(
        request,
        verdicts,
        settings,
        tuple(sorted(grants)),
        headers,
        header_verdict,
        answers[0] if answers else None,
        owners,
        alias_of,
    )
