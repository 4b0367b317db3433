"""What the private MTAs (Postfix, Dovecot, Sendmail) share: paths, errors, commands, probes."""

from __future__ import annotations

import socket
import stat
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.harness.logfile import LogFile

REPO_ROOT = Path(__file__).resolve().parents[3]
LOOPBACK = "127.0.0.1"


class SandboxError(RuntimeError):
    """A sandbox process could not be started, configured or stopped."""


def smtp_banner(port: int, host: str = LOOPBACK) -> str | None:
    """The 220 greeting of an SMTP server, or None when it does not answer (yet)."""
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            banner = sock.recv(512).decode("ascii", "replace")
            sock.sendall(b"QUIT\r\n")
    except OSError:
        return None
    return banner if banner.startswith("220") else None


def make_traversable(path: Path) -> None:
    """Give 'other' search permission on ``path`` and its ancestors.

    pytest's temp dirs are 0700 root; Postfix and Dovecot drop to their own
    users and must reach sockets and files below them.
    """
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def libmilter_socket(postfix_spec: str) -> str:
    """Postfix's milter address (``inet:HOST:PORT``) in libmilter notation (``inet:PORT@HOST``)."""
    kind, _, rest = postfix_spec.partition(":")
    if kind in ("inet", "inet6"):
        host, _, port = rest.rpartition(":")
        return f"{kind}:{port}@{host.strip('[]')}"
    if kind in ("unix", "local"):
        return f"unix:{rest}"
    raise ValueError(f"unsupported milter socket {postfix_spec!r}")


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
