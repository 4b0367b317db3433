"""The real machine for the install test: the installed unit, the system Postfix and a Dovecot.

Nothing here runs under systemd (there is none on CI): the milter is started
exactly as the installed unit says, through setpriv, and Postfix with
``postfix start``. Everything it changes is put back by the context managers.
"""

from __future__ import annotations

import grp
import os
import pwd
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.harness.logfile import LogFile
from tests.harness.mta.common import ManagedProcess, make_traversable, smtp_banner, start_process
from tests.harness.mta.dovecot import Dovecot
from tests.harness.mta.swaks import SwaksResult, parse_swaks
from tests.harness.waiting import wait_until

POSTFIX = Path("/etc/postfix")
AUTH_SOCKET = Path("/var/spool/postfix/private/auth")
PORTS = (25, 587)


@dataclass(frozen=True)
class Unit:
    """What the [Service] section of an installed unit says about how to start it."""

    user: str
    group: str
    supplementary: tuple[str, ...]
    environment: dict[str, str]
    exec_start: list[str]
    writable: tuple[str, ...] = ()  # ReadWritePaths=, without a leading "-"
    no_capabilities: bool = False  # an empty CapabilityBoundingSet=

    @classmethod
    def read(cls, path: Path) -> Unit:
        values: dict[str, list[str]] = {}
        section = ""
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if line.startswith("["):
                section = line
            elif section == "[Service]" and "=" in line and not line.startswith("#"):
                key, _, value = line.partition("=")
                values.setdefault(key.strip(), []).append(value.strip())
        environment = dict(
            item.split("=", 1)
            for value in values.get("Environment", [])
            for item in shlex.split(value)
        )
        supplementary = tuple(
            name for value in values.get("SupplementaryGroups", []) for name in value.split()
        )
        writable = tuple(
            path.removeprefix("-")
            for value in values.get("ReadWritePaths", [])
            for path in value.split()
        )
        (user,), (start,) = values["User"], values["ExecStart"]
        # no Group=: the user's own group, as systemd does
        (group,) = values.get("Group") or [grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name]
        bounding = values.get("CapabilityBoundingSet")
        return cls(user, group, supplementary, environment, shlex.split(start), writable,
                   no_capabilities=bounding is not None and not "".join(bounding))  # fmt: skip

    def argv(self) -> list[str]:
        """setpriv with the groups systemd gives the service: initgroups(User, Group) plus
        SupplementaryGroups, then ExecStart in an environment of Environment= only."""
        gid = grp.getgrnam(self.group).gr_gid
        groups = set(os.getgrouplist(self.user, gid))
        groups |= {grp.getgrnam(name).gr_gid for name in self.supplementary}
        env = [f"{key}={value}" for key, value in self.environment.items()]
        drop = ["--bounding-set=-all", "--inh-caps=-all"] if self.no_capabilities else []
        return [
            "setpriv", f"--reuid={self.user}", f"--regid={self.group}",
            f"--groups={','.join(str(g) for g in sorted(groups))}", *drop, "--",
            "env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            *env, *self.exec_start,
        ]  # fmt: skip

    def setpriv(self) -> list[str]:
        """The user and groups of :meth:`argv` alone: put a command after it."""
        argv = self.argv()
        return argv[: argv.index("--") + 1]


@contextmanager
def started_as_unit(unit: Unit, socket: Path, log: Path) -> Iterator[ManagedProcess]:
    milter = start_process(unit.argv(), log)
    try:
        wait_until(lambda: socket.is_socket() or milter.proc.poll() is not None, 30, "the milter")
        assert socket.is_socket(), LogFile(log).text()
        yield milter
    finally:
        milter.stop(timeout=10)


def _postfix_running() -> bool:
    done = subprocess.run(["postfix", "status"], capture_output=True, check=False)
    return done.returncode == 0


def machine_problem() -> str | None:
    """Why the system Postfix cannot be used for the test (None: it can)."""
    if _postfix_running():
        return "the system Postfix is running: stop it first (postfix stop)"
    busy = [port for port in PORTS if smtp_banner(port) is not None]
    return f"ports {busy} are in use" if busy else None


@contextmanager
def system_postfix(tmp: Path, main_cf: str, master_cf: str) -> Iterator[Path]:
    """The system Postfix with a minimal main.cf plus ``main_cf``, Debian's master.cf plus
    ``master_cf``, a self-signed certificate; /etc/postfix is put back afterwards."""
    saved = {name: (POSTFIX / name).read_bytes() for name in ("main.cf", "master.cf")
             if (POSTFIX / name).exists()}  # fmt: skip
    log = Path("/var/log/smtpauth-milter-install-test.log")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=mx.example.test", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    base = f"""\
compatibility_level = 3.6
myhostname = mx.example.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = {log}
default_transport = discard
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
"""
    try:
        (POSTFIX / "main.cf").write_text(base + main_cf + "\n")
        (POSTFIX / "master.cf").write_bytes(
            saved.get("master.cf", b"") + master_cf.encode() + b"\n"
        )
        subprocess.run(["postfix", "start"], capture_output=True, check=True, timeout=60)
        for port in PORTS:
            wait_until(lambda p=port: smtp_banner(p), 30, f"Postfix on port {port}")  # type: ignore[misc]
        yield log
    finally:
        subprocess.run(["postfix", "stop"], capture_output=True, check=False, timeout=60)
        wait_until(lambda: not _postfix_running(), 30, "Postfix to stop")
        for name in ("main.cf", "master.cf"):
            if name in saved:
                (POSTFIX / name).write_bytes(saved[name])
            else:
                (POSTFIX / name).unlink(missing_ok=True)
        log.unlink(missing_ok=True)


@contextmanager
def dovecot_sasl(tmp: Path, users: dict[str, str]) -> Iterator[None]:
    """Dovecot answering Postfix's SASL on private/auth (its own config, a passwd-file)."""
    make_traversable(tmp)
    dovecot = Dovecot(tmp / "dovecot", AUTH_SOCKET, LogFile(tmp / "dovecot.log"))
    dovecot.write_config(users)
    dovecot.start()
    try:
        yield
    finally:
        pid = dovecot.pid()
        if pid is not None:
            os.kill(pid, 15)
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), 30, "Dovecot to stop")
        AUTH_SOCKET.unlink(missing_ok=True)  # Dovecot leaves its listener behind


def swaks(port: int, sender: str, login: str | None = None, password: str = "") -> SwaksResult:
    """One session up to RCPT TO bob@example.net; with ``login``: STARTTLS, then AUTH PLAIN."""
    argv = ["swaks", "--server", f"127.0.0.1:{port}", "--helo", "client.example.test",
            "--from", sender, "--to", "bob@example.net", "--quit-after", "RCPT", "--timeout", "15"]  # fmt: skip
    if login is not None:
        argv += ["--tls", "--auth", "PLAIN", "--auth-user", login, "--auth-password", password]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    transcript = done.stdout + done.stderr
    return SwaksResult(transcript, done.returncode, parse_swaks(transcript))


@contextmanager
def trial_set_aside(store_dir: Path, user: str) -> Iterator[None]:
    """What ``scripts/quickstart`` run as root leaves (its store in ``store_dir`` and
    the system ``user``), moved out of the install's way and put back after: README's
    two commands may run on one machine, the trial first."""
    try:
        entry: pwd.struct_passwd | None = pwd.getpwnam(user)
    except KeyError:
        entry = None
    aside = store_dir.with_name(f"{store_dir.name}.trial-{os.getpid()}")
    if store_dir.exists():
        store_dir.rename(aside)
    if entry is not None:
        subprocess.run(["userdel", user], check=True, capture_output=True)
    try:
        yield
    finally:
        if aside.exists():
            subprocess.run(["rm", "-rf", str(store_dir)], check=True)
            aside.rename(store_dir)
        if entry is not None and subprocess.run(["getent", "passwd", user],
                                                capture_output=True).returncode == 2:  # fmt: skip
            if subprocess.run(["getent", "group", str(entry.pw_gid)],
                              capture_output=True).returncode == 2:  # fmt: skip
                subprocess.run(["groupadd", "--system", "--gid", str(entry.pw_gid), user],
                               check=True)  # fmt: skip
            subprocess.run(["useradd", "--system", "--uid", str(entry.pw_uid), "--gid",
                            str(entry.pw_gid), "--no-create-home", "--home-dir", entry.pw_dir,
                            "--shell", entry.pw_shell, user], check=True)  # fmt: skip
