"""Configuration in one frozen object. Precedence: flag > environment > file > default."""

from __future__ import annotations

import math
import os
import pwd
import re
import tomllib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from smtpauth_milter.core.errors import ConfigError
from smtpauth_milter.lookups.trusted import FileRefused, read_trusted

DEFAULT_SOCKET = "inet:8894@127.0.0.1"
DEFAULT_MAX_STALE = 300.0
DEFAULT_REFRESH = 0.5
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("logfmt", "json")
# Each key of the config file and the TOML type its value must have.
FILE_TYPES: dict[str, tuple[type, ...]] = {
    "db": (str,),
    "socket": (str,),
    "max-stale": (int, float),
    "refresh": (int, float),
    "log-level": (str,),
    "syslog": (bool,),
    "user": (str,),
    "group": (str,),
    "metrics": (str,),
    "log-format": (str,),
    "auto-restart": (bool,),
    "state": (str,),
}
FILE_KEYS = frozenset(FILE_TYPES)
_TYPE_NAMES = {str: "a string", int: "a number", bool: "true or false"}

ENV_PREFIX = "SMTPAUTH_MILTER_"  # every setting's environment variable starts so

_SOCKET_RE = re.compile(
    r"(?:inet:(\d{1,5})@[A-Za-z0-9._-]+|inet6:(\d{1,5})@[0-9A-Za-z:.\[\]_-]+|(?:unix|local):/\S+)"
)


DEFAULT_CONFIG_FILE = "/etc/smtpauth-milter/smtpauth-milter.toml"
# Where to look for the default config file instead (tests, packagers).
CONFIG_DEFAULT_ENV = "SMTPAUTH_MILTER_CONFIG_DEFAULT"
DB_ENV = "SMTPAUTH_MILTER_DB"
STATE_ENV = "SMTPAUTH_MILTER_STATE"
CONFIG_ENV = "SMTPAUTH_MILTER_CONFIG"


def default_db_url(euid: int | None = None, environ: Mapping[str, str] | None = None) -> str:
    """A SQLite file that works without root: /var/lib for root, XDG data home otherwise."""
    euid = os.geteuid() if euid is None else euid
    environ = os.environ if environ is None else environ
    if euid == 0:
        base = Path("/var/lib/smtpauth-milter")
    else:
        home = environ.get("HOME") or pwd.getpwuid(euid).pw_dir
        data_home = environ.get("XDG_DATA_HOME") or str(Path(home) / ".local" / "share")
        base = Path(data_home) / "smtpauth-milter"
    return f"sqlite:///{base / 'store.sqlite'}"


def config_file_path(flag: str | None, environ: Mapping[str, str]) -> str | None:
    """``--config`` / SMTPAUTH_MILTER_CONFIG, else the default file when it exists."""
    if flag:
        return flag
    if environ.get(CONFIG_ENV):
        return environ[CONFIG_ENV]
    default = environ.get(CONFIG_DEFAULT_ENV) or DEFAULT_CONFIG_FILE
    return default if Path(default).is_file() else None


@dataclass(frozen=True)
class StoreChoice:
    """Which store a command uses, and the config file it read (None: none)."""

    db: str
    file: Mapping[str, Any]
    file_path: str | None


def choose_store(
    db: str | None,
    config: str | None,
    environ: Mapping[str, str],
    euid: int | None = None,
    owners: Collection[int] | None = None,
) -> StoreChoice:
    """The store of a command: flag > environment > config file > default.

    The same rules for this process (click has folded the environment into the
    flags already) and for a running milter whose argv and environment doctor read.
    """
    path = config_file_path(config, environ)
    file = read_file(path, owners)
    chosen = db or environ.get(DB_ENV) or None
    return StoreChoice(str(pick(chosen, file, "db", default_db_url(euid, environ))), file, path)


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any SMTPAUTH_MILTER_* setting, plus ``extra``.

    For starting ``smtpauth-milter`` (tests, benchmarks) with only the settings given.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(ENV_PREFIX) or k == CONFIG_DEFAULT_ENV  # tests keep theirs
    }
    env.update(extra)
    return env


def check_socket(spec: str) -> str:
    match = _SOCKET_RE.fullmatch(spec)
    port = next((g for g in match.groups() if g), None) if match else None
    if match is None or (port is not None and not 0 < int(port) < 65536):
        raise ConfigError(f"bad socket {spec!r}: use inet:PORT@HOST, inet6:PORT@HOST or unix:/path")
    return spec


def unix_socket_path(spec: str) -> Path | None:
    kind, _, rest = spec.partition(":")
    return Path(rest) if kind in ("unix", "local") else None


def read_file(path: str | None, owners: Collection[int] | None = None) -> dict[str, Any]:
    """The settings of a TOML config file; unknown keys are an error, not a surprise.

    Run as root, the file must be root's (or ``owners``'): see :mod:`lookups.trusted`."""
    if path is None:
        return {}
    try:
        data = tomllib.loads(read_trusted(path, owners=owners)[0].decode("utf-8"))
    except FileRefused as exc:
        raise ConfigError(f"config file {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"bad config file {path}: {exc}") from exc
    unknown = set(data) - FILE_KEYS
    if unknown:
        raise ConfigError(
            f"unknown key(s) in config file {path}: {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(FILE_KEYS))}"
        )
    for key, value in data.items():
        types = FILE_TYPES[key]
        if isinstance(value, bool) is not (bool in types) or not isinstance(value, types):
            shown = type(value).__name__ if key == "db" else repr(value)  # may hold a password
            raise ConfigError(
                f"bad config file {path}: {key} must be {_TYPE_NAMES[types[0]]}, not {shown}"
            )
    return data


def pick(flag: Any, file: Mapping[str, Any], key: str, default: Any) -> Any:
    """flag (click has already folded in the environment) > file > default."""
    if flag is not None:
        return flag
    return file.get(key, default)


@dataclass(frozen=True)
class RunConfig:
    db: str
    socket: str
    max_stale: float
    refresh: float
    log_level: str
    syslog: bool
    user: str | None = None
    group: str | None = None
    metrics: str | None = None
    log_format: str = "logfmt"
    auto_restart: bool = True
    allow_root: bool = False  # --allow-root: --user may name root
    # Where the milter writes login counts and freezes; None: the store itself
    # (docs/operations.md#the-milters-state-least-privilege).
    state: str | None = None

    @classmethod
    def resolve(
        cls,
        db: str,
        flags: Mapping[str, Any],
        file: Mapping[str, Any],
        origins: Mapping[str, str] | None = None,
        file_name: str = "the config file",
    ) -> RunConfig:
        """``origins`` says where each flag came from (``--refresh``, an environment variable)."""

        def origin(flag: str, key: str) -> str:
            if flags.get(flag) is not None:
                return (origins or {}).get(flag, f"--{key}")
            return file_name if key in file else "the default"

        config = cls(
            db=db,
            socket=str(pick(flags.get("socket"), file, "socket", DEFAULT_SOCKET)),
            max_stale=_seconds(
                pick(flags.get("max_stale"), file, "max-stale", DEFAULT_MAX_STALE),
                "max-stale",
                origin("max_stale", "max-stale"),
            ),
            refresh=_seconds(
                pick(flags.get("refresh"), file, "refresh", DEFAULT_REFRESH),
                "refresh",
                origin("refresh", "refresh"),
            ),
            log_level=str(pick(flags.get("log_level"), file, "log-level", "info")).lower(),
            syslog=bool(pick(flags.get("syslog"), file, "syslog", False)),
            user=_name(pick(flags.get("user"), file, "user", None), "user"),
            group=_name(pick(flags.get("group"), file, "group", None), "group"),
            metrics=_optional_str(pick(flags.get("metrics"), file, "metrics", None), "metrics"),
            log_format=str(pick(flags.get("log_format"), file, "log-format", "logfmt")).lower(),
            auto_restart=_bool(
                pick(flags.get("auto_restart"), file, "auto-restart", True), "auto-restart"
            ),
            allow_root=bool(flags.get("allow_root")),
            state=state_url(flags.get("state"), file),
        )
        check_socket(config.socket)
        if config.log_level not in LOG_LEVELS:
            raise ConfigError(f"bad log level {config.log_level!r}: use {', '.join(LOG_LEVELS)}")
        if config.log_format not in LOG_FORMATS:
            raise ConfigError(f"bad log format {config.log_format!r}: use {', '.join(LOG_FORMATS)}")
        if config.metrics is not None:
            check_listen(config.metrics)
        if config.group is not None and config.user is None:
            raise ConfigError("--group needs --user: the group is the one the milter runs as")
        if not 0.05 <= config.refresh <= 60:
            raise ConfigError(
                f"refresh must be between 0.05 and 60 seconds, not {config.refresh:g} "
                f"(from {origin('refresh', 'refresh')})"
            )
        if config.max_stale < 2 * config.refresh:
            raise ConfigError(
                f"max-stale must be at least twice refresh: max-stale {config.max_stale:g} "
                f"(from {origin('max_stale', 'max-stale')}), refresh {config.refresh:g} "
                f"(from {origin('refresh', 'refresh')})"
            )
        return config


def _seconds(value: Any, key: str, where: str) -> float:
    """A finite, positive number of seconds: no nan, no inf, no zero."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number of seconds, not {value!r} (from {where})")
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(
            f"{key} must be a finite, positive number of seconds, not {value!r} (from {where})"
        )
    return float(value)


def state_url(flag: str | None, file: Mapping[str, Any]) -> str | None:
    """The state store's URL: ``--state`` / SMTPAUTH_MILTER_STATE > config key ``state``."""
    return _optional_str(pick(flag or None, file, "state", None), "state") or None


def check_listen(spec: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (loopback only) -> (host, port).

    Every interface is asked for explicitly: ``0.0.0.0:PORT`` or ``[::]:PORT``."""
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"bad metrics address {spec!r}: use HOST:PORT, e.g. 127.0.0.1:9466")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"bad metrics address {spec!r}: write an IPv6 host as [ADDR]:PORT")
    return host or "127.0.0.1", int(port)


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, not {value!r}")
    return value


def _optional_str(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, not {value!r}")
    return value


def _name(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or not value.isprintable():
        raise ConfigError(f"{key} must be a user or group name, not {value!r}")
    return value.strip()
