"""A throwaway PostgreSQL that counts statements (pg_stat_statements), for tests and benchmarks."""

from __future__ import annotations

from .pgserver import PgServer


class StatementsPgServer(PgServer):
    """A server that preloads pg_stat_statements, to count what milters send it.

    ``CREATE EXTENSION pg_stat_statements`` (in the ``postgres`` database) after ``start()``.
    """

    def _write_settings(self) -> None:
        super()._write_settings()
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("shared_preload_libraries = 'pg_stat_statements'\n")
