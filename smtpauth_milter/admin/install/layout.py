"""Where a production install puts each thing, and who owns it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NAME = "smtpauth-milter"


@dataclass(frozen=True)
class Layout:
    """The paths and accounts of one install (the defaults are the documented ones)."""

    user: str = NAME  # the unit's User=, also the group that may read the store and config
    mta_group: str = "postfix"  # the unit's Group=: owns the socket with the milter's user
    prefix: Path = Path("/opt") / NAME  # the venv
    command_link: Path = Path("/usr/local/bin") / NAME
    man_link: Path = Path("/usr/local/share/man/man8") / f"{NAME}.8"
    config_dir: Path = Path("/etc") / NAME
    store_dir: Path = Path("/var/lib") / NAME
    postfix_spool: Path = Path("/var/spool/postfix")
    unit: Path = Path("/etc/systemd/system") / f"{NAME}.service"
    console_unit: Path = Path("/etc/systemd/system") / f"{NAME}-console.service"
    # Debian's Python makes the venv: the unit's user must be able to run it (a
    # python3 found on root's PATH may live in root's home).
    system_python: Path = Path("/usr/bin/python3")

    @property
    def config(self) -> Path:
        return self.config_dir / f"{NAME}.toml"

    @property
    def state_dir(self) -> Path:
        """The milter's own directory for its counts and freezes: its user owns it, the one
        place under /var/lib the unit lets it write (ReadWritePaths=)."""
        return self.store_dir / "state"

    @property
    def socket_dir(self) -> Path:
        return self.postfix_spool / NAME

    @property
    def command(self) -> Path:
        return self.prefix / "bin" / NAME

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"

    @property
    def shared(self) -> Path:
        """The package's data files in the venv (setup.cfg data_files)."""
        return self.prefix / "share" / NAME

    @property
    def man_page(self) -> Path:
        return self.prefix / "share" / "man" / "man8" / f"{NAME}.8"
