"""Fixtures shared by the reliability tests: the milters a test starts, and a
store with one local domain that requires a login."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from tests.harness.milter import MilterProcesses


@pytest.fixture
def milters(tmp_path: Path) -> Iterator[MilterProcesses]:
    with MilterProcesses(tmp_path) as procs:
        yield procs


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    for args in (
        ["db", "init"],
        ["domain", "add", "example.com"],
        ["settings", "set", "require-auth-local", "on"],
    ):
        assert run_cli(["--db", url, *args]) == 0
    return url
