"""SPF evaluation proper: pyspf over our own DNS lookups (dnspython).

pyspf evaluates the record (mechanisms, macros, the 10 DNS-mechanism and the
2 void-lookup limits, strict mode).  Its DNS goes through :func:`_lookup`,
installed once as ``spf.DNSLookup`` (pyspf's only hook, a module global):

- queries go to the ``dns-resolver`` server (or the system's resolvers), with
  absolute names and no search list, and TC answers retried over TCP;
- every query gets what is left of one deadline per check (``spf-timeout``);
- the smallest TTL of every answer (or negative answer's SOA) is recorded,
  so the caller may cache the result exactly as long as DNS allows.

``exp=`` explanations are never fetched: pyspf fetches them while parsing,
even for a pass, and a slow one would eat the deadline.  Every record read is
checked for local-part macros (:func:`~smtpauth_milter.core.spf.uses_local_part`),
so the caller knows whether the answer holds for the whole sender domain.
Evaluating never raises: every failure is an :class:`SpfAnswer` (DNS trouble is
``temperror``); only building an evaluator without a usable resolver does.

A module of its own so that only a process that checks SPF imports pyspf and
dnspython (about 60 ms of CPU): :func:`smtpauth_milter.lookups.spf.make_evaluator`
imports it at the first check.  It imports nothing of ``lookups.spf``: the
values both use are in :mod:`smtpauth_milter.core.spf`.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
import spf

from smtpauth_milter.core.networks import IPAddress
from smtpauth_milter.core.spf import (
    MAX_TTL,
    SYSTEM_RESOLVERS,
    SpfAnswer,
    SpfResult,
    SystemResolvers,
    parse_resolver,
    split_sender,
    uses_local_part,
)

NEGATIVE_TTL = 60.0  # when a negative answer carries no SOA

_RESULTS = {result.value: result for result in SpfResult}


class _CheckState(threading.local):
    """What one running check tells :func:`_lookup` (pyspf calls it without context)."""

    resolver: dns.resolver.Resolver
    deadline: float
    ttl: float
    timed_out: bool


_state = _CheckState()


def _negative_ttl(response: dns.message.Message | None) -> float:
    """RFC 2308: a negative answer lives min(SOA TTL, SOA minimum)."""
    for rrset in response.authority if response is not None else ():
        if rrset.rdtype == dns.rdatatype.SOA:
            return float(min(rrset.ttl, rrset[0].minimum))
    return NEGATIVE_TTL


def _nxdomain_response(exc: dns.resolver.NXDOMAIN) -> dns.message.Message | None:
    try:
        response: dns.message.Message = exc.response(exc.canonical_name)  # type: ignore[no-untyped-call]
    except Exception:  # no response kept for that name
        return None
    return response


def _value(qtype: str, rdata: Any) -> Any:
    """The shape pyspf wants per type (as its own dnspython backend returns)."""
    if qtype in ("A", "AAAA"):
        return rdata.address
    if qtype == "MX":
        return (rdata.preference, rdata.exchange)
    if qtype == "PTR":
        return rdata.target.to_text(True)
    return rdata.strings  # TXT, SPF: a list of byte strings


def _lookup(name: str, qtype: str, strict: bool = True, timeout: float = 30) -> list[Any]:
    """``spf.DNSLookup``: [((name, qtype), value), ...]; DNS trouble raises spf.TempError."""
    state = _state
    remaining = state.deadline - time.monotonic()
    if remaining <= 0:
        state.timed_out = True
        raise spf.TempError("DNS: SPF deadline exceeded")
    try:
        answer = state.resolver.resolve(
            dns.name.from_text(name),  # absolute: no search list
            qtype,
            search=False,
            lifetime=min(float(timeout), remaining),
            raise_on_no_answer=False,
        )
    except dns.resolver.NXDOMAIN as exc:
        state.ttl = min(state.ttl, _negative_ttl(_nxdomain_response(exc)))
        return []
    except dns.exception.Timeout as exc:
        state.timed_out = True
        raise spf.TempError(f"DNS timeout: {exc}") from exc
    except (dns.exception.DNSException, OSError) as exc:  # SERVFAIL, REFUSED, odd names
        raise spf.TempError(f"DNS error: {exc}") from exc
    if answer.rrset is None:  # NODATA
        state.ttl = min(state.ttl, _negative_ttl(answer.response))
        return []
    state.ttl = min(state.ttl, float(answer.rrset.ttl))
    return [((name, qtype), _value(qtype, rdata)) for rdata in answer.rrset]


spf.DNSLookup = _lookup


class _Query(spf.query):  # type: ignore[misc]
    """pyspf's query without exp= fetching, remembering the sender domain's record
    and whether any record it read uses the sender's local part."""

    top_record: str | None = None
    local_part = False
    _top_seen = False

    def get_explanation(self, spec: str) -> None:
        return None

    def dns_spf(self, domain: str) -> str | None:
        record: str | None = super().dns_spf(domain)
        if not self._top_seen:  # the first record asked for is the sender domain's
            self._top_seen = True
            self.top_record = record
        if record is not None and uses_local_part(record):  # include: and redirect= too
            self.local_part = True
        return record


def make_resolver(
    setting: str, system: SystemResolvers = SYSTEM_RESOLVERS
) -> dns.resolver.Resolver:
    """A resolver for the ``dns-resolver`` setting (empty: ``system``, read now).

    Raises :class:`dns.exception.DNSException` when there is none (e.g. a
    resolv.conf without a ``nameserver`` line).
    """
    endpoint = parse_resolver(setting)
    if endpoint is None:
        resolver = dns.resolver.Resolver(filename=system.path)
        resolver.port = system.port
    else:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [endpoint[0]]
        resolver.port = endpoint[1]
    resolver.cache = None  # results are cached, with the TTL they earned, by the caller
    resolver.retry_servfail = False  # SERVFAIL is a temperror at once
    resolver.use_edns(-1)  # plain 512-byte UDP; dnspython retries a truncated answer over TCP
    return resolver


class NoResolver(Exception):
    """No DNS resolver could be made (e.g. a resolv.conf without nameservers)."""


class SpfEvaluator:
    """Evaluates SPF against one DNS setup; thread-safe (each check is its own query).

    Made for one ``dns-resolver`` setting (empty: ``system``, read when made);
    :class:`NoResolver` when that gives no resolver.
    """

    def __init__(
        self, resolver: str = "", timeout: float = 3.0, system: SystemResolvers = SYSTEM_RESOLVERS
    ) -> None:
        self.setting = resolver
        self.timeout = timeout
        try:
            self._resolver = make_resolver(resolver, system)
        except dns.exception.DNSException as exc:
            raise NoResolver(f"no DNS resolver: {exc}") from exc

    def evaluate(self, client: IPAddress, sender: str) -> SpfAnswer:
        """check_host() for ``client`` and the MAIL FROM address ``sender``; never raises."""
        parts = split_sender(sender)
        if parts is None:
            return SpfAnswer(SpfResult.NONE, None, MAX_TTL, "no sender domain")
        local, domain = parts
        state = _state
        state.resolver = self._resolver
        state.deadline = time.monotonic() + self.timeout
        state.ttl = MAX_TTL
        state.timed_out = False
        query: _Query | None = None
        try:
            query = _Query(
                i=str(client),
                s=f"{local}@{domain}",
                h=domain,
                timeout=self.timeout,
                querytime=self.timeout,
            )
            text, _code, detail = query.check()
        except spf.TempError as exc:
            text, detail = "temperror", str(exc)
        except spf.PermError as exc:
            text, detail = "permerror", str(exc)
        except Exception as exc:  # a pyspf bug must not become an accept or a crash
            text, detail = "temperror", f"SPF internal error: {exc!r}"
        result = _RESULTS.get(text, SpfResult.TEMPERROR)
        ttl = 0.0 if result is SpfResult.TEMPERROR else state.ttl
        record = query.top_record if query is not None else None
        local_part = query is not None and query.local_part
        return SpfAnswer(result, record, ttl, str(detail), state.timed_out, local_part)
