"""Store.warm: what the supervisor does once before it forks its milter children
(docs/internals.md, the supervisor): the ORM's mappers configured and this version's
schema revisions read, without opening a connection; a failure is left to the reader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Run in a new interpreter: this worker configured its mappers long ago.
PROBE = """
import json, sys
from sqlalchemy import event, inspect
from smtpauth_milter.store import engine
from smtpauth_milter.store.models import Domain
store = engine.Store(sys.argv[1], migrations=sys.argv[2] or None)
connects = []
event.listen(store.engine, "connect", lambda *args: connects.append(1))
before = inspect(Domain).configured
store.warm()
print(json.dumps({
    "configured": [before, inspect(Domain).configured],
    "revisions_read": engine._shipped_migrations.cache_info().currsize,
    "connects": len(connects),
}))
"""


def warm(url: str, migrations: str = "") -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, url, migrations],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_warm_configures_the_mappers_and_reads_the_revisions_without_a_connection(
    tmp_path: Path,
) -> None:
    got = warm(f"sqlite:///{tmp_path / 'store.sqlite'}")
    assert got == {"configured": [False, True], "revisions_read": 1, "connects": 0}


def test_a_broken_migrations_directory_is_left_for_the_reader_to_report(tmp_path: Path) -> None:
    got = warm(f"sqlite:///{tmp_path / 'store.sqlite'}", str(tmp_path / "no-migrations"))
    assert got == {"configured": [False, True], "revisions_read": 0, "connects": 0}
