"""Driver, OS and migration errors as the one line a user is shown."""

from __future__ import annotations

import sys

from sqlalchemy.exc import SQLAlchemyError


def first_line(exc: BaseException) -> str:
    """The first line of a driver error (its original exception's message)."""
    orig = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(orig).splitlines() if line.strip()]
    return lines[0] if lines else type(orig).__name__


def store_failures() -> tuple[type[BaseException], ...]:
    """What :meth:`Store.errors` turns into one line: driver and OS errors, and
    alembic's once a migration has imported it (the milter never imports alembic:
    see :meth:`schema.Migrations.load`)."""
    alembic_errors = sys.modules.get("alembic.util.exc")
    if alembic_errors is None:
        return (SQLAlchemyError, OSError, ImportError)
    return (SQLAlchemyError, OSError, ImportError, alembic_errors.CommandError)
