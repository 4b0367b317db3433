"""A private Postfix + Dovecot (SASL) sandbox and an SMTP driver for integration tests.

Plain helpers, no pytest: the fixtures in ``conftest.py`` wire them together.
Everything lives under one directory; nothing touches the system's Postfix or
Dovecot configuration, spool or port 25. Must run as root (Postfix's master).
"""

from __future__ import annotations

import contextlib
import grp
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypeVar

from smtpauth_milter.admin.milterproto.transport import free_tcp_port

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRIB_MAIN_CF = REPO_ROOT / "contrib" / "postfix" / "main.cf"
LOOPBACK = "127.0.0.1"
POLL_INTERVAL = 0.02
USERS: dict[str, str] = {
    "alice@example.com": "alice-secret",
    "bob@example.com": "bob-secret",
    "carol": "carol-secret",
}
LOCAL_DOMAINS = ("example.com", "example.net")

T = TypeVar("T")


class SandboxError(RuntimeError):
    """A sandbox process could not be started, configured or stopped."""


# --------------------------------------------------------------------------- polling


def wait_until(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    """Call ``probe`` until it returns a truthy value; raise TimeoutError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(POLL_INTERVAL)


def tcp_accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def unix_accepts(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(path)
        except OSError:
            return False
        return True


def smtp_banner(port: int, host: str = LOOPBACK) -> str | None:
    """The 220 greeting of an SMTP server, or None when it does not answer (yet)."""
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            banner = sock.recv(512).decode("ascii", "replace")
            sock.sendall(b"QUIT\r\n")
    except OSError:
        return None
    return banner if banner.startswith("220") else None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def signal_pid(pid: int | None, sig: signal.Signals) -> None:
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def reap_pid(pid: int | None, timeout: float = 10.0) -> None:
    """Wait for a signalled daemon to exit; SIGKILL it after ``timeout`` s."""
    if pid is None:
        return
    try:
        wait_until(lambda: not pid_alive(pid), timeout, f"pid {pid} to exit")
    except TimeoutError:
        signal_pid(pid, signal.SIGKILL)


def make_traversable(path: Path) -> None:
    """Give 'other' search permission on ``path`` and its ancestors.

    pytest's temp dirs are 0700 root; Postfix and Dovecot drop to their own
    users and must reach sockets and files below them.
    """
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


# --------------------------------------------------------------------------- logs


class LogFile:
    """A growing log file that tests can wait on."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self, since: int = 0) -> str:
        try:
            with self.path.open("rb") as fh:
                fh.seek(since)
                return fh.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def mark(self) -> int:
        """The current end of the log: pass it as ``since`` to only see later lines."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def find(self, pattern: str | re.Pattern[str], since: int = 0) -> list[str]:
        regex = re.compile(pattern)
        return [line for line in self.text(since).splitlines() if regex.search(line)]

    def wait_for(
        self, pattern: str | re.Pattern[str], since: int = 0, timeout: float = 10.0
    ) -> str:
        """The first line after offset ``since`` matching ``pattern``, waiting up to ``timeout``."""

        def probe() -> str | None:
            lines = self.find(pattern, since)
            return lines[0] if lines else None

        try:
            return wait_until(probe, timeout, f"{pattern!r} in {self.path}")
        except TimeoutError as exc:
            tail = "\n".join(self.text(since).splitlines()[-30:])
            raise TimeoutError(f"{exc}; log since mark:\n{tail}") from None


# --------------------------------------------------------------------------- milter sockets


def libmilter_socket(postfix_spec: str) -> str:
    """Postfix's milter address (``inet:HOST:PORT``) in libmilter notation (``inet:PORT@HOST``)."""
    kind, _, rest = postfix_spec.partition(":")
    if kind in ("inet", "inet6"):
        host, _, port = rest.rpartition(":")
        return f"{kind}:{port}@{host.strip('[]')}"
    if kind in ("unix", "local"):
        return f"unix:{rest}"
    raise ValueError(f"unsupported milter socket {postfix_spec!r}")


def milter_accepts(postfix_spec: str) -> bool:
    kind, _, rest = postfix_spec.partition(":")
    if kind in ("unix", "local"):
        return unix_accepts(rest)
    host, _, port = rest.rpartition(":")
    return tcp_accepts(host.strip("[]"), int(port))


def open_unix_socket_to_postfix(path: Path) -> None:
    """Make a milter's unix socket writable by Postfix: group postfix, mode 0660."""
    os.chown(path, -1, grp.getgrnam("postfix").gr_gid)
    path.chmod(0o660)


@dataclass
class ManagedProcess:
    """A child process whose output goes to a log file; stopped with ``stop``."""

    proc: subprocess.Popen[bytes]
    log: LogFile

    def stop(self, timeout: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` s (pymilter may take ~5 s to exit)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.proc.wait()


def start_process(
    argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None
) -> ManagedProcess:
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    return ManagedProcess(proc, LogFile(log_path))


def start_milter(
    argv: Sequence[str], postfix_spec: str, log_path: Path, timeout: float = 10.0
) -> ManagedProcess:
    """Start a milter and wait until it accepts connections on ``postfix_spec``.

    A unix socket is then handed to group postfix with mode 0660.
    """
    milter = start_process(argv, log_path)

    def ready() -> bool:
        if milter.proc.poll() is not None:
            raise SandboxError(f"milter exited with {milter.proc.returncode}:\n{milter.log.text()}")
        return milter_accepts(postfix_spec)

    try:
        wait_until(ready, timeout, f"milter on {postfix_spec}")
    except BaseException:
        milter.stop()
        raise
    if postfix_spec.startswith(("unix:", "local:")):
        open_unix_socket_to_postfix(Path(postfix_spec.partition(":")[2]))
    return milter


# --------------------------------------------------------------------------- Dovecot


DOVECOT_CONF = """\
# Generated by tests/integration/sandbox.py: Dovecot as a SASL server only.
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
log_path = {log}
protocols = none
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0

passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/users
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}}

# No auth penalty (up to 15 s of delay per failed login from an IP, and every
# session here comes from 127.0.0.1): Dovecot skips it without this listener.
service anvil {{
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}

service auth {{
  unix_listener {auth_socket} {{
    mode = 0660
    user = postfix
    group = postfix
  }}
}}
"""


@dataclass
class Dovecot:
    root: Path
    auth_socket: Path
    log: LogFile

    @property
    def config(self) -> Path:
        return self.root / "dovecot.conf"

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "master.pid"

    def write_config(self, users: dict[str, str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        users_file = self.root / "users"
        users_file.write_text("".join(f"{user}:{{PLAIN}}{pw}\n" for user, pw in users.items()))
        users_file.chmod(0o644)
        self.config.write_text(
            DOVECOT_CONF.format(
                instance=f"smtpauth-sandbox-{os.getpid()}",
                root=self.root,
                log=self.log.path,
                auth_socket=self.auth_socket,
            )
        )

    def start(self, timeout: float = 10.0) -> None:
        run_checked(["dovecot", "-c", str(self.config)])
        wait_until(self.auth_socket.is_socket, timeout, f"Dovecot auth socket {self.auth_socket}")

    def pid(self) -> int | None:
        return read_pid(self.pid_file)


# --------------------------------------------------------------------------- Postfix


MAIN_CF = """\
# Generated by tests/integration/sandbox.py: a private Postfix instance.
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
mail_owner = postfix
setgid_group = postdrop
maillog_file = {maillog}
maillog_file_prefixes = {root}
myhostname = mta.sandbox.test
mydomain = sandbox.test
myorigin = $myhostname
mydestination = {local_domains}
# Every other domain is a relay domain, so any remote recipient passes too.
relay_domains = static:ALL
relay_recipient_maps =
inet_interfaces = loopback-only
inet_protocols = ipv4
# 127.0.0.1 is NOT trusted: the milter must see unauthenticated local clients.
mynetworks = 127.0.0.2/32
alias_maps =
alias_database =
local_recipient_maps =
biff = no
smtp_dns_support_level = disabled
smtpd_banner = $myhostname ESMTP sandbox
smtpd_delay_reject = yes
# No tarpit after errors (failed AUTH, rejected RCPTs): tests stay fast.
smtpd_error_sleep_time = 0
smtpd_helo_required = no
smtpd_client_restrictions =
smtpd_helo_restrictions =
smtpd_sender_restrictions =
# Only the milter's decision is under test: Postfix itself accepts every
# recipient ("permit" alone is fatal: reject_unauth_destination is mandatory).
smtpd_relay_restrictions = reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_tls_security_level = none
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = private/auth
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous
smtpd_tls_auth_only = no
default_transport = discard:sandbox
local_transport = discard:sandbox
virtual_transport = discard:sandbox
relay_transport = discard:sandbox

# ---- contrib/postfix/main.cf (verbatim, smtpd_milters substituted) ----
{milter_snippet}"""

MASTER_CF = """\
# Generated by tests/integration/sandbox.py. Nothing is chrooted.
{listen}  inet  n  -  n  -  -  smtpd
pickup    unix  n  -  n  60  1  pickup
cleanup   unix  n  -  n  -   0  cleanup
qmgr      unix  n  -  n  300 1  qmgr
rewrite   unix  -  -  n  -   -  trivial-rewrite
bounce    unix  -  -  n  -   0  bounce
defer     unix  -  -  n  -   0  bounce
trace     unix  -  -  n  -   0  bounce
verify    unix  -  -  n  -   1  verify
flush     unix  n  -  n  1000? 0 flush
proxymap  unix  -  -  n  -   -  proxymap
smtp      unix  -  -  n  -   -  smtp
relay     unix  -  -  n  -   -  smtp
showq     unix  n  -  n  -   -  showq
error     unix  -  -  n  -   -  error
retry     unix  -  -  n  -   -  error
discard   unix  -  -  n  -   -  discard
anvil     unix  -  -  n  -   1  anvil
scache    unix  -  -  n  -   1  scache
postlog   unix-dgram n - n - 1  postlogd
"""

SMTPD_MILTERS_LINE = re.compile(r"^smtpd_milters[ \t]*=.*$", re.MULTILINE)


def render_milter_snippet(contrib_text: str, smtpd_milters: str) -> str:
    """``contrib/postfix/main.cf`` with only the value of ``smtpd_milters`` replaced."""
    found = SMTPD_MILTERS_LINE.findall(contrib_text)
    if len(found) != 1:
        raise SandboxError(f"expected one smtpd_milters line in the contrib file, found {found}")
    return SMTPD_MILTERS_LINE.sub(lambda _m: f"smtpd_milters = {smtpd_milters}", contrib_text)


def write_settled(path: Path, text: str) -> None:
    """Write a Postfix config file and date it a minute back.

    Postfix programs (postconf, master, every new smtpd) re-read a main.cf whose
    mtime is within the last ~2 s, sleeping 300 ms per try, until it is older:
    a fresh file costs each of them ~2 s.
    """
    path.write_text(text)
    past = time.time() - 60
    os.utime(path, (past, past))


def run_checked(argv: Sequence[str], timeout: float = 60.0) -> str:
    """Run a command; raise SandboxError with its output when it fails.

    Output goes through a temporary file, not a pipe: daemons started by the
    command (dovecot, postfix's master) inherit it and would keep a pipe open.
    """
    with tempfile.TemporaryFile() as out:
        done = subprocess.run(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            timeout=timeout, check=False,
        )  # fmt: skip
        out.seek(0)
        output = out.read().decode("utf-8", "replace")
    if done.returncode != 0:
        raise SandboxError(f"{' '.join(argv)} exited {done.returncode}\n{output}".rstrip())
    return output


@dataclass
class Postfix:
    """A private Postfix instance driven with ``postfix -c <absolute config dir>``."""

    root: Path
    port: int
    contrib_main_cf: Path = CONTRIB_MAIN_CF
    milter: str | None = None
    running: bool = False
    maillog: LogFile = field(init=False)
    # main.cf parameters set on top of MAIN_CF for some tests (see use_overrides).
    overrides: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = self.root.resolve()  # a relative -c path makes "reload" a no-op
        self.maillog = LogFile(self.root / "log" / "maillog")

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.root / "queue"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def auth_socket(self) -> Path:
        return self.queue_dir / "private" / "auth"

    def postfix(self, *args: str) -> str:
        return run_checked(["postfix", "-c", str(self.config_dir), *args])

    def postconf(self, name: str) -> str:
        return run_checked(["postconf", "-c", str(self.config_dir), "-h", name]).strip()

    def prepare(self) -> None:
        """Create the directories; the queue's subdirectories come from ``postfix start``."""
        for directory in (self.config_dir, self.queue_dir, self.data_dir, self.maillog.path.parent):
            directory.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data_dir, "postfix", "postfix")
        # Dovecot creates its auth listener in here, possibly before Postfix starts.
        private = self.queue_dir / "private"
        private.mkdir(mode=0o700, exist_ok=True)
        shutil.chown(private, "postfix", "root")

    def write_config(self, milter: str | None) -> None:
        snippet = render_milter_snippet(self.contrib_main_cf.read_text(), milter or "")
        main_cf = MAIN_CF.format(
            queue=self.queue_dir,
            data=self.data_dir,
            maillog=self.maillog.path,
            root=self.root,
            local_domains=", ".join(LOCAL_DOMAINS),
            milter_snippet=snippet,
        )
        if self.overrides:
            # An overridden parameter loses its earlier line: Postfix would warn about it
            # on every postconf call.
            for name in self.overrides:
                main_cf = re.sub(rf"(?m)^{re.escape(name)}[ \t]*=.*\n", "", main_cf)
            lines = [f"{name} = {value}" for name, value in sorted(self.overrides.items())]
            main_cf += "\n# ---- overrides of this test ----\n" + "\n".join(lines) + "\n"
        master_cf = MASTER_CF.format(listen=f"{LOOPBACK}:{self.port}")
        write_settled(self.config_dir / "main.cf", main_cf)
        write_settled(self.config_dir / "master.cf", master_cf)
        self.milter = milter

    def start(self, timeout: float = 15.0) -> None:
        self.postfix("start")
        self.running = True
        wait_until(lambda: smtp_banner(self.port), timeout, f"Postfix banner on port {self.port}")

    def master_pid(self) -> int | None:
        return read_pid(self.queue_dir / "pid" / "master.pid")

    def smtpd_pids(self) -> set[int]:
        """Live (not zombie) smtpd children of the master."""
        master = self.master_pid()
        return {
            pid
            for pid, ppid, comm, state in _processes()
            if ppid == master and comm == "smtpd" and state != "Z"
        }

    def reload(self, timeout: float = 10.0) -> None:
        """Reload, and wait until every smtpd of the old configuration has exited.

        Old idle smtpd processes keep accepting connections until they notice
        the reload (~20 ms here; ~2 s when main.cf was fresh, see
        ``write_settled``): a session in that window would see the old milter.
        """
        old_smtpds = self.smtpd_pids()
        since = self.maillog.mark()
        # What "postfix reload" does, minus its ~2 s of sanity checks.
        signal_pid(self.master_pid(), signal.SIGHUP)
        self.maillog.wait_for(r"postfix/master\[\d+\]: reload -- ", since, timeout)
        wait_until(
            lambda: not (old_smtpds & self.smtpd_pids()), timeout, "old smtpd processes to exit"
        )

    def use_overrides(self, overrides: Mapping[str, str]) -> None:
        """Set these main.cf parameters over the sandbox's own ({}: none), and reload."""
        if dict(overrides) == self.overrides:
            return
        self.overrides = dict(overrides)
        self.write_config(self.milter)
        if self.running:
            self.reload()
        for name, value in self.overrides.items():
            if self.postconf(name) != value:
                raise SandboxError(f"{name} is {self.postconf(name)!r}, wanted {value!r}")

    def use_milter(self, milter: str | None) -> None:
        """Point ``smtpd_milters`` at ``milter`` (Postfix notation; None: no milter)."""
        if self.running and milter == self.milter:
            return
        self.write_config(milter)
        if self.running:
            self.reload()
        else:
            self.start()
        actual = self.postconf("smtpd_milters")
        if actual != (milter or ""):
            raise SandboxError(f"smtpd_milters is {actual!r}, wanted {milter!r}")


def _processes() -> Iterator[tuple[int, int, str, str]]:
    """(pid, ppid, comm, state) of every process, from /proc/PID/stat."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        state, ppid = raw[raw.rindex(")") + 2 :].split()[:2]
        yield int(entry.name), int(ppid), comm, state


# --------------------------------------------------------------------------- the sandbox


@dataclass
class Sandbox:
    """Postfix on ``port`` with SASL logins ``users`` checked by Dovecot."""

    root: Path
    postfix: Postfix
    dovecot: Dovecot
    users: dict[str, str]

    @property
    def port(self) -> int:
        return self.postfix.port

    @property
    def maillog(self) -> LogFile:
        return self.postfix.maillog

    def inet_milter_socket(self) -> str:
        """A fresh ``inet:127.0.0.1:PORT`` (Postfix notation) nobody listens on."""
        return f"inet:{LOOPBACK}:{free_tcp_port(LOOPBACK)}"

    def unix_milter_socket(self, name: str = "milter") -> str:
        """``unix:/...`` in a directory the postfix user can traverse."""
        directory = self.root / "milters"
        directory.mkdir(mode=0o755, exist_ok=True)
        return f"unix:{directory / name}.sock"

    def smtp(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        user: str | None = None,
        password: str | None = None,
        mech: str = "PLAIN",
    ) -> SwaksResult:
        if user is not None and password is None:
            password = self.users[user]
        return smtp(self.port, mail_from, rcpts, user=user, password=password, mech=mech)

    def stop(self) -> None:
        """Stop Postfix and Dovecot together (they take ~2 s and ~3 s to wind down).

        SIGTERM to Postfix's master is what "postfix stop" sends (without its
        1 s polling sleeps); Dovecot's master stops its children itself.
        """
        pids = [self.postfix.master_pid(), self.dovecot.pid()]
        for pid in pids:
            signal_pid(pid, signal.SIGTERM)
        for pid in pids:
            reap_pid(pid)
        self.postfix.running = False


def start_sandbox(root: Path, users: dict[str, str] | None = None) -> Sandbox:
    """Start Dovecot and Postfix (without a milter) under ``root``; stop both on failure."""
    root = root.resolve()
    make_traversable(root)
    users = dict(USERS if users is None else users)
    postfix = Postfix(root / "postfix", free_tcp_port(LOOPBACK))
    dovecot = Dovecot(root / "dovecot", postfix.auth_socket, LogFile(root / "dovecot.log"))
    sandbox = Sandbox(root, postfix, dovecot, users)
    try:
        postfix.prepare()
        dovecot.write_config(users)
        dovecot.start()
        postfix.use_milter(None)
    except BaseException:
        sandbox.stop()
        raise
    return sandbox


# --------------------------------------------------------------------------- swaks


class Reply(NamedTuple):
    code: int
    text: str  # all lines of the reply, without codes, joined with "\n"


class RcptReply(NamedTuple):
    rcpt: str
    code: int
    text: str


class Exchange(NamedTuple):
    command: str  # the line swaks sent ("" for the greeting)
    reply: Reply


SENT = re.compile(r"^ *(?:->|~>) (?P<line>.*)$")
RECEIVED = re.compile(r"^(?:<-|<~|<\*\*|<~\*) +(?P<code>\d{3})(?P<sep>[ -]?)(?P<text>.*)$")
RCPT_COMMAND = re.compile(r"^RCPT TO:\s*<(?P<rcpt>[^>]*)>", re.IGNORECASE)


def parse_swaks(transcript: str) -> list[Exchange]:
    """Pair each SMTP command swaks sent with the (possibly multi-line) reply it got."""
    exchanges: list[Exchange] = []
    command = ""
    lines: list[str] = []
    for raw in transcript.splitlines():
        if sent := SENT.match(raw):
            command, lines = sent["line"], []
            continue
        received = RECEIVED.match(raw)
        if received is None:
            continue
        lines.append(received["text"].strip())
        if received["sep"] != "-":
            exchanges.append(Exchange(command, Reply(int(received["code"]), "\n".join(lines))))
            lines = []
    return exchanges


@dataclass
class SwaksResult:
    transcript: str
    exit_code: int
    exchanges: list[Exchange]

    def _replies_to(self, verb: str) -> list[Exchange]:
        return [x for x in self.exchanges if x.command.upper().startswith(verb)]

    @property
    def auth(self) -> Reply | None:
        """The final reply to AUTH (after any 334 challenges), or None without AUTH."""
        started = False
        for exchange in self.exchanges:
            started = started or exchange.command.upper().startswith("AUTH")
            if started and exchange.reply.code != 334:
                return exchange.reply
        return None

    @property
    def mail(self) -> Reply | None:
        """The reply to MAIL FROM, or None if swaks never got that far."""
        found = self._replies_to("MAIL FROM")
        return found[0].reply if found else None

    @property
    def rcpts(self) -> list[RcptReply]:
        """One entry per RCPT TO that was sent, in order."""
        out = []
        for exchange in self._replies_to("RCPT TO"):
            match = RCPT_COMMAND.match(exchange.command)
            rcpt = match["rcpt"] if match else exchange.command
            out.append(RcptReply(rcpt, exchange.reply.code, exchange.reply.text))
        return out

    def rcpt(self, address: str) -> RcptReply:
        """The reply to ``RCPT TO:<address>``; AssertionError with the transcript if not sent."""
        for reply in self.rcpts:
            if reply.rcpt.lower() == address.lower():
                return reply
        raise AssertionError(f"no RCPT TO:<{address}> in the session:\n{self.transcript}")


def smtp(
    port: int,
    mail_from: str,
    rcpts: Sequence[str],
    user: str | None = None,
    password: str | None = None,
    mech: str = "PLAIN",
    host: str = LOOPBACK,
    timeout: float = 30.0,
) -> SwaksResult:
    """One SMTP session with swaks, up to and including the RCPTs, then QUIT.

    ``mail_from`` ``"<>"`` is the null sender. With ``user`` the session
    authenticates with ``mech`` (PLAIN or LOGIN) first.
    """
    argv = [
        "swaks", "--server", f"{host}:{port}", "--helo", "client.sandbox.test",
        "--from", mail_from, "--to", ",".join(rcpts),
        "--quit-after", "RCPT", "--timeout", "15",
    ]  # fmt: skip
    if user is not None:
        argv += ["--auth", mech, "--auth-user", user, "--auth-password", password or ""]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    transcript = done.stdout + done.stderr
    return SwaksResult(transcript, done.returncode, parse_swaks(transcript))
