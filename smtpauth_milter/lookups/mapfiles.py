"""Checks that the maps named in ``sender-login-maps`` can be read, at ``settings set`` time."""

from __future__ import annotations

from pathlib import Path

from smtpauth_milter.core.errors import SettingError
from smtpauth_milter.core.ownermaps import SQL_TYPE, parse_map_list
from smtpauth_milter.lookups.postfix import MapError
from smtpauth_milter.lookups.sqlmap import read_config


def check_map_files(text: str) -> None:
    """Every map's file exists (and a sql: file is safe and well-formed); SettingError if not."""
    for spec in parse_map_list(text):
        if spec.type == SQL_TYPE:
            try:
                read_config(spec.name)
            except MapError as exc:
                raise SettingError(f"bad map {spec.text}: {exc}") from None
        elif not Path(spec.database_file).is_file():
            hint = " (run postmap on it first)" if spec.database_file != spec.name else ""
            raise SettingError(f"bad map {spec.text}: {spec.database_file} is missing{hint}")
