"""``python3 -m smtpauth_milter.admin.install [install|uninstall] ...``"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from smtpauth_milter.admin.install import steps
from smtpauth_milter.admin.install.layout import Layout
from smtpauth_milter.admin.install.system import InstallError, fail

VERSION = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)


def this_source() -> Path:
    """The wheel this module runs from (``PYTHONPATH=the.whl``), or the clone it is in."""
    here = Path(__file__).absolute()
    for parent in here.parents:
        if parent.suffix == ".whl" and parent.is_file():
            return parent
    clone = here.parents[3]
    if (clone / "setup.cfg").is_file():
        return clone
    raise InstallError(f"cannot tell what to install from {here}: give --from")


def version_of(source: Path) -> str:
    """The version a wheel (its file name) or a source tree (its package) installs."""
    if source.suffix == ".whl":
        return source.name.split("-")[1]
    init = source / "smtpauth_milter" / "__init__.py"
    found = VERSION.search(init.read_text(encoding="utf-8")) if init.is_file() else None
    if found is None:
        raise InstallError(f"{source} is neither a wheel nor a source tree of smtpauth-milter")
    return found.group(1)


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(
        prog="python3 -m smtpauth_milter.admin.install",
        description="Install, upgrade or remove smtpauth-milter on Debian 12 "
        "(docs/operations.md, 'Install on Debian 12').",
    )
    commands = main.add_subparsers(dest="command")
    install = commands.add_parser("install", help="install or upgrade (the default)")
    install.add_argument(
        "--from", dest="source", type=Path, help="a wheel or a source tree [default: this one]"
    )
    install.add_argument("--reinstall", action="store_true", help="reinstall the same version")
    install.add_argument(
        "--console",
        action="store_true",
        help="also the web console's libraries and systemd unit (installed, not started)",
    )
    remove = commands.add_parser("uninstall", help="remove it; keep the store and config")
    remove.add_argument(
        "--purge", action="store_true", help="also remove the store, the config and the user"
    )
    return main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in ("install", "uninstall", "-h", "--help"):
        argv = ["install", *argv]  # install is the default command
    args = parser().parse_args(argv)
    layout = Layout()
    try:
        if args.command == "uninstall":
            return steps.uninstall(layout, purge=args.purge)
        source = (getattr(args, "source", None) or this_source()).absolute()
        if not source.exists():
            raise InstallError(f"{source}: no such file or directory")
        reinstall = bool(getattr(args, "reinstall", False))
        console = bool(getattr(args, "console", False))
        return steps.install(layout, source, version_of(source), reinstall, console)
    except InstallError as exc:
        return fail(str(exc))


if __name__ == "__main__":
    raise SystemExit(main())
