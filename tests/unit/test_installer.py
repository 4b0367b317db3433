"""The install command's bad input: one line, exit 2, nothing changed (the real
install is tests/system/test_install.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
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


def _layout_with_config(tmp_path: Path, text: str) -> Layout:
    layout = Layout(config_dir=tmp_path / "etc", store_dir=tmp_path / "lib")
    layout.config_dir.mkdir()
    layout.config.write_text(text)
    return layout


@pytest.mark.parametrize(
    "state",
    ["{lib}/state.sqlite", "{lib}/store.sqlite", "{tmp}/state.sqlite"],
    ids=["beside", "the-store-itself", "above"],
)
def test_a_state_the_milter_would_own_the_settings_directory_with_is_refused(
    tmp_path: Path, state: str
) -> None:
    lib = tmp_path / "lib"
    path = state.format(lib=lib, tmp=tmp_path)
    layout = _layout_with_config(
        tmp_path, f'db = "sqlite:///{lib}/store.sqlite"\nstate = "sqlite:///{path}"\n'
    )
    with pytest.raises(InstallError, match="shares a directory with the settings store"):
        steps.state(steps.Report(), layout)
    assert not lib.exists() and not Path(path).exists()


def test_a_config_without_state_gets_a_note_and_no_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = _layout_with_config(tmp_path, f'db = "sqlite:///{tmp_path}/lib/store.sqlite"\n')
    report = steps.Report()
    assert steps.state(report, layout) is False
    assert report.changed == []
    out = capsys.readouterr().out
    assert out.startswith(f"note: {layout.config} sets no `state`")
    assert f'state = "sqlite:///{tmp_path}/lib/state/state.sqlite"' in out


def test_a_postgresql_state_is_left_to_the_settings_store_migration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql+psycopg://milter_state:pw@db/smtpauth"
    layout = _layout_with_config(tmp_path, f'db = "{url}"\nstate = "{url}"\n')
    report = steps.Report()
    assert steps.state(report, layout) is False
    assert report.changed == []
    assert "pw" not in capsys.readouterr().out


def test_the_shipped_config_unit_and_layout_agree_on_the_state_directory() -> None:
    """The installed config's state is in the unit's ReadWritePaths= and in the layout's
    state directory; the settings store's directory is not writable to the unit."""
    config = tomllib.loads((ROOT / "contrib" / "smtpauth-milter.toml").read_text())
    layout = Layout()
    assert config["state"] == f"sqlite:///{layout.state_dir}/state.sqlite"
    assert config["db"] == f"sqlite:///{layout.store_dir}/store.sqlite"
    unit = (ROOT / "contrib" / "systemd" / "smtpauth-milter.service").read_text()
    (writable,) = [line for line in unit.splitlines() if line.startswith("ReadWritePaths=")]
    paths = [path.lstrip("-") for path in writable.split("=", 1)[1].split()]
    assert paths == [str(layout.socket_dir), str(layout.state_dir)]
    assert not [line for line in unit.splitlines() if line.startswith("StateDirectory")]


@pytest.mark.parametrize(
    ("line", "error"),
    [('state = ""', "state must be a database URL"), ("state = 5", "state must be a database URL"),
     ('state = "sqlite:///state/state.sqlite"', "relative path state/state.sqlite")],
)  # fmt: skip
def test_a_bad_state_is_one_error_before_any_change(tmp_path: Path, line: str, error: str) -> None:
    layout = _layout_with_config(
        tmp_path, f'db = "sqlite:///{tmp_path}/lib/store.sqlite"\n{line}\n'
    )
    with pytest.raises(InstallError, match=error):
        steps.state(steps.Report(), layout)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["etc"]
