"""Prometheus metrics for ``run --metrics HOST:PORT``: counters, one gauge, one histogram.

The hot path (one decision: per recipient, and per message at end of headers)
costs one counter increment and one histogram observation: the labelled
counter children are resolved once, here, not per decision.  The snapshot age
is computed when Prometheus scrapes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    make_wsgi_app,
)

from smtpauth_milter.core.errors import ConfigError
from smtpauth_milter.core.policy import Action, Rule, Verdict
from smtpauth_milter.core.spf import SpfResult
from smtpauth_milter.daemon.config import check_listen
from smtpauth_milter.daemon.metricsserver import MetricsServer, bind
from smtpauth_milter.daemon.supervisor import MAX_RESTARTS, WINDOW

PREFIX = "smtpauth_milter"
# A decision takes microseconds; the upper buckets catch GIL contention and GC pauses.
LATENCY_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005,
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.1,
)  # fmt: skip

# A lookup (DNS, a map) takes a millisecond on a good day and its deadline on a bad one.
LOOKUP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    """Every metric of one milter process, in its own registry (not the global one)."""

    def __init__(self, snapshot_age: Callable[[], float | None] = lambda: None) -> None:
        self.registry = CollectorRegistry()
        # Set by the server once the cache exists: called at scrape time only.
        self.snapshot_age = snapshot_age
        decisions = Counter(
            f"{PREFIX}_decisions",
            "Decisions, by action and rule: one per recipient, one per message at end of headers.",
            ["action", "rule"],
            registry=self.registry,
        )
        # Resolved once: ``labels()`` per decision would cost a dict lookup under a lock.
        self._decisions = {
            (action, rule): decisions.labels(action.value, rule.value)
            for action in Action
            for rule in Rule
        }
        self.sessions = Counter(
            f"{PREFIX}_sessions", "SMTP sessions the MTA opened.", registry=self.registry
        )
        self.refreshes = Counter(
            f"{PREFIX}_store_refreshes",
            "Successful polls of the store.",
            registry=self.registry,
        )
        self.refresh_failures = Counter(
            f"{PREFIX}_store_refresh_failures",
            "Polls of the store that failed (the last good settings stay in use).",
            registry=self.registry,
        )
        age = Gauge(
            f"{PREFIX}_snapshot_age_seconds",
            "Seconds since the settings were last read from the store (+Inf: never).",
            registry=self.registry,
        )
        age.set_function(lambda: _age_or_inf(self.snapshot_age()))
        self.latency = Histogram(
            f"{PREFIX}_decision_seconds",
            "Time to decide one recipient, or one message at end of headers.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._lookups = Counter(
            f"{PREFIX}_lookups",
            "Lookups of outside data, by source and outcome "
            "(hit: from the cache; timeout, overloaded, error: no answer, tempfailed).",
            ["source", "outcome"],
            registry=self.registry,
        )
        self.lookup_latency = Histogram(
            f"{PREFIX}_lookup_seconds",
            "Time a recipient decision waited for a lookup that missed the cache.",
            ["source"],
            buckets=LOOKUP_BUCKETS,
            registry=self.registry,
        )
        spf_results = Counter(
            f"{PREFIX}_spf_results",
            "SPF results the decisions used, by result.",
            ["result"],
            registry=self.registry,
        )
        self._spf_results = {result: spf_results.labels(result.value) for result in SpfResult}
        self.spf_timeouts = Counter(
            f"{PREFIX}_spf_timeouts",
            "SPF checks that ran out of time (spf-timeout): each one tempfailed.",
            registry=self.registry,
        )
        self.restarts = Counter(
            f"{PREFIX}_restarts",
            "Milter processes the supervisor restarted after a crash (run --auto-restart).",
            registry=self.registry,
        )
        self.delayed_restarts = Counter(
            f"{PREFIX}_restarts_delayed",
            f"Restarts the supervisor delayed: more than {MAX_RESTARTS} came within "
            f"{WINDOW:.0f} seconds.",
            registry=self.registry,
        )
        self.restart_delay = Gauge(
            f"{PREFIX}_restart_delay_seconds",
            "Seconds the supervisor waited before starting this milter process "
            "(0 unless it was backing off).",
            registry=self.registry,
        )
        self._login_limits = Counter(
            f"{PREFIX}_login_limit",
            "Recipients a per-login limit acted on, by limit (login-frozen: the login was "
            "frozen already) and action (tempfail, freeze, frozen, would-tempfail, would-freeze).",
            ["limit", "action"],
            registry=self.registry,
        )
        # Set by the server once the login limiter exists: called at scrape time only.
        self.frozen_logins: Callable[[], float] = lambda: 0.0
        frozen = Gauge(
            f"{PREFIX}_frozen_logins",
            "Logins frozen now (login-limit-action freeze, or `login freeze`).",
            registry=self.registry,
        )
        frozen.set_function(lambda: self.frozen_logins())
        ProcessCollector(registry=self.registry)
        self._server: MetricsServer | None = None

    def decided(self, verdict: Verdict, seconds: float) -> None:
        self._decisions[verdict.action, verdict.rule].inc()
        self.latency.observe(seconds)

    def login_limited(self, limit: str, action: str) -> None:
        """Rare (a login over a limit or frozen): labels resolved here, not ahead."""
        self._login_limits.labels(limit, action).inc()

    def looked_up(self, source: str, outcome: str, seconds: float) -> None:
        """The lookups layer's observer: every lookup, cache hits included."""
        self._lookups.labels(source, outcome).inc()
        if outcome != "hit":
            self.lookup_latency.labels(source).observe(seconds)

    def spf_answered(self, result: SpfResult, timed_out: bool) -> None:
        self._spf_results[result].inc()
        if timed_out:
            self.spf_timeouts.inc()

    def restarted(self, delay: float) -> None:
        """The supervisor's observer, called before it forks the new milter process."""
        self.restarts.inc()
        self.restart_delay.set(delay)
        if delay:
            self.delayed_restarts.inc()

    def refreshed(self, ok: bool) -> None:
        (self.refreshes if ok else self.refresh_failures).inc()

    def listen(self, spec: str) -> None:
        """Bind HOST:PORT (as root, once); :meth:`serve` answers on it.

        Split in two for the supervisor: the parent binds, each milter child
        serves, so the port outlives a crashed child.
        """
        host, port = check_listen(spec)
        try:
            listener = bind(host, port)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {spec}: {exc.strerror or exc}") from exc
        self._server = MetricsServer(listener, make_wsgi_app(self.registry))

    def serve(self) -> None:
        """Answer ``/metrics`` from one daemon thread, on the socket :meth:`listen` bound."""
        if self._server is not None:
            threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()  # waits for serve_forever, when it runs
            self._server.close()
            self._server = None


def _age_or_inf(age: float | None) -> float:
    return math.inf if age is None else age
