"""SIGHUP reloads and never stops the milter; SIGTERM stops it with exit 0.

libmilter's own signal thread treats SIGHUP exactly like SIGTERM; these run the
real ``smtpauth-milter run`` process, with the supervisor (the default) and
without it (``--no-auto-restart``), and send it real signals.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from tests.harness.milter import MilterProcess, MilterProcesses
from tests.support.verdicts import open_client, seconds_until, verdict_text, verdicts

ALICE = "<alice@example.com>"
REMOTE = ["<x@remote.test>"]
AUTH_REPLY = "530 5.7.0 Authentication required"
MODES = {"supervised": (), "no-auto-restart": ("--no-auto-restart",)}


def write_config(path: Path, **values: object) -> None:
    lines = [
        f'{key} = "{val}"' if isinstance(val, str) else f"{key} = {val}"
        for key, val in values.items()
    ]
    path.write_text("\n".join(lines) + "\n")


def log_count(milter: MilterProcess, needle: str) -> int:
    return milter.log_text().count(needle)


@pytest.mark.parametrize("mode", MODES)
def test_a_burst_of_sighups_reloads_and_never_stops_the_milter(
    milters: MilterProcesses, store_url: str, mode: str
) -> None:
    milter = milters.start(store_url, *MODES[mode], graceful_stop=True)
    pid = milter.pid
    for _ in range(200):
        os.kill(pid, signal.SIGHUP)
    seconds_until(lambda: "event=reload " in milter.log_text(), 5.0, "a reload logged")
    for _ in range(3):  # still deciding, in the same process
        assert verdicts(milter.socket, sender=ALICE, rcpts=REMOTE) == [AUTH_REPLY]
    assert milter.alive and milter.pid == pid
    assert milter.stop() == 0
    assert milter.trouble() == []


@pytest.mark.parametrize("mode", MODES)
def test_sighup_rereads_the_config_file_and_applies_what_it_can(
    milters: MilterProcesses, store_url: str, tmp_path: Path, mode: str
) -> None:
    config = tmp_path / "milter.toml"
    write_config(config, **{"log-level": "info", "max-stale": 300})
    milter = milters.start(
        store_url, *MODES[mode], env={"SMTPAUTH_MILTER_CONFIG": str(config)}, graceful_stop=True
    )
    assert verdicts(milter.socket, sender=ALICE, rcpts=REMOTE) == [AUTH_REPLY]
    # a decision line at level info, written by the log writer just after the reply
    seconds_until(lambda: log_count(milter, "action=reject") == 1, 5.0, "the decision line")

    # A metrics address needs a restart: logged, the rest of the reload goes on.
    write_config(config, **{"log-level": "info", "max-stale": 30, "metrics": "127.0.0.1:1"})
    os.kill(milter.pid, signal.SIGHUP)
    seconds_until(lambda: "event=reload-needs-restart" in milter.log_text(), 5.0, "reload logged")
    assert "changed=metrics" in milter.log_text()
    assert "applied=max-stale" in milter.log_text()

    # log-level applies at once: at "error" a refusal (a warning) is no longer logged.
    write_config(config, **{"log-level": "error"})
    os.kill(milter.pid, signal.SIGHUP)

    def refusal_not_logged() -> bool:
        before = log_count(milter, "action=reject")
        assert verdicts(milter.socket, sender=ALICE, rcpts=REMOTE) == [AUTH_REPLY]
        return log_count(milter, "action=reject") == before

    seconds_until(refusal_not_logged, 5.0, "refusals no longer logged")

    # A broken config file is one error line; the running config stays.
    config.write_text("log-level = [\n")
    os.kill(milter.pid, signal.SIGHUP)
    seconds_until(lambda: "event=reload-failed" in milter.log_text(), 5.0, "reload-failed")
    assert verdicts(milter.socket, sender=ALICE, rcpts=REMOTE) == [AUTH_REPLY]
    assert milter.alive
    assert milter.stop() == 0


def test_the_info_reload_line_names_what_was_applied(
    milters: MilterProcesses, store_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "milter.toml"
    write_config(config, **{"max-stale": 300, "refresh": 1})
    milter = milters.start(store_url, env={"SMTPAUTH_MILTER_CONFIG": str(config)})
    write_config(config, **{"max-stale": 20, "refresh": 2})
    os.kill(milter.pid, signal.SIGHUP)
    seconds_until(lambda: "event=reload " in milter.log_text(), 5.0, "reload logged")
    assert "applied=max-stale,refresh" in milter.log_text()


@pytest.mark.parametrize("mode", MODES)
def test_sighup_polls_the_store_at_once(
    milters: MilterProcesses, store_url: str, mode: str
) -> None:
    # With --refresh 60 a change would wait up to a minute; a reload reads it now.
    milter = milters.start(store_url, *MODES[mode], "--refresh", "60")
    assert verdicts(milter.socket, sender=ALICE, rcpts=REMOTE) == [AUTH_REPLY]
    assert run_cli(["--db", store_url, "settings", "set", "require-auth-local", "off"]) == 0
    os.kill(milter.pid, signal.SIGHUP)
    seconds_until(
        lambda: verdicts(milter.socket, sender=ALICE, rcpts=REMOTE) == ["continue"],
        2.0,
        "the change read right after SIGHUP",
    )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_promptly_with_exit_0(
    milters: MilterProcesses, store_url: str, stop: signal.Signals, mode: str
) -> None:
    """libmilter alone notices a stop only when its accept loop next wakes, up to 5 s
    later; we wake it (docs/internals.md#shutdown-and-the-unix-socket)."""
    milter = milters.start(store_url, *MODES[mode], ready="loaded")
    assert milter.process is not None
    # serving: libmilter answers (a stop during start-up may take its 5 s, see the docs)
    assert verdicts(milter.socket, sender=ALICE, rcpts=REMOTE) == [AUTH_REPLY]
    sent = time.monotonic()
    milter.process.send_signal(stop)
    assert milter.process.wait(15) == 0
    took = time.monotonic() - sent
    assert took < 2.5, f"stopped {took:.1f} s after {stop.name}:\n{milter.log_text()}"
    assert "event=stop" in milter.log_text()
    # the supervisor forwards a stop to its child as SIGTERM
    seen = stop.name if mode == "no-auto-restart" else "SIGTERM"
    assert f"event=stopping signal={seen}" in milter.log_text()
    assert not milter.trouble()


@pytest.mark.parametrize("mode", MODES)
def test_a_session_open_at_sigterm_is_closed_and_does_not_hold_the_stop(
    milters: MilterProcesses, store_url: str, mode: str
) -> None:
    """libmilter stops serving every session at a stop (docs/operations.md#signals-and-reload):
    the MTA sees the connection close and applies its milter_default_action."""
    milter = milters.start(store_url, *MODES[mode], ready="loaded")
    assert milter.process is not None
    with open_client(milter.socket) as client:
        client.negotiate()
        client.connect("client.example.test", address="203.0.113.9")
        assert verdict_text(client.mail(ALICE, macros={"i": "4ABCDEF0123"})) == "continue"
        sent = time.monotonic()
        milter.process.send_signal(signal.SIGTERM)
        assert milter.process.wait(15) == 0
        assert time.monotonic() - sent < 2.5
        assert client.at_eof(timeout=2.0)
    assert milter.trouble() == []


def test_run_that_fails_before_serving_gives_the_signal_mask_back(store_url: str) -> None:
    """``run`` blocks TERM (libmilter's thread must sigwait it) before it checks anything;
    a run that fails must not leave TERM blocked in its caller, or every process the
    caller starts later inherits it (a private Dovecot then ignored its SIGTERM)."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert run_cli(["--db", store_url, "run", "--socket", "unix:/nonexistent/dir/m.sock"]) != 0
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
