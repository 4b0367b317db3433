"""Store URLs: which file a SQLite URL names, and every password masked before printing."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, quote_plus

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

_QUERY_SECRET = re.compile(r"([?&][^=&]*password[^=&]*=)[^&]*", re.IGNORECASE)
MASK = "***"


def display_url(url: URL | str) -> str:
    """The URL with every password masked (user part and ``?password=``), safe to print."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparseable database URL>"
    return _QUERY_SECRET.sub(rf"\g<1>{MASK}", parsed.render_as_string(hide_password=True))


def url_secrets(url: URL) -> tuple[str, ...]:
    """Every password in the URL, as given and as it may appear quoted, longest first."""
    values: list[str] = []
    if isinstance(url.password, str):
        values.append(url.password)
    for key, value in url.query.items():
        if "password" in key.lower():
            values.extend([value] if isinstance(value, str) else value)
    found = {form for v in values if v for form in (v, quote(v, safe=""), quote_plus(v))}
    return tuple(sorted(found, key=len, reverse=True))


def mask_secrets(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, MASK)
    return text


def sqlite_path(url: URL) -> Path | None:
    """The file of a ``sqlite:///PATH`` URL; None for memory, ``file:`` URIs and other databases."""
    database = url.database
    if url.get_backend_name() != "sqlite" or not database:
        return None
    if database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def is_missing(path: Path) -> bool:
    """No such file: not one this process merely may not see (that is another error)."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False
