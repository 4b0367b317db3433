"""Small idempotent changes to the system, each reported as one line."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class InstallError(Exception):
    """One line for the admin; the install stops (exit 2)."""


@dataclass
class Report:
    """What the run changed; each change and each check is printed as it happens."""

    changed: list[str] = field(default_factory=list)

    def change(self, what: str) -> None:
        self.changed.append(what)
        print(f"changed:   {what}", flush=True)

    def same(self, what: str) -> None:
        print(f"unchanged: {what}", flush=True)


def run(
    argv: Sequence[str], *, env: Mapping[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """A command's output captured; its last error line becomes an InstallError.

    Never with our PYTHONPATH (run from a wheel, it names that wheel, and the
    venv's commands must import the installed package, not the zipped one), nor
    with the admin's SMTPAUTH_MILTER_* variables: the commands act on what the
    installed config file names, as the unit will."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "PYTHONHOME") and not key.startswith("SMTPAUTH_MILTER_")
    }
    done = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if check and done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        last = lines[-1] if lines else f"exit status {done.returncode}"
        raise InstallError(f"{' '.join(argv[:3])}... failed: {last}")
    return done


def ids(user: str, group: str) -> tuple[int, int]:
    try:
        return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError as exc:
        raise InstallError(f"no such user or group: {exc.args[0]}") from None


def directory(report: Report, path: Path, owner: str, group: str, mode: int) -> None:
    """``path`` exists as a directory (not a link) with exactly this owner and mode."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise InstallError(f"{path} exists and is not a directory: move it away")
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        report.change(f"created {path}")
    ownership(report, path, owner, group, mode)


def ownership(report: Report, path: Path, owner: str, group: str, mode: int) -> None:
    uid, gid = ids(owner, group)
    info = path.lstat()
    wanted = f"{owner}:{group} {mode:04o}"
    if (info.st_uid, info.st_gid, info.st_mode & 0o7777) == (uid, gid, mode):
        report.same(f"{path} {wanted}")
        return
    os.chown(path, uid, gid, follow_symlinks=False)
    path.chmod(mode)
    report.change(f"{path} is now {wanted}")


def symlink(report: Report, link: Path, target: Path) -> None:
    """``link`` points at ``target``; a regular file in its place is refused, not replaced."""
    if link.is_symlink():
        if link.readlink() == target:
            report.same(f"{link} -> {target}")
            return
        link.unlink()
    elif link.exists():
        raise InstallError(f"{link} exists and is not a symbolic link: move it away")
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    report.change(f"{link} -> {target}")


def copy(report: Report, source: Path, target: Path, mode: int) -> bool:
    """``target`` has ``source``'s content (root-owned, ``mode``); True when it changed."""
    if target.is_symlink():
        raise InstallError(f"{target} is a symbolic link: move it away")
    if target.exists() and target.read_bytes() == source.read_bytes():
        ownership(report, target, "root", "root", mode)
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f".{target.name}.new")
    shutil.copyfile(source, temporary)
    os.chown(temporary, 0, 0)
    temporary.chmod(mode)
    temporary.replace(target)
    report.change(f"installed {target}")
    return True


def remove(report: Report, path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    else:
        return
    report.change(f"removed {path}")


def debian_packages_missing(names: Sequence[str]) -> list[str]:
    missing = []
    for name in names:
        done = run(["dpkg-query", "-W", "-f=${Status}", name], check=False)
        if "install ok installed" not in done.stdout:
            missing.append(name)
    return missing


def systemd_running() -> bool:
    """True on a host booted with systemd (not in a container without it)."""
    return Path("/run/systemd/system").is_dir()


def fail(message: str) -> int:
    print(f"smtpauth-milter install: error: {message}", file=sys.stderr)
    return 2
