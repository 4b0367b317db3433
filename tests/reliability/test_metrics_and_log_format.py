"""``run --metrics`` and ``--log-format json`` on a real milter process and real sessions."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.admin.milterproto.transport import free_tcp_port
from tests.harness.milter import MilterProcesses
from tests.harness.waiting import wait_until
from tests.support.verdicts import open_client, seconds_until, verdicts

ALICE = "<alice@example.com>"
AUTH_REPLY = "530 5.7.0 Authentication required"


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def test_metrics_after_real_sessions(milters: MilterProcesses, store_url: str) -> None:
    port = free_tcp_port()
    milter = milters.start(store_url, "--metrics", f"127.0.0.1:{port}", "--refresh", "0.1")
    assert verdicts(milter.socket, sender=ALICE, rcpts=["<x@remote.test>", "<y@remote.test>"]) == [
        AUTH_REPLY,
        AUTH_REPLY,
    ]
    assert verdicts(milter.socket, sender=ALICE, rcpts=["<x@remote.test>"], login="alice") == [
        "continue"
    ]
    assert verdicts(milter.socket, sender="<z@remote.test>", rcpts=["<x@remote.test>"]) == [
        "continue"
    ]

    samples = scrape(port)
    decisions = "smtpauth_milter_decisions_total"
    assert samples[f'{decisions}{{action="reject",rule="auth-required"}}'] == 2
    assert samples[f'{decisions}{{action="continue",rule="authenticated"}}'] == 1
    assert samples[f'{decisions}{{action="continue",rule="non-local-sender"}}'] == 1
    assert samples[f'{decisions}{{action="tempfail",rule="no-settings"}}'] == 0
    assert samples["smtpauth_milter_sessions_total"] == 3
    assert samples["smtpauth_milter_decision_seconds_count"] == 4
    assert 0 < samples["smtpauth_milter_decision_seconds_sum"] < 1
    assert samples["smtpauth_milter_store_refreshes_total"] >= 1
    assert samples["smtpauth_milter_store_refresh_failures_total"] == 0
    assert 0 <= samples["smtpauth_milter_snapshot_age_seconds"] < 5
    assert samples["process_resident_memory_bytes"] > 0
    assert milter.trouble() == []


def test_metrics_show_a_store_that_went_away(
    milters: MilterProcesses, store_url: str, tmp_path: Path
) -> None:
    port = free_tcp_port()
    milter = milters.start(
        store_url, "--metrics", f"127.0.0.1:{port}", "--refresh", "0.05", "--max-stale", "0.1"
    )
    (tmp_path / "store.sqlite").unlink()
    (tmp_path / "store.sqlite").mkdir()  # unreadable as a database, never recreated

    def failures() -> float:
        return scrape(port)["smtpauth_milter_store_refresh_failures_total"]

    seconds_until(lambda: failures() >= 2, 10, "refresh failures counted")
    assert verdicts(milter.socket, sender=ALICE, rcpts=["<x@remote.test>"])[0].startswith("451 ")
    samples = scrape(port)
    assert samples['smtpauth_milter_decisions_total{action="tempfail",rule="no-settings"}'] == 1
    assert samples["smtpauth_milter_snapshot_age_seconds"] > 0


def test_metrics_port_in_use_is_one_clear_line(milters: MilterProcesses, store_url: str) -> None:
    port = free_tcp_port()
    first = milters.start(store_url, "--metrics", f"127.0.0.1:{port}")
    assert first.alive
    with pytest.raises(RuntimeError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
        milters.start(store_url, "--metrics", f"127.0.0.1:{port}")


def test_json_log_format_decision_lines(milters: MilterProcesses, store_url: str) -> None:
    milter = milters.start(store_url, "--log-format", "json")
    hostile = "<alice@example.com>\r\nqueue=X action=continue"
    verdicts(milter.socket, sender=ALICE, rcpts=["<x@remote.test>", "<y\u2028@remote.test>"])
    verdicts(milter.socket, sender=hostile, rcpts=["<x@remote.test>"], login="é\x1b[31m")
    # written by the log writer just after the replies
    wait_until(lambda: milter.log.text().count('"action"') == 3, 10, "3 decision lines")
    lines = milter.log.text().splitlines()
    objects = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all(line.isascii() for line in lines)
    decisions = [o for o in objects if "action" in o]
    assert len(decisions) == 3
    keys = ["time", "level", "queue", "action", "rule", "client", "login", "from", "rcpt"]
    assert all(list(o)[: len(keys)] == keys for o in decisions)
    assert decisions[0]["action"] == "reject" and decisions[0]["reply"] == AUTH_REPLY
    assert decisions[1]["rcpt"] == "<y\u2028@remote.test>"
    assert decisions[2]["from"] == hostile and decisions[2]["login"] == "é\x1b[31m"
    assert any(o.get("event") == "start" for o in objects)
    assert not any(re.search("Traceback", line) for line in lines)


def test_end_of_headers_decisions_are_counted(milters: MilterProcesses, tmp_path: Path) -> None:
    """One decision per recipient plus one per message at end of headers, each counted."""
    url = f"sqlite:///{tmp_path / 'headers.sqlite'}"
    for args in (
        ["db", "init"],
        ["domain", "add", "example.com"],
        ["settings", "set", "require-header-from-match", "on"],
    ):
        assert run_cli(["--db", url, *args]) == 0
    port = free_tcp_port()
    milter = milters.start(url, "--metrics", f"127.0.0.1:{port}")
    messages = [
        ("<alice@example.com>", "alice@example.com", "Alice <alice@example.com>"),
        ("<list@remote.test>", None, "someone@remote.test"),
    ]
    for sender, login, header_from in messages:
        with open_client(milter.socket) as client:
            result = client.run_session(
                sender=sender, rcpts=["<x@remote.test>"], login=login,
                message=[("From", header_from), ("Subject", "hi")],
            )  # fmt: skip
        assert result.eom is not None and result.eom.continues, result

    samples = scrape(port)
    decisions = "smtpauth_milter_decisions_total"
    assert samples[f'{decisions}{{action="continue",rule="header-from-owned"}}'] == 1
    assert samples[f'{decisions}{{action="continue",rule="header-from-not-checked"}}'] == 1
    assert samples[f'{decisions}{{action="continue",rule="authenticated"}}'] == 1
    assert samples[f'{decisions}{{action="continue",rule="non-local-sender"}}'] == 1
    assert samples["smtpauth_milter_decision_seconds_count"] == 4
    milter.log.wait_for(r" rule=header-from-")  # written by the log writer just after
    wait_until(lambda: len(milter.log.find(r" rule=header-from-")) >= 2, 10, "the eoh lines")
    lines = milter.log.find(r" rule=header-from-")
    assert len(lines) == 2, milter.log_text()
    assert milter.trouble() == []
