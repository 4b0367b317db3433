"""The canary: the test database password must never be printed, logged or written down.

Every PostgreSQL test connects with ``CANARY_PASSWORD`` (the throwaway server's
role password).  This plugin collects every test report's captured output,
captured log and failure text, and at the end of the session reads every file
left under pytest's basetemp (milter, Postfix and PostgreSQL logs, CLI output
kept by tests).  Wherever the canary appears, the run fails (exit status 1)
with a section naming where, never the password itself.

Files that hold the password on purpose are inputs a test writes, never
anything smtpauth-milter writes: configuration (``*.toml``, Postfix's
``*.cf`` lookup tables such as ``pgsql:``) and any file with ``secret`` in its
name (a passfile).  They are not read.

``PgServer.url()`` returns a ``SecretUrl``: its repr (what pytest prints of a
failing test's arguments) masks the password, so a failing PostgreSQL test is
reported as a failure, not also as a leak.

``SMTPAUTH_TEST_CANARY`` replaces the canary: the plugin's own test runs an
inner session with a different one, so that its deliberate leak does not fail
the outer run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.harness.pgserver import CANARY_PASSWORD

CANARY_ENV = "SMTPAUTH_TEST_CANARY"
MAX_FILE_BYTES = 256 * 1024 * 1024


INPUT_SUFFIXES = (".toml", ".cf")


def is_input(path: Path) -> bool:
    """A file a test wrote with the password in it on purpose (see the module docstring)."""
    return "secret" in path.name or path.suffix in INPUT_SUFFIXES


def canary() -> str:
    return os.environ.get(CANARY_ENV) or CANARY_PASSWORD


class CanaryWatch:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.leaks: dict[str, None] = {}  # where, in order, each place once

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for title, text in report.sections:  # a later phase's report repeats earlier ones
            if self.secret in text:
                self.leaks[f"{report.nodeid}: {title}"] = None
        if self.secret in report.longreprtext:
            self.leaks[f"{report.nodeid}: failure report ({report.when})"] = None

    @pytest.hookimpl(trylast=True)  # after the session fixtures' teardown wrote their logs
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        factory = getattr(session.config, "_tmp_path_factory", None)  # pytest's own basetemp
        if factory is not None:
            for path in self.files_with_secret(factory.getbasetemp()):
                self.leaks[f"file {path}"] = None
        if self.leaks:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def files_with_secret(self, root: Path) -> list[Path]:
        needle = self.secret.encode()
        found = []
        for path in sorted(root.rglob("*")):
            if is_input(path) or path.is_symlink() or not path.is_file():
                continue
            try:
                if path.stat().st_size <= MAX_FILE_BYTES and needle in path.read_bytes():
                    found.append(path)
            except OSError:
                continue  # gone meanwhile, or a file only its daemon may read
        return found

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.leaks:
            return
        terminalreporter.section("the test database password leaked", red=True, bold=True)
        terminalreporter.line(
            "The canary password (tests/harness/pgserver.py CANARY_PASSWORD) appears in:",
            red=True,
        )
        for where in self.leaks:
            terminalreporter.line(f"  {where}", red=True)


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(CanaryWatch(canary()), "smtpauth-canary-watch")
