"""The canary check itself: a session that leaks the password fails, naming where."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.support.canary import CANARY_ENV

ROOT = Path(__file__).resolve().parents[2]
INNER_TESTS = """
import logging
import os

import pytest

SECRET = os.environ["SMTPAUTH_TEST_CANARY"]


def test_prints_it():
    print("connecting to postgresql://u:" + SECRET + "@db/x")


def test_logs_it():
    logging.getLogger("smtpauth_milter").warning("event=start store=%s", SECRET)


def test_writes_it_to_a_log_file(tmp_path):
    (tmp_path / "milter.log").write_text("error=" + SECRET + "\\n")


def test_keeps_it_in_input_files(tmp_path):
    (tmp_path / "pgpass.secret").write_text("*:*:*:u:" + SECRET + "\\n")
    (tmp_path / "milter.toml").write_text('db = "postgresql://u:' + SECRET + '@h/x"\\n')
    (tmp_path / "pgsql-owners.cf").write_text("password = " + SECRET + "\\n")


def test_fails_showing_it():
    assert SECRET == "something else"


def test_clean():
    print("nothing to see")


@pytest.fixture
def url():
    from tests.harness.pgserver import SecretUrl

    return SecretUrl("postgresql+psycopg://u:" + SECRET + "@127.0.0.1:1/db")


def test_fails_with_a_database_url_argument(url):
    assert len(url) < 10  # pytest shows the argument and len()'s: through repr, masked
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> str:
    secret = f"inner-canary-{uuid.uuid4().hex}"  # not the outer run's canary
    monkeypatch.setenv(CANARY_ENV, secret)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    return secret


def test_a_leaked_canary_fails_the_session_naming_every_place(
    pytester: pytest.Pytester, inner: str
) -> None:
    pytester.makepyfile(test_leaks=INNER_TESTS)
    result = pytester.runpytest_subprocess("-p", "tests.support.canary", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, failed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    after = result.stdout.str().split("the test database password leaked", 1)[1]
    summary = after.split("short test summary info", 1)[0]
    assert summary.count("test_leaks.py::test_prints_it: Captured stdout call") == 1
    assert "test_leaks.py::test_logs_it: Captured log call" in summary
    assert "test_leaks.py::test_fails_showing_it: failure report (call)" in summary
    assert "test_writes_it_to_a_log_file0/milter.log" in summary
    assert "test_keeps_it_in_input" not in summary, "input files are not read"
    assert "test_clean" not in summary
    assert "test_fails_with_a_database_url_argument" not in summary, "SecretUrl masks its repr"
    assert "postgresql+psycopg://u:***@127.0.0.1:1/db" in result.stdout.str()
    assert inner not in summary, "the summary names places, never the password"


def test_a_session_that_only_passes_without_leaks_passes(
    pytester: pytest.Pytester, inner: str
) -> None:
    clean = "\n".join(
        line for line in INNER_TESTS.split("\n\n\n") if "test_clean" in line or "import" in line
    )
    pytester.makepyfile(test_clean=clean)
    result = pytester.runpytest_subprocess("-p", "tests.support.canary", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.OK
    assert "password leaked" not in result.stdout.str()
