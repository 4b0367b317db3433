"""Run as root, a config file or sql: map file someone else can write is refused
(sshd's StrictModes), and no command reads a FIFO or a device as one."""

from __future__ import annotations

import os
import pwd
import threading
import time
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.lookups import trusted
from smtpauth_milter.lookups.postfix import MapError
from smtpauth_milter.lookups.sqlmap import read_config
from tests.reliability.test_least_privilege import _one_error_line, needs_root

NOBODY = pwd.getpwnam("nobody").pw_uid


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    assert run_cli(["--db", url, "db", "init"]) == 0
    return url


def _config(tmp_path: Path, store: str, socket: str) -> Path:
    path = tmp_path / "milter.toml"
    path.write_text(f'db = "{store}"\nsocket = "{socket}"\n', encoding="utf-8")
    path.chmod(0o644)
    return path


@needs_root
@pytest.mark.parametrize("command", [["run"], ["settings", "show"], ["doctor"]])
def test_a_config_file_owned_by_a_user_is_refused_by_root(
    command: list[str], store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    important = tmp_path / "important.conf"
    important.write_text("keep me\n")
    config = _config(tmp_path, store, f"unix:{important}")
    os.chown(config, NOBODY, -1)
    assert run_cli(["--config", str(config), *command]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"config file {config} is owned by uid {NOBODY}" in line
    assert f"chown root {config}" in line
    assert important.read_text() == "keep me\n"


@needs_root
@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_a_config_file_others_can_write_is_refused_by_root(
    mode: int, store: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, store, "inet:8894@127.0.0.1")
    config.chmod(mode)
    assert run_cli(["--config", str(config), "settings", "show"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"has mode {mode:04o}" in line and f"chmod go-w {config}" in line


@needs_root
def test_the_owner_of_the_config_directory_is_the_admins_chosen_owner(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chosen = tmp_path / "etc-smtpauth-milter"
    chosen.mkdir()
    os.chown(chosen, NOBODY, -1)
    monkeypatch.setattr(trusted, "CONFIG_DIR", str(chosen))
    config = _config(tmp_path, store, "inet:8894@127.0.0.1")
    os.chown(config, NOBODY, -1)
    assert run_cli(["--config", str(config), "settings", "show"]) == 0


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_config_file_that_is_not_a_regular_file_is_refused_at_once(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "fifo"
    if kind == "fifo":
        os.mkfifo(path)  # nobody writes: reading it would wait forever
    else:
        path = Path("/dev/zero")  # never ends: reading it would fill the memory
    start = time.monotonic()
    assert run_cli(["--config", str(path), "settings", "show"]) == 2
    assert time.monotonic() - start < 10
    assert f"config file {path} is not a regular file" in _one_error_line(capsys.readouterr().err)


@needs_root
def test_a_sql_map_file_owned_by_a_user_is_refused_by_root(tmp_path: Path) -> None:
    path = tmp_path / "owners.cf"
    path.write_text('url = "sqlite:////nonexistent.db"\nquery = "SELECT 1 WHERE :user"\n')
    path.chmod(0o640)
    os.chown(path, NOBODY, -1)
    with pytest.raises(MapError, match=f"owned by uid {NOBODY}"):
        read_config(str(path))


def test_a_file_that_is_not_regular_is_never_even_opened(tmp_path: Path) -> None:
    """Opening a device can act (a watchdog arms when opened): only the regular file
    that was checked is opened. Seen with a FIFO: a writer waiting in open() would
    be let through by any open for reading."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: os.close(os.open(fifo, os.O_WRONLY)), daemon=True)
    writer.start()
    wchan = Path(f"/proc/self/task/{writer.native_id}/wchan")
    deadline = time.monotonic() + 10
    while wchan.read_text() != "wait_for_partner":  # the writer waits in open()
        assert time.monotonic() < deadline, wchan.read_text()
        time.sleep(0.01)
    with pytest.raises(trusted.FileRefused, match="is not a regular file"):
        trusted.read_trusted(str(fifo))
    writer.join(0.5)
    still_waiting = writer.is_alive()
    os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let the writer go
    writer.join(5)
    assert still_waiting, "the FIFO was opened"
