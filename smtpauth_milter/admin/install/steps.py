"""Install, upgrade and uninstall, step by step (docs/operations.md#install-on-debian-12)."""

from __future__ import annotations

import grp
import os
import pwd
import tomllib
from pathlib import Path

from smtpauth_milter.admin.install.layout import Layout
from smtpauth_milter.admin.install.system import (
    InstallError,
    Report,
    copy,
    debian_packages_missing,
    directory,
    ownership,
    remove,
    run,
    symlink,
    systemd_running,
)

# pymilter has no wheel: it compiles against libmilter.
BUILD_PACKAGES = ("gcc", "libmilter-dev", "python3-dev", "python3-venv")
SQLITE_PREFIX = "sqlite:///"


def preflight(layout: Layout) -> None:
    """Everything that would stop the install half-way is checked before any change."""
    if os.geteuid() != 0:
        raise InstallError("run this as root (it creates a user and writes to /etc and /opt)")
    try:
        grp.getgrnam(layout.mta_group)
    except KeyError:
        raise InstallError(
            f"no group {layout.mta_group}: install Postfix first (apt-get install postfix)"
        ) from None
    if not layout.postfix_spool.is_dir():
        raise InstallError(f"no {layout.postfix_spool}: install Postfix first")
    for link in (layout.command_link, layout.man_link):
        if link.exists() and not link.is_symlink():
            raise InstallError(f"{link} exists and is not a symbolic link: move it away")


def packages(report: Report) -> None:
    missing = debian_packages_missing(BUILD_PACKAGES)
    if not missing:
        report.same(f"Debian packages {' '.join(BUILD_PACKAGES)}")
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-q"], env=env)
    run(["apt-get", "install", "-y", "-q", *missing], env=env)
    report.change(f"installed Debian packages {' '.join(missing)}")


def account(report: Report, layout: Layout) -> None:
    try:
        pwd.getpwnam(layout.user)
    except KeyError:
        pass
    else:
        report.same(f"system user {layout.user}")
        return
    run(
        [
            "useradd", "--system", "--user-group", "--no-create-home",
            "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
            "--comment", "smtpauth-milter", layout.user,
        ]
    )  # fmt: skip
    report.change(f"created system user and group {layout.user}")


# What each extra the install puts in the venv lets the venv import.
EXTRA_IMPORTS = {"postgresql": "psycopg", "console": "starlette, uvicorn, jinja2, argon2"}


def installed(layout: Layout, extras: tuple[str, ...]) -> str | None:
    """The version in the venv, or None (no venv, no package, or one of ``extras``
    missing: the PostgreSQL driver, the console's libraries)."""
    if not layout.python.exists():
        return None
    imports = "".join(f"import {EXTRA_IMPORTS[extra]}; " for extra in extras)
    done = run(
        [
            str(layout.python), "-c",
            f"from importlib.metadata import version; {imports}"
            "print(version('smtpauth-milter'))",
        ],
        check=False,
    )  # fmt: skip
    return done.stdout.strip() if done.returncode == 0 else None


def venv(
    report: Report,
    layout: Layout,
    source: Path,
    version: str,
    reinstall: bool,
    extras: tuple[str, ...],
) -> bool:
    """The venv holds ``source`` with ``extras``; True when the milter's code changed
    (another version, or reinstalled: the milter restarts), not for an added extra."""
    if not layout.python.exists():
        run([str(layout.system_python), "-m", "venv", str(layout.prefix)])
        report.change(f"created the venv {layout.prefix}")
    if installed(layout, extras) == version and not reinstall:
        report.same(f"smtpauth-milter {version} in {layout.prefix}")
        return False
    before = installed(layout, ())  # the version there, whatever extras it lacks
    pip = [str(layout.python), "-m", "pip", "install", "--quiet", "--upgrade"]
    if reinstall:
        run([*pip, "--force-reinstall", "--no-deps", str(source)])
    run([*pip, f"{source}[{','.join(extras)}]"])
    was = f" (was {before})" if before and before != version else ""
    report.change(f"installed smtpauth-milter {version}{was} in {layout.prefix}")
    return reinstall or before != version


def config(report: Report, layout: Layout) -> None:
    """The example config, unless the admin has one: an existing file is never rewritten."""
    directory(report, layout.config_dir, "root", layout.user, 0o750)
    if not layout.config.exists():
        copy(report, layout.shared / f"{layout.user}.toml", layout.config, 0o640)
    ownership(report, layout.config, "root", layout.user, 0o640)


def _config(layout: Layout) -> dict[str, object]:
    with layout.config.open("rb") as file:
        return tomllib.load(file)


def _sqlite(url: str) -> Path | None:
    return Path(url[len(SQLITE_PREFIX) :]) if url.startswith(SQLITE_PREFIX) else None


def store_path(layout: Layout) -> Path | None:
    """The SQLite file the config names (None: PostgreSQL)."""
    default = f"{SQLITE_PREFIX}{layout.store_dir}/store.sqlite"
    return _sqlite(str(_config(layout).get("db", default)))


def migrate(report: Report, layout: Layout, path: Path | None, url: str | None = None) -> bool:
    """Create (``db init``) or upgrade (``db upgrade``, when ``db check`` says it is behind)
    the store at ``url`` (None: the config's ``db``), as root; True when it changed."""
    env = {"SMTPAUTH_MILTER_CONFIG": str(layout.config)}
    command = [str(layout.command), *(["--db", url] if url else [])]
    if path is not None and not path.exists():
        report.change(run([*command, "db", "init"], env=env).stdout.strip())
        return True
    checked = run([*command, "db", "check"], env=env, check=False)
    if checked.returncode == 0:
        report.same(checked.stdout.strip())
        return False
    report.change(run([*command, "db", "upgrade"], env=env).stdout.strip())
    return True


def store(report: Report, layout: Layout) -> bool:
    """Create or upgrade the store (as root); the milter's user may only read it."""
    path = store_path(layout)
    if path is not None:
        directory(report, path.parent, "root", layout.user, 0o750)
    changed = migrate(report, layout, path)
    if path is not None:
        ownership(report, path, "root", layout.user, 0o640)
    return changed


def state(report: Report, layout: Layout) -> bool:
    """The milter's own SQLite store for its counts and freezes (config key ``state``), its
    only writes: owned by its user, in a directory of its own that the settings store does
    not share.  After the settings store, as ``db upgrade`` of both is documented."""
    settings, config = store_path(layout), _config(layout)
    url = config.get("state")
    if url is None:
        if settings is not None:
            print(f"note: {layout.config} sets no `state`: the milter cannot write its "
                  f'login counts; add state = "{SQLITE_PREFIX}{layout.state_dir}/state.sqlite" '
                  "and run this again (docs/operations.md)")  # fmt: skip
        return False
    if not isinstance(url, str) or not url:
        raise InstallError(f"{layout.config}: state must be a database URL")
    path = _sqlite(url)
    if path is None:
        report.same("state store: not a SQLite file, migrated with the settings store")
        return False
    if not path.is_absolute():
        raise InstallError(f"{layout.config}: state names a relative path {path}: make it absolute")
    if settings is not None and path.parent in settings.absolute().parents:
        raise InstallError(
            f"state {path} shares a directory with the settings store {settings}: the milter "
            "would own it; give the state a directory of its own (docs/operations.md)"
        )
    # Group-writable, and new files in it take its group (setgid): the console's unit
    # (root without any capability, in this group) unfreezes logins here too.
    directory(report, path.parent, layout.user, layout.user, 0o2770)
    changed = migrate(report, layout, path, f"{SQLITE_PREFIX}{path}")
    ownership(report, path, layout.user, layout.user, 0o660)
    return changed


def unit(report: Report, layout: Layout, target: Path) -> None:
    """The shipped unit of that name (the milter's, or the console's)."""
    if copy(report, layout.shared / "systemd" / target.name, target, 0o644) and systemd_running():
        run(["systemctl", "daemon-reload"])


def console_next_steps(layout: Layout) -> None:
    """The console is installed, not started: it needs an account and a proxy first."""
    print(f"\nThe console is installed, not started (docs/console.md): create an account,"
          f" put the TLS proxy of {layout.shared / 'nginx'} in front, then start it:\n"
          f"{layout.command_link} admin add NAME\n"
          f"systemctl enable --now {layout.console_unit.name}")  # fmt: skip


def restart(report: Report, layout: Layout) -> None:
    """After an upgrade: the milter restarts only once the store is upgraded."""
    if not systemd_running():
        print("note: restart the milter now if it runs (it still runs the old version)")
        return
    if run(["systemctl", "is-active", "--quiet", layout.user], check=False).returncode == 0:
        run(["systemctl", "restart", layout.user])
        report.change(f"restarted {layout.user}")


def postfix_lines(layout: Layout) -> None:
    for name in ("main.cf", "master.cf"):
        lines = (layout.shared / "postfix" / name).read_text(encoding="utf-8").splitlines()
        settings = [line for line in lines if line.strip() and not line.startswith("#")]
        print(f"\nAdd to /etc/postfix/{name} (see docs/operations.md), then `postfix reload`:")
        print("\n".join(settings))


def install(
    layout: Layout, source: Path, version: str, reinstall: bool = False, console: bool = False
) -> int:
    preflight(layout)
    report = Report()
    packages(report)
    account(report, layout)
    extras = ("postgresql", "console") if console else ("postgresql",)
    upgraded = venv(report, layout, source, version, reinstall, extras)
    symlink(report, layout.command_link, layout.command)
    symlink(report, layout.man_link, layout.man_page)
    config(report, layout)
    migrated = store(report, layout)
    migrated = state(report, layout) or migrated
    directory(report, layout.socket_dir, layout.user, layout.mta_group, 0o750)
    unit(report, layout, layout.unit)
    if console:
        unit(report, layout, layout.console_unit)
    if upgraded or migrated:
        restart(report, layout)
    postfix_lines(layout)
    if console:
        console_next_steps(layout)
    if report.changed:
        print(f"\n{len(report.changed)} changes: smtpauth-milter {version} is installed")
    else:
        print(f"\nnothing changed: smtpauth-milter {version} was already installed")
    return 0


def uninstall(layout: Layout, purge: bool = False) -> int:
    """Remove what install made; the store, the config and the user stay unless ``purge``."""
    if os.geteuid() != 0:
        raise InstallError("run this as root")
    report = Report()
    for unit_file in (layout.console_unit, layout.unit):
        if systemd_running() and unit_file.exists():
            run(["systemctl", "disable", "--now", unit_file.name], check=False)
    for path in (layout.console_unit, layout.unit, layout.command_link, layout.man_link,
                 layout.prefix):  # fmt: skip
        remove(report, path)
    remove(report, layout.socket_dir)
    if not purge:
        print(f"kept: {layout.config_dir}, {layout.store_dir} and the user {layout.user} "
              "(uninstall --purge removes them)")  # fmt: skip
        return 0
    remove(report, layout.config_dir)
    remove(report, layout.store_dir)
    try:
        pwd.getpwnam(layout.user)
    except KeyError:
        return 0
    run(["userdel", layout.user])
    report.change(f"removed the user {layout.user}")
    return 0
