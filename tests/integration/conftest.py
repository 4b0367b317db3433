"""Fixtures for tests that drive a real, private Postfix + Dovecot (marker ``mta``).

- ``mta_sandbox`` (session): a running :class:`sandbox.Sandbox`, no milter.
- ``postfix_with_milter`` (function): ``configure(milter_socket | None) -> Sandbox``;
  points Postfix's ``smtpd_milters`` at ``milter_socket`` (Postfix notation,
  ``inet:127.0.0.1:PORT`` or ``unix:/path``) and reloads; back to no milter
  after the test.
- ``run_milter`` (function): ``start(argv, milter_socket, stop_timeout=2.0) ->
  MilterProcess``; starts any milter command through the one harness
  (:mod:`tests.harness.milter`; ``SOCKET`` in ``argv`` becomes ``milter_socket`` in
  libmilter notation), waits until it accepts connections, hands a unix socket
  to group postfix (0660), and stops it after the test (SIGTERM, SIGKILL
  after ``stop_timeout`` s).
- ``reject_milter`` (function): ``start(milter_socket) -> MilterProcess`` for
  the test milter in ``reject_milter.py``.

Without root or without postfix/dovecot/swaks the MTA tests fail, never skip:
``scripts/test`` installs them. Deselect them knowingly with ``-m "not mta"``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import pytest

from tests.harness.milter import SOCKET, MilterProcess
from tests.harness.mta import Sandbox, libmilter_socket, start_sandbox

HERE = Path(__file__).resolve().parent
REQUIRED_TOOLS = ("postfix", "dovecot", "swaks")
_milter_logs = itertools.count()

ConfigureMilter = Callable[[str | None], Sandbox]


class RunMilter(Protocol):
    def __call__(
        self, argv: Sequence[str], milter_socket: str, stop_timeout: float = ...
    ) -> MilterProcess: ...


StartRejectMilter = Callable[[str], MilterProcess]


def _missing_prerequisites() -> list[str]:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root")
    return missing


@pytest.fixture(scope="session")
def mta_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    missing = _missing_prerequisites()
    if missing:
        pytest.fail(
            f"MTA sandbox needs: {', '.join(missing)} (scripts/test installs them; "
            'deselect with -m "not mta")'
        )
    sandbox = start_sandbox(tmp_path_factory.mktemp("mta"))
    try:
        yield sandbox
    finally:
        sandbox.stop(wait=False)  # the end of the run: 3-5 s of wind-down nobody waits for


@pytest.fixture
def postfix_with_milter(mta_sandbox: Sandbox) -> Iterator[ConfigureMilter]:
    def configure(milter_socket: str | None) -> Sandbox:
        mta_sandbox.postfix.use_milter(milter_socket)
        return mta_sandbox

    yield configure
    mta_sandbox.postfix.use_milter(None)


@pytest.fixture
def run_milter(mta_sandbox: Sandbox) -> Iterator[RunMilter]:
    started: list[tuple[MilterProcess, float]] = []

    def start(argv: Sequence[str], milter_socket: str, stop_timeout: float = 2.0) -> MilterProcess:
        log = mta_sandbox.root / f"milter-{next(_milter_logs)}.log"
        milter = MilterProcess(argv, log, libmilter_socket(milter_socket), postfix_group=True)
        started.append((milter, stop_timeout))
        return milter.start(timeout=10.0)

    yield start
    for milter, stop_timeout in started:
        milter.stop(stop_timeout)


@pytest.fixture
def reject_milter(run_milter: RunMilter) -> StartRejectMilter:
    def start(milter_socket: str) -> MilterProcess:
        argv = [sys.executable, str(HERE / "reject_milter.py"), SOCKET]
        # plain pymilter needs up to ~5 s to notice SIGTERM; this helper keeps no state.
        return run_milter(argv, milter_socket, stop_timeout=0)

    return start
