"""The files settings point at must be there before a change is stored.

:func:`check_changed_settings` is the one place: every command that writes
the store (``settings set``, ``import``, ...) runs it on the global values its
transaction leaves, before it commits (``admin.cli.context``), so a map the
milter could not read is refused at once instead of tempfailing mail later.
A ``sql:`` map is opened and asked one key (:func:`check_map_files`), so a URL
or query that cannot work is refused too.  ``settings set`` also calls
:func:`probe_sql_maps` before its transaction begins, so a map that is slow to
fail never holds the store's write lock; any other face that changes settings
(a web console) calls the same two functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.ownermaps import SQL_TYPE, MapSpec, parse_map_list
from smtpauth_milter.core.settings import Settings
from smtpauth_milter.lookups.ownership import MapFailure, probe
from smtpauth_milter.lookups.postfix import MapError
from smtpauth_milter.lookups.sqlmap import SqlMap, read_config

MAPS = "sender-login-maps"
CONFIG_DIR = "postfix-config-dir"


def check_changed_settings(before: Mapping[str, str], after: Mapping[str, str]) -> None:
    """Check the files of every file-naming global setting whose value changed."""
    if after.get(MAPS, "") != before.get(MAPS, ""):
        check_map_files(after.get(MAPS, ""), Settings.resolve(after).sender_login_maps_timeout)
    directory = after.get(CONFIG_DIR, "")
    if directory and directory != before.get(CONFIG_DIR, ""):
        check_config_dir(directory)


def check_map_files(text: str, timeout: float) -> None:
    """Every map's file exists, and a sql: map is safe, well-formed and answers one key
    within ``timeout`` seconds (sender-login-maps-timeout); SettingError if not."""
    for spec in parse_map_list(text):
        if spec.type == SQL_TYPE:
            _probe_sql(spec, timeout)
        elif not Path(spec.database_file).is_file():
            hint = " (run postmap on it first)" if spec.database_file != spec.name else ""
            raise SettingError(f"bad map {spec.text}: {spec.database_file} is missing{hint}")


def probe_sql_maps(text: str, timeout: float) -> None:
    """Open each sql: map of a ``sender-login-maps`` value and ask it one key; SettingError
    for the first that cannot answer.  A value that does not parse is left to the
    editing layer, which says why."""
    try:
        specs = parse_map_list(text)
    except SettingError:
        return
    for spec in specs:
        if spec.type == SQL_TYPE:
            _probe_sql(spec, timeout)


def _probe_sql(spec: MapSpec, timeout: float) -> None:
    source = SqlMap(spec, timeout)
    try:
        read_config(spec.name)
        probe(source, timeout)
    except MapFailure as exc:
        raise SettingError(f"bad map {exc}") from None
    except MapError as exc:
        raise SettingError(f"bad map {spec.text}: {exc}") from None
    finally:
        source.dispose()


def check_config_dir(directory: str) -> None:
    if not (Path(directory) / "main.cf").is_file():
        raise SettingError(f"bad {CONFIG_DIR} {directory}: {directory}/main.cf is missing")
