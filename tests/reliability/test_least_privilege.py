"""Least privilege: run --user/--group, socket and store modes, no password anywhere."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.admin.milterproto.transport import free_tcp_port, wait_for_milter
from smtpauth_milter.daemon.config import clean_env
from smtpauth_milter.store.engine import Store
from tests.harness.milter import SOCKET, MilterProcess, console_script, ours
from tests.harness.pgserver import CANARY_PASSWORD
from tests.support.milterclient import session

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="dropping privileges needs root")
PASSWORD = CANARY_PASSWORD  # the canary plugin also looks for it everywhere


def _group_for_test() -> grp.struct_group:
    """The MTA's group if there is one (postfix), else any non-root group."""
    for name in ("postfix", "mail", "nogroup"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            continue
    pytest.fail("no suitable group to run as")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the unprivileged user can reach (pytest's tmp_path is root-only 0700)."""
    path = Path(tempfile.mkdtemp(prefix="smtpauth-priv-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _proc_status(pid: int) -> dict[str, list[str]]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        fields[key] = rest.split()
    return fields


def _one_error_line(text: str) -> str:
    lines = [line for line in text.splitlines() if "error:" in line]
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


@needs_root
def test_run_user_group_drops_privileges_and_owns_the_socket(shared_dir: Path) -> None:
    group = _group_for_test()
    nobody = pwd.getpwnam("nobody")
    store_dir = shared_dir / "store"
    url = f"sqlite:///{store_dir / 'store.sqlite'}"
    assert run_cli(["--db", url, "db", "init"]) == 0
    assert run_cli(["--db", url, "domain", "add", "example.com"]) == 0
    assert run_cli(["--db", url, "settings", "set", "require-auth-local", "on"]) == 0
    os.chown(store_dir, 0, group.gr_gid)
    os.chown(store_dir / "store.sqlite", 0, group.gr_gid)
    run_dir = shared_dir / "run"
    run_dir.mkdir(mode=0o755)
    sock = run_dir / "milter.sock"

    milter = ours(
        url, shared_dir / "milter.log", "--user", "nobody", "--group", group.gr_name,
        socket=f"unix:{sock}", graceful_stop=False,
    )  # fmt: skip
    with milter.start(ready="loaded"):
        status = _proc_status(milter.pid)
        assert status["Uid"] == [str(nobody.pw_uid)] * 4
        assert status["Gid"] == [str(group.gr_gid)] * 4
        assert set(status["Groups"]) <= {str(group.gr_gid), str(nobody.pw_gid)}
        assert status["CapEff"] == ["0000000000000000"]
        info = sock.stat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert (info.st_uid, info.st_gid) == (nobody.pw_uid, group.gr_gid)
        # ...and it still decides, reading the store as nobody.
        result = session(f"unix:{sock}", sender="alice@example.com", rcpts=["bob@evil.test"])
        assert result.rcpts[0].code == 530
        assert "user=nobody" in milter.log_text()


@needs_root
def test_a_socket_in_a_directory_the_user_can_write_is_made_as_the_user(
    shared_dir: Path,
) -> None:
    """Root binds only where root alone can change names; elsewhere the socket is
    bound with the user's ids, so root never chowns what another user can swap."""
    group = _group_for_test()
    nobody = pwd.getpwnam("nobody")
    run_dir = shared_dir / "run"
    run_dir.mkdir(mode=0o750)
    os.chown(run_dir, nobody.pw_uid, group.gr_gid)
    sock = run_dir / "milter.sock"
    url = f"sqlite:///{shared_dir / 'store.sqlite'}"  # none yet: it starts and tempfails
    milter = ours(
        url, shared_dir / "milter.log", "--user", "nobody", "--group", group.gr_name,
        socket=f"unix:{sock}",
    )  # fmt: skip
    with milter.start(ready="listening"):
        info = sock.lstat()
        assert stat.S_ISSOCK(info.st_mode)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert (info.st_uid, info.st_gid) == (nobody.pw_uid, group.gr_gid)
        assert milter.stop() == 0
    assert not sock.exists(), "removed at stop: the same socket, by its owner"


@needs_root
def test_a_store_the_user_cannot_read_is_one_clear_line(shared_dir: Path, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'private' / 'store.sqlite'}"  # root-only 0750/0640
    assert run_cli(["--db", url, "db", "init"]) == 0
    assert run_cli(["--db", url, "domain", "add", "example.com"]) == 0
    milter = ours(
        url,
        tmp_path / "milter.log",
        "--user",
        "nobody",
        socket=f"unix:{shared_dir / 'milter.sock'}",
    )
    with milter.start(ready="spawned"):
        assert milter.wait_exit(20) == 2
    line = _one_error_line(milter.log_text())
    assert "user nobody cannot read the store" in line


@needs_root
def test_a_missing_store_as_user_starts_tempfails_and_recovers(shared_dir: Path) -> None:
    store_dir = shared_dir / "store"
    store_dir.mkdir(mode=0o755)
    path = store_dir / "store.sqlite"
    url = f"sqlite:///{path}"
    sock = shared_dir / "milter.sock"
    milter = ours(
        url, shared_dir / "milter.log", "--user", "nobody",
        socket=f"unix:{sock}", graceful_stop=False,
    )  # fmt: skip
    with milter.start(ready="listening"):
        milter.wait_for_log("event=store-unreadable", timeout=20)
        assert f"no store at {path} (create it with `smtpauth-milter db init`)" in (
            milter.log_text()
        )
        result = session(f"unix:{sock}", sender="alice@example.com", rcpts=["bob@evil.test"])
        assert (result.rcpts[0].code, result.rcpts[0].xcode) == (451, "4.3.0")
        assert not path.exists(), "the milter never creates the store"
        for args in (
            ["db", "init"],  # 0640 root: nobody reads nothing until every change is in
            ["domain", "add", "example.com"],
            ["settings", "set", "require-auth-local", "on"],
        ):
            assert run_cli(["--db", url, *args]) == 0
        path.chmod(0o644)
        milter.wait_for_log("event=store-recovered", timeout=20)
        result = session(f"unix:{sock}", sender="alice@example.com", rcpts=["bob@evil.test"])
        assert result.rcpts[0].code == 530


@needs_root
@pytest.mark.parametrize("args", [[], ["--user", "root", "--allow-root"]])
def test_a_milter_that_stays_root_says_so_at_start(args: list[str], tmp_path: Path) -> None:
    milter = ours(f"sqlite:///{tmp_path / 'store.sqlite'}", tmp_path / "milter.log", *args)
    with milter.start(ready="listening"):
        milter.wait_for_log("event=running-as-root", timeout=20)
        assert _proc_status(milter.pid)["Uid"][1] == "0"
        lines = [x for x in milter.log_text().splitlines() if "event=running-as-root" in x]
    assert len(lines) == 1 and " WARNING " in lines[0], lines
    assert 'state="the milter keeps every root privilege"' in lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--user", "no-such-user-xyz"], "no such user"),
        (["--user", "nobody", "--group", "no-such-group-xyz"], "no such group"),
        (["--group", "postfix"], "--group needs --user"),
        (["--user", ""], "user must be a user or group name"),
        (["--user", "root"], "--user root: that is root, the milter would keep every privilege"),
    ],
)
def test_bad_user_or_group_is_one_line_exit_2(
    args: list[str],
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # resolve as root would, without serving
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    code = run_cli(["--db", url, "run", "--socket", f"inet:{free_tcp_port()}@127.0.0.1", *args])
    assert code == 2
    assert expected in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_user_is_refused_when_not_root(
    source: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.delenv("SMTPAUTH_MILTER_USER", raising=False)
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    args = ["--db", url]
    tail = ["run", "--socket", f"inet:{free_tcp_port()}@127.0.0.1"]
    if source == "flag":
        tail += ["--user", "nobody"]
    elif source == "env":
        monkeypatch.setenv("SMTPAUTH_MILTER_USER", "nobody")
    else:
        config = tmp_path / "milter.toml"
        config.write_text('user = "nobody"\ngroup = "nogroup"\n', encoding="utf-8")
        args += ["--config", str(config)]
    assert run_cli([*args, *tail]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "only root can switch user" in line
    assert not (tmp_path / "store.sqlite").exists(), "refused before touching the store"


def test_a_new_sqlite_store_is_not_world_readable_whatever_the_umask(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new' / 'deeper' / 'store.sqlite'}"
    old = os.umask(0)
    try:
        assert run_cli(["--db", url, "db", "init"]) == 0
    finally:
        os.umask(old)
    store = tmp_path / "new" / "deeper" / "store.sqlite"
    assert stat.S_IMODE(store.stat().st_mode) == 0o640
    assert stat.S_IMODE(store.parent.stat().st_mode) == 0o750
    # (Missing parents above the store's own directory follow the umask: pathlib's
    # mkdir(parents=True) applies the mode to the last directory only.)
    for extra in store.parent.iterdir():  # no journal or WAL file left world-readable
        assert not stat.S_IMODE(extra.stat().st_mode) & 0o007, extra


def test_the_database_password_never_reaches_the_milter_log(tmp_path: Path) -> None:
    """PostgreSQL down at start: the milter starts, tempfails, and logs no password."""
    url = f"postgresql+psycopg://milter:{PASSWORD}@127.0.0.1:{free_tcp_port()}/smtpauth"
    milter = ours(url, tmp_path / "milter.log", "--max-stale", "1", graceful_stop=False)
    with milter.start(ready="spawned"):
        milter.wait_for_log("event=store-unreadable", timeout=20)
        wait_for_milter(milter.socket, 10, milter.process)
        result = session(milter.socket, sender="alice@example.com", rcpts=["bob@evil.test"])
        assert (result.rcpts[0].code, result.rcpts[0].xcode) == (451, "4.3.0")
        log = milter.log_text()
    assert "event=start" in log and "***" in log
    assert PASSWORD not in log


@pytest.mark.parametrize(
    "args",
    [
        ["settings", "show"],
        ["settings", "show", "--json"],
        ["settings", "set", "dry-run", "on"],
        ["db", "upgrade"],
        ["db", "current"],
        ["db", "check"],
        ["export"],
        ["check", "--from", "a@example.com", "--rcpt", "b@example.net"],
    ],
)
def test_the_database_password_never_reaches_the_cli_output(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql+psycopg://milter:{PASSWORD}@127.0.0.1:{free_tcp_port()}/smtpauth"
    assert run_cli(["--db", url, *args]) == 2
    captured = capsys.readouterr()
    assert PASSWORD not in captured.out + captured.err
    _one_error_line(captured.err)


QUICKSTART_USER = "smtpauth-qs-test"  # made by the test's quickstart, removed after


@needs_root
def test_quickstart_as_root_serves_as_an_unprivileged_system_user(shared_dir: Path) -> None:
    """scripts/quickstart's serving half, as root, on a store in a temporary directory:
    it creates the system user, lets it read the store, and the milter is not root."""
    assert subprocess.run(["getent", "passwd", QUICKSTART_USER], check=False).returncode == 2
    store = shared_dir / "store" / "store.sqlite"
    # a store left by an earlier version's quickstart: this one upgrades it before serving
    assert run_cli(["--db", f"sqlite:///{store}", "db", "init"]) == 0
    older = Store(f"sqlite:///{store}")
    older.downgrade("0006")
    older.dispose()
    env = {
        "SMTPAUTH_MILTER_DB": f"sqlite:///{store}",
        "SMTPAUTH_MILTER_USER": QUICKSTART_USER,
        "SMTPAUTH_MILTER_BIN": console_script(),
    }
    script = str(Path(__file__).parents[2] / "scripts" / "quickstart-serve")
    milter = MilterProcess(
        [script, "--socket", SOCKET], shared_dir / "milter.log", env=clean_env(**env)
    )
    try:
        # db init, a look-up of the store path and useradd come first: more than a start
        with milter.start(timeout=60, ready="loaded"):  # it read the store as the new user
            entry = pwd.getpwnam(QUICKSTART_USER)
            assert 0 < entry.pw_uid < 1000 and entry.pw_shell == "/usr/sbin/nologin"
            status = _proc_status(milter.pid)
            assert status["Uid"] == [str(entry.pw_uid)] * 4
            assert status["CapEff"] == ["0000000000000000"]
            result = session(milter.socket, sender="a@remote.test", rcpts=["b@remote.test"])
            assert [r.kind for r in result.rcpts] == ["continue"]
            assert milter.stop() == 0
        assert (store.stat().st_uid, store.stat().st_gid) == (0, entry.pw_gid)
        assert stat.S_IMODE(store.stat().st_mode) == 0o640  # the user reads, never writes
        # the milter's own writes (login counts) go to a state store the user owns
        state = store.parent / "state" / "state.sqlite"
        assert (state.stat().st_uid, state.parent.stat().st_uid) == (entry.pw_uid,) * 2
        assert f"state=sqlite:///{state} " in milter.log.path.read_text()  # the start line
        assert f"sqlite:///{store} is at schema {Store(f'sqlite:///{store}').head()}" in (
            milter.log.path.read_text()
        )
    finally:
        subprocess.run(["userdel", QUICKSTART_USER], check=False, capture_output=True)
