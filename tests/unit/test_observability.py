"""Metrics, the JSON log format and the sample alert rules, without a process."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from smtpauth_milter.core import logfmt
from smtpauth_milter.core.errors import ConfigError
from smtpauth_milter.core.networks import parse_ip
from smtpauth_milter.core.policy import Action, Request, Rule, Verdict
from smtpauth_milter.core.replies import Reply
from smtpauth_milter.daemon.config import RunConfig, check_listen
from smtpauth_milter.daemon.logsetup import JsonFormatter, OneLineFormatter
from smtpauth_milter.daemon.metrics import Metrics

from .test_logfmt import HOSTILE, decode, parse_line

RULES = Path(__file__).resolve().parents[2] / "contrib" / "prometheus" / "smtpauth-milter.rules.yml"
REJECT = Verdict(
    Action.REJECT, Rule.AUTH_REQUIRED, Reply(530, "5.7.0", "Authentication required"), "x.test"
)


def _format(formatter: logging.Formatter, message: object, exc: bool = False) -> str:
    record = logging.LogRecord("smtpauth_milter", logging.WARNING, __file__, 1, message, (), None)
    if exc:
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            import sys

            record.exc_info = sys.exc_info()
    return formatter.format(record)


@pytest.mark.parametrize("hostile", HOSTILE)
def test_decision_line_is_one_line_with_the_same_fields_in_both_formats(hostile: str) -> None:
    request = Request(parse_ip("203.0.113.9"), hostile, f"<{hostile}@x.test>")
    fields = logfmt.decision_fields(hostile, request, f"<{hostile}>", REJECT)
    message = logfmt.Fields(fields)

    text = _format(OneLineFormatter("%(message)s"), message)
    as_json = _format(JsonFormatter(), message)

    for line in (text, as_json):
        assert len(line.splitlines()) == 1
        assert re.search(r"[\x00-\x1f\x7f\x85\u2028\u2029]", line) is None
    assert as_json.isascii()  # ensure_ascii: nothing for a terminal or syslog to interpret
    logfmt_fields = {key: decode(raw) for key, raw in parse_line(text)}
    obj = json.loads(as_json)
    assert list(obj)[:2] == ["time", "level"] and obj["level"] == "warning"
    assert {k: v for k, v in obj.items() if k not in ("time", "level")} == logfmt_fields
    assert list(logfmt_fields) == list(fields)


def test_json_plain_messages_and_tracebacks_stay_on_one_line() -> None:
    line = _format(JsonFormatter(), "event=start socket=x\nforged", exc=True)
    assert "\n" not in line
    obj = json.loads(line)
    assert obj["message"] == "event=start socket=x\nforged"
    assert "ValueError: boom\nsecond line" in obj["traceback"]


def test_json_syslog_line_carries_the_tag() -> None:
    line = _format(JsonFormatter(syslog_tag=True), logfmt.Fields({"event": "stop"}))
    tag, _, rest = line.partition(": ")
    assert re.fullmatch(r"smtpauth-milter\[\d+\]", tag)
    assert json.loads(rest)["event"] == "stop"


def test_long_values_are_cut_alike() -> None:
    message = logfmt.Fields({"from": "a" * 2000})
    obj = json.loads(_format(JsonFormatter(), message))
    assert obj["from"] == "a" * logfmt.MAX_VALUE + "..."
    assert decode(dict(parse_line(str(message)))["from"]) == obj["from"]


def test_run_config_log_format_and_metrics() -> None:
    config = RunConfig.resolve("sqlite://", {"log_format": "JSON"}, {"metrics": "127.0.0.1:9466"})
    assert config.log_format == "json" and config.metrics == "127.0.0.1:9466"
    assert RunConfig.resolve("sqlite://", {}, {}).log_format == "logfmt"
    with pytest.raises(ConfigError, match="bad log format"):
        RunConfig.resolve("sqlite://", {}, {"log-format": "xml"})
    with pytest.raises(ConfigError, match="bad metrics address"):
        RunConfig.resolve("sqlite://", {"metrics": "9466"}, {})


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:9466", ("127.0.0.1", 9466)),
        ("[::1]:9466", ("::1", 9466)),
        (":9466", ("127.0.0.1", 9466)),  # loopback unless every interface is asked for
        ("0.0.0.0:9466", ("0.0.0.0", 9466)),
        ("[::]:9466", ("::", 9466)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_metrics_listen_address(spec: str, expected: tuple[str, int]) -> None:
    assert check_listen(spec) == expected


@pytest.mark.parametrize("spec", ["9466", "host:", "host:0", "host:65536", "::1:9466", "h:x"])
def test_bad_metrics_listen_address(spec: str) -> None:
    with pytest.raises(ConfigError):
        check_listen(spec)


def test_metrics_counts_and_computes_the_age_at_scrape() -> None:
    ages: list[float | None] = [None]
    metrics = Metrics(lambda: ages[0])
    metrics.sessions.inc()
    metrics.decided(REJECT, 0.00002)
    metrics.decided(Verdict(Action.CONTINUE, Rule.NON_LOCAL_SENDER), 0.5)
    metrics.refreshed(True)
    metrics.refreshed(False)
    text = generate_latest(metrics.registry).decode()
    assert 'smtpauth_milter_decisions_total{action="reject",rule="auth-required"} 1.0' in text
    assert 'smtpauth_milter_decisions_total{action="continue",rule="non-local-sender"} 1.0' in text
    assert "smtpauth_milter_sessions_total 1.0" in text
    assert "smtpauth_milter_store_refreshes_total 1.0" in text
    assert "smtpauth_milter_store_refresh_failures_total 1.0" in text
    assert 'smtpauth_milter_decision_seconds_bucket{le="2.5e-05"} 1.0' in text
    assert "smtpauth_milter_decision_seconds_count 2.0" in text
    assert "smtpauth_milter_snapshot_age_seconds +Inf" in text
    ages[0] = 1.5
    assert "smtpauth_milter_snapshot_age_seconds 1.5" in generate_latest(metrics.registry).decode()


def test_the_sample_alert_rules_name_real_metrics() -> None:
    """promtool is not installed here: check the structure and the metric names."""
    text = RULES.read_text()
    assert "\t" not in text
    assert re.search(r"^groups:\n  - name: smtpauth-milter\n    rules:\n", text, re.M)
    alerts = re.findall(r"^      - alert: (\w+)\n((?:        .*\n|\s*#.*\n)+)", text, re.M)
    assert [name for name, _ in alerts] == [
        "SmtpauthMilterStoreStale",
        "SmtpauthMilterTempfailsRising",
    ]
    exprs = {name: re.search(r"^        expr: (.+)$", body, re.M) for name, body in alerts}
    stale = exprs["SmtpauthMilterStoreStale"]
    rising = exprs["SmtpauthMilterTempfailsRising"]
    assert stale is not None and stale[1] == "smtpauth_milter_snapshot_age_seconds > 60"
    assert rising is not None and 'smtpauth_milter_decisions_total{action="tempfail"}' in rising[1]
    for _name, body in alerts:
        assert re.search(r"^        for: \d+m$", body, re.M)
        assert re.search(r"^          severity: \w+$", body, re.M)
    # every metric the rules use is one the milter exports
    exported = generate_latest(Metrics().registry).decode()
    for metric in re.findall(r"smtpauth_milter_\w+", text):
        assert f"\n{metric}" in exported or exported.startswith(metric), metric
