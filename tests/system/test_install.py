"""The production install on the real machine, as docs/operations.md describes it.

Marked ``system``: it changes the machine (a system user, /opt/smtpauth-milter,
/etc/smtpauth-milter, /var/lib/smtpauth-milter, the system Postfix's
configuration, /usr/local links) and puts everything back at the end. It runs
the shell blocks of the install section (tests/system/install_docs.py):

1. the build block makes the sdist and wheel from a copy of this checkout
   (``twine check`` accepts both), and the wheel installs into an empty venv
   and runs ``--version``, ``db init`` and ``check``;
2. a lower test version (this checkout as 0.1.99 without its newest migration)
   is installed from its clone (``./scripts/install``); the wheel's install
   command then upgrades it: the venv first, then ``db upgrade``; run again, it
   changes nothing;
3. the milter is started exactly as the installed unit says (User=, Group=,
   SupplementaryGroups=, Environment=, ExecStart=, through setpriv) and the system
   Postfix, configured with the lines the install command printed and Dovecot
   SASL, answers swaks through the unix socket in its chroot;
   as that user the settings store cannot be written and the state store can
   (issue 20's least privilege), and a login past a low limit gets 452 with its
   count in the state store, none in the settings store;
4. uninstall keeps the store and config; uninstall --purge removes everything.

Every pip in the test (the documented build and install blocks run as written, in
their build-isolation environments too) takes its packages from one wheelhouse made
at the start: ``pip wheel`` of the dependencies of setup.cfg and pyproject.toml, so
pymilter compiles at most once per run and no pip asks the package index again
(``PIP_FIND_LINKS`` and ``PIP_NO_INDEX`` in their environment; nothing else changes).
"""

from __future__ import annotations

import configparser
import contextlib
import grp
import os
import pwd
import re
import shutil
import sqlite3
import stat
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest

from smtpauth_milter import __version__
from smtpauth_milter.daemon.config import clean_env
from tests.harness.mta.common import ManagedProcess, start_process
from tests.harness.waiting import wait_until
from tests.system import install_docs as docs
from tests.system.machine import (
    Unit,
    dovecot_sasl,
    machine_problem,
    started_as_unit,
    swaks,
    system_postfix,
    trial_set_aside,
)

pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(os.geteuid() != 0, reason="installs system-wide: needs root"),
]

USER = "smtpauth-milter"
PREFIX = Path("/opt/smtpauth-milter")
CONFIG_DIR = Path("/etc/smtpauth-milter")
STORE_DIR = Path("/var/lib/smtpauth-milter")
STORE = STORE_DIR / "store.sqlite"
STATE_DIR = STORE_DIR / "state"
STATE = STATE_DIR / "state.sqlite"
UNIT = Path("/etc/systemd/system/smtpauth-milter.service")
CONSOLE_UNIT = Path("/etc/systemd/system/smtpauth-milter-console.service")
SOCKET = Path("/var/spool/postfix/smtpauth-milter/milter.sock")
LOWER = "0.1.99"
MIGRATIONS = sorted(p.name for p in (docs.ROOT / "migrations" / "versions").glob("0*.py"))
NEWEST_MIGRATION = MIGRATIONS[-1]  # the lower version lacks it
HEAD, LOWER_HEAD = (name.split("_", 1)[0] for name in (MIGRATIONS[-1], MIGRATIONS[-2]))


def requirements() -> list[str]:
    """What any pip of this test installs: the package's dependencies with the
    postgresql and console extras (setup.cfg), its build requirements (pyproject.toml)
    and ``build``.  An install with another extra needs that extra here too: without
    it, that pip finds no package (PIP_NO_INDEX) and the test fails saying so."""
    setup = configparser.ConfigParser()
    setup.read(docs.ROOT / "setup.cfg")
    needed = [
        *setup["options"]["install_requires"].split(),
        *setup["options.extras_require"]["postgresql"].split(),
        *setup["options.extras_require"]["console"].split(),  # install --console
    ]
    with (docs.ROOT / "pyproject.toml").open("rb") as file:
        needed += tomllib.load(file)["build-system"]["requires"]
    return [*needed, "build"]


def wheelhouse(target: Path) -> dict[str, str]:
    """Every requirement as a wheel in ``target`` (one ``pip wheel``: pymilter compiles
    here, once); the environment that makes a pip install from there and nowhere else."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(target), *requirements()],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"pip wheel: exit {done.returncode}\n{done.stdout}{done.stderr}"
    return {"PIP_FIND_LINKS": str(target), "PIP_NO_INDEX": "1"}


def sh(block: str, cwd: Path, pip: dict[str, str], timeout: float = 600) -> str:
    """One documented shell block, as written, under bash -e; its output.
    ``pip``: the wheelhouse's environment (see :func:`wheelhouse`)."""
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block], cwd=cwd, capture_output=True, text=True,
        timeout=timeout, check=False, env=clean_env(PATH=os.environ["PATH"], **pip),
    )  # fmt: skip
    assert done.returncode == 0, f"{block}\nexit {done.returncode}\n{done.stdout}{done.stderr}"
    return done.stdout


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The installed command, as root, with the installed config (the default file)."""
    return subprocess.run(
        ["/usr/local/bin/smtpauth-milter", *args], capture_output=True, text=True, timeout=60,
        check=False, env=clean_env(SMTPAUTH_MILTER_CONFIG=str(CONFIG_DIR / "smtpauth-milter.toml")),
    )  # fmt: skip


def clone_of_this_checkout(target: Path) -> Path:
    """The checkout's files (tracked and new, not ignored) copied to ``target``; not the
    tests and benchmarks (a release needs neither, and they hold the canary password)."""
    listed = subprocess.run(
        ["git", "-C", str(docs.ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True, timeout=60,
    ).stdout.decode()  # fmt: skip
    for name in filter(None, listed.split("\0")):
        source = docs.ROOT / name
        if source.is_file() and name.split("/")[0] not in ("tests", "bench"):
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def lower_version(clone: Path) -> Path:
    """``clone`` as a lower version: 0.1.99, without the newest migration."""
    init = clone / "smtpauth_milter" / "__init__.py"
    init.write_text(init.read_text().replace(f'"{__version__}"', f'"{LOWER}"'))
    (clone / "migrations" / "versions" / NEWEST_MIGRATION).unlink()
    return clone


def printed(output: str, name: str) -> str:
    """The lines the install command printed for /etc/postfix/NAME."""
    block = output.split(f"Add to /etc/postfix/{name}", 1)[1].split("\n", 1)[1]
    return block.split("\n\n", 1)[0]


def built_wheel(tmp: Path, pip: dict[str, str]) -> Path:
    clone = clone_of_this_checkout(tmp / "clone")
    try:
        sh(docs.BUILD, clone, pip)
    finally:
        shutil.rmtree("/tmp/smtpauth-build", ignore_errors=True)
    dist = clone / "dist"
    subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())],
                   check=True, capture_output=True, timeout=120)  # fmt: skip
    assert (dist / f"smtpauth_milter-{__version__}.tar.gz").is_file()
    return dist / docs.WHEEL


def check_wheel_in_an_empty_venv(wheel: Path, tmp: Path, pip: dict[str, str]) -> None:
    """The wheel alone in a new venv (no pip of its own: this run's pip installs into it,
    ``pip --python``, without the ~3 s of CPU of ensurepip) runs its commands."""
    venv = tmp / "empty-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)  # fmt: skip
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "--quiet", str(wheel)],
                   check=True, timeout=600, env=clean_env(**pip))  # fmt: skip
    command = str(venv / "bin" / "smtpauth-milter")
    env = clean_env(SMTPAUTH_MILTER_DB=f"sqlite:///{tmp / 'empty.sqlite'}")
    version = subprocess.run([command, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.strip() == f"smtpauth-milter, version {__version__}"
    subprocess.run([command, "db", "init"], env=env, check=True, capture_output=True)
    checked = subprocess.run(
        [command, "check", "--from", "alice@example.com", "--rcpt", "bob@example.net"],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0 and "action=continue" in checked.stdout, checked


def check_installed_as_documented() -> None:
    assert (PREFIX / "bin" / "python").resolve().is_relative_to("/usr"), "Debian's python"
    owner = pwd.getpwnam(USER)
    assert owner.pw_shell == "/usr/sbin/nologin"
    for path, mode, owner_group in (
        (STORE_DIR, 0o750, ("root", USER)),
        (STORE, 0o640, ("root", USER)),
        (STATE_DIR, 0o2770, (USER, USER)),
        (STATE, 0o660, (USER, USER)),
        (CONFIG_DIR, 0o750, ("root", USER)),
        (CONFIG_DIR / "smtpauth-milter.toml", 0o640, ("root", USER)),
        (SOCKET.parent, 0o750, (USER, "postfix")),
    ):
        assert (path.stat().st_mode & 0o7777, path.owner(), path.group()) == (
            mode, *owner_group,
        ), path  # fmt: skip
    command = Path("/usr/local/bin/smtpauth-milter")
    assert command.resolve() == PREFIX / "bin" / "smtpauth-milter"
    unit = Unit.read(UNIT)
    assert unit.exec_start[0] == str(command)
    assert set(unit.writable) == {str(SOCKET.parent), str(STATE_DIR)}, unit.writable
    config = (CONFIG_DIR / "smtpauth-milter.toml").read_text()
    assert f'\nstate = "sqlite:///{STATE}"\n' in config
    found = subprocess.run(["man", "-w", "smtpauth-milter"], capture_output=True, text=True)
    assert found.returncode == 0 and found.stdout.strip().endswith("smtpauth-milter.8"), found


# A write to a SQLite file, its journal in its directory included, rolled back.
WRITE_PROBE = (
    "def write(name, path):\n"
    "    db = sqlite3.connect('file:' + path + '?mode=rw', uri=True, isolation_level=None)\n"
    "    db.execute('BEGIN IMMEDIATE')\n"
    "    db.execute('CREATE TABLE write_probe (x)')\n"
    "    db.execute('ROLLBACK')\n"
    "    print(name + ': written')\n"
    "write"
)


def check_the_milter_user_writes_its_state_and_nothing_else(unit: Unit) -> None:
    """Issue 24, item 5 and issue 20's least privilege: as the unit's user and groups, the
    settings store opens for reading only, and neither it nor its directory takes a new
    file; the state store takes a write (SQLite's journal in its directory included)."""
    probe = (
        "import sqlite3, sys\n"
        "settings, state = sys.argv[1:3]\n"
        "open(settings, 'rb').close()\n"
        "for path, mode in ((settings, 'r+b'), (settings + '-journal', 'xb')):\n"
        "    try:\n        open(path, mode)\n    except PermissionError:\n"
        "        print('settings: refused', mode)\n"
        f"{WRITE_PROBE}('state', state)\n"
    )
    done = subprocess.run([*unit.setpriv(), "/usr/bin/python3", "-c", probe, str(STORE), str(STATE)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done
    assert done.stdout.splitlines() == [
        "settings: refused r+b", "settings: refused xb", "state: written"
    ], done  # fmt: skip


def test_install_upgrade_serve_and_uninstall(tmp_path: Path) -> None:
    problem = machine_problem()
    assert problem is None, problem
    for leftover in (PREFIX, CONFIG_DIR, UNIT):
        assert not leftover.exists(), f"{leftover} exists: this test would replace an install"
    with trial_set_aside(STORE_DIR, USER):  # scripts/quickstart's store and user, if any
        install_upgrade_serve_and_uninstall(tmp_path)


def install_upgrade_serve_and_uninstall(tmp_path: Path) -> None:
    pip = wheelhouse(tmp_path / "wheelhouse")
    wheel = built_wheel(tmp_path, pip)
    check_wheel_in_an_empty_venv(wheel, tmp_path, pip)
    try:
        old = lower_version(clone_of_this_checkout(tmp_path / "old"))
        first = sh(docs.INSTALL_FROM_CLONE, old, pip)
        assert f"installed smtpauth-milter {LOWER} in {PREFIX}" in first
        assert f"sqlite:///{STORE} created, at schema {LOWER_HEAD}" in first, first
        assert f"sqlite:///{STATE} created, at schema {LOWER_HEAD}" in first, first
        upgrade = sh(docs.INSTALL_FROM_WHEEL, wheel.parent, pip)
        installed = upgrade.index(f"installed smtpauth-milter {__version__} (was {LOWER})")
        migrated = upgrade.index(f"store sqlite:///{STORE} is at schema {HEAD}")
        state_migrated = upgrade.index(f"store sqlite:///{STATE} is at schema {HEAD}")
        assert installed < migrated < state_migrated, "the order operations.md gives"
        again = sh(docs.INSTALL_FROM_WHEEL, wheel.parent, pip)
        assert not [line for line in again.splitlines() if line.startswith("changed:")], again
        assert f"nothing changed: smtpauth-milter {__version__} was already installed" in again
        check_installed_as_documented()
        unit = Unit.read(UNIT)
        check_the_milter_user_writes_its_state_and_nothing_else(unit)
        serve_through_the_system_postfix(tmp_path, unit, again)
        add_the_console(wheel, pip, tmp_path)
        sh(docs.UNINSTALL, Path("/"), pip)
        assert not PREFIX.exists() and not UNIT.exists() and STORE.exists()
        assert not CONSOLE_UNIT.exists()
        sh(docs.PURGE, wheel.parent, pip)
        assert not STORE_DIR.exists() and not CONFIG_DIR.exists()
        with pytest.raises(KeyError):
            pwd.getpwnam(USER)
    finally:
        if PREFIX.exists() or CONFIG_DIR.exists():
            subprocess.run(["bash", "-c", docs.PURGE], cwd=wheel.parent, check=False)


def add_the_console(wheel: Path, pip: dict[str, str], tmp: Path) -> None:
    """install --console on the installed host: the extra and the console's unit, not
    started; started as that unit says (root without any capability) it serves its
    login page."""
    output = sh(f"{docs.INSTALL_FROM_WHEEL} --console", wheel.parent, pip)
    assert f"installed smtpauth-milter {__version__} in {PREFIX}" in output, output
    assert f"installed {CONSOLE_UNIT}" in output, output
    assert "restart" not in output, "an added extra does not restart the milter"
    assert "admin add NAME" in output and f"enable --now {CONSOLE_UNIT.name}" in output
    shipped = docs.ROOT / "contrib" / "systemd" / CONSOLE_UNIT.name
    assert CONSOLE_UNIT.read_bytes() == shipped.read_bytes()
    assert stat.S_IMODE(CONSOLE_UNIT.stat().st_mode) == 0o644
    again = sh(f"{docs.INSTALL_FROM_WHEEL} --console", wheel.parent, pip)
    assert f"nothing changed: smtpauth-milter {__version__} was already installed" in again
    unit = Unit.read(CONSOLE_UNIT)
    assert unit.user == "root" and unit.no_capabilities
    console = start_process(unit.argv(), tmp / "console.log")
    try:
        page = wait_for_page("http://127.0.0.1:8895/login", console)
        assert '<form method="post" action="/login" class="login">' in page, page
    finally:
        console.stop(timeout=10)
    probe = f"import sqlite3, sys\n{WRITE_PROBE}('store', sys.argv[1])\n{WRITE_PROBE}('state', sys.argv[2])\n"
    done = subprocess.run([*unit.setpriv(), "/usr/bin/python3", "-c", probe, str(STORE), str(STATE)],
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done  # it edits the settings and unfreezes logins
    assert done.stdout.splitlines() == ["store: written", "state: written"], done


def wait_for_page(url: str, process: ManagedProcess) -> str:
    found: list[str] = []

    def answered() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                found.append(response.read().decode())
        except OSError:
            return process.proc.poll() is not None
        return True

    wait_until(answered, 30, "the console")
    assert found, f"the console exited: {process.proc.returncode}"
    return found[0]


def serve_through_the_system_postfix(tmp: Path, unit: Unit, install_output: str) -> None:
    for args in (("domain", "add", "example.com"), ("settings", "set", "require-auth-local", "on"),
                 ("settings", "set", "require-sender-match", "on"),
                 ("settings", "set", "login-max-messages", "2/1h")):  # fmt: skip
        done = cli(*args)
        assert done.returncode == 0, done
    main_cf, master_cf = printed(install_output, "main.cf"), printed(install_output, "master.cf")
    assert "smtpd_milters = unix:/smtpauth-milter/milter.sock" in main_cf
    with (
        system_postfix(tmp, main_cf, master_cf),
        dovecot_sasl(tmp, {"alice@example.com": "secret"}),
        started_as_unit(unit, SOCKET, tmp / "milter.log") as milter,
    ):
        ids = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{milter.proc.pid}/status").read_text().splitlines()
        )
        assert ids["Uid"].split()[0] == str(pwd.getpwnam(unit.user).pw_uid), ids["Uid"]
        assert ids["Gid"].split()[0] == str(grp.getgrnam(unit.group).gr_gid), ids["Gid"]
        unauthenticated = swaks(25, "alice@example.com")
        assert unauthenticated.rcpt("bob@example.net").code == 530, unauthenticated.transcript
        as_itself = swaks(587, "alice@example.com", "alice@example.com", "secret")
        assert as_itself.auth is not None and as_itself.auth.code == 235, as_itself.transcript
        assert as_itself.rcpt("bob@example.net").code == 250, as_itself.transcript
        as_other = swaks(587, "carol@example.com", "alice@example.com", "secret")
        assert as_other.rcpt("bob@example.net").code == 553, as_other.transcript
        second = swaks(587, "alice@example.com", "alice@example.com", "secret")
        assert second.rcpt("bob@example.net").code == 250, second.transcript
        over = swaks(587, "alice@example.com", "alice@example.com", "secret")
        assert over.rcpt("bob@example.net").code == 452, over.transcript
        wait_until(lambda: counted_messages("alice@example.com") >= 2, 30, "the count stored")
    assert counted_messages("alice@example.com") == 2
    assert rows(STORE, "login_count") == 0 < rows(STATE, "login_count")
    log = (tmp / "milter.log").read_text()
    assert "rule=auth-required" in log and "rule=sender-mismatch" in log, log
    assert "rule=login-max-messages" in log, log
    assert "login-state-unwritable" not in log, log


def counted_messages(login: str) -> int:
    """The login's message count as `login show` reads it from the state store."""
    shown = cli("login", "show", login)
    assert shown.returncode == 0, shown
    found = re.search(r"^login-max-messages  (\d+) of 2/1h$", shown.stdout, re.MULTILINE)
    assert found is not None, shown.stdout
    return int(found.group(1))


def rows(path: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
