"""The install command's bad input: one line, exit 2, nothing changed (the real
install is tests/system/test_install.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from smtpauth_milter import __version__
from smtpauth_milter.admin.install import steps
from smtpauth_milter.admin.install.__main__ import main, this_source, version_of
from smtpauth_milter.admin.install.layout import Layout
from smtpauth_milter.admin.install.system import InstallError

ROOT = Path(__file__).resolve().parents[2]


def test_a_missing_source_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--from", "/nonexistent/smtpauth_milter-9.9.9-py3-none-any.whl"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "smtpauth-milter install: error: "
        "/nonexistent/smtpauth_milter-9.9.9-py3-none-any.whl: no such file or directory\n"
    )


def test_what_a_source_installs(tmp_path: Path) -> None:
    assert this_source() == ROOT  # run from this clone
    assert version_of(ROOT) == __version__
    assert version_of(Path("/x/smtpauth_milter-1.2.3-py3-none-any.whl")) == "1.2.3"
    with pytest.raises(InstallError, match="neither a wheel nor a source tree"):
        version_of(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="the other checks come after the root check")
def test_preflight_refuses_before_any_change(tmp_path: Path) -> None:
    with pytest.raises(InstallError, match="no group no-such-mta: install Postfix first"):
        steps.preflight(Layout(mta_group="no-such-mta"))
    with pytest.raises(InstallError, match="install Postfix first"):
        steps.preflight(Layout(mta_group="root", postfix_spool=tmp_path / "none"))
    regular = tmp_path / "smtpauth-milter"
    regular.write_text("#!/bin/sh\n")
    with pytest.raises(InstallError, match=f"{regular} exists and is not a symbolic link"):
        steps.preflight(Layout(mta_group="root", postfix_spool=tmp_path, command_link=regular))
    assert regular.read_text() == "#!/bin/sh\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run as another user")
def test_not_root_is_one_line_and_exit_2() -> None:
    done = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
         sys.executable, "-P", "-m", "smtpauth_milter.admin.install"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}, cwd="/",
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "smtpauth-milter install: error: run this as root "
        "(it creates a user and writes to /etc and /opt)\n"
    )


def test_the_install_command_needs_nothing_but_the_standard_library() -> None:
    """It runs from the wheel before any dependency is installed: with no site-packages
    (-S) every module of it still imports."""
    modules = ["__main__", "layout", "steps", "system"]
    code = "".join(f"import smtpauth_milter.admin.install.{name}\n" for name in modules)
    done = subprocess.run(
        [sys.executable, "-S", "-P", "-c", code], capture_output=True, text=True, timeout=60,
        check=False, env={"PYTHONPATH": str(ROOT)}, cwd="/",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
