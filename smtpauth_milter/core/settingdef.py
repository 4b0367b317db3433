"""What a setting is (key, scope, default, check, meaning) and where a value came from. Pure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Scope(StrEnum):
    GLOBAL = "global"
    DOMAIN = "domain"


class Source(StrEnum):
    DOMAIN = "domain"
    TARGET = "target"  # an alias domain's value from its target's override
    GLOBAL = "global"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class SettingDef:
    key: str
    scope: Scope
    default: str
    canonical: Callable[[str], str]
    meaning: str
