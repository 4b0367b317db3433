"""Shared fixtures: a real store (SQLite file; PostgreSQL where marked) and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from smtpauth_milter.cli import run_cli


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


CliRunner = Callable[..., CliResult]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state' / 'store.sqlite'}"


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """The store every store-touching test runs against."""
    return sqlite_url


@pytest.fixture
def cli(
    db_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> CliRunner:
    """Run ``smtpauth-milter --db URL ARGS...`` in process; returns code, stdout, stderr."""
    monkeypatch.delenv("SMTPAUTH_MILTER_DB", raising=False)
    monkeypatch.delenv("SMTPAUTH_MILTER_CONFIG", raising=False)

    def invoke(*args: str, db: str | None = db_url) -> CliResult:
        capsys.readouterr()
        prefix = ["--db", db] if db is not None else []
        code = run_cli([*prefix, *args])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return invoke
