"""Other versions of smtpauth-milter for upgrade tests.

- :func:`newer_migrations` copies this version's migrations and appends
  test-only revisions after its head, each with its own ``readable_by``: what a
  future release would ship.  ``Store(url, migrations=that_directory)`` then
  plays the newer release's ``db upgrade``.
- :func:`old_release` unpacks a tagged release from this repository's git
  history (its package and migrations, as they were) into a directory; run it
  with :func:`old_command`: the same interpreter and dependencies, that
  directory first on ``PYTHONPATH``.
"""

from __future__ import annotations

import configparser
import io
import json
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path

from smtpauth_milter.daemon.config import clean_env
from smtpauth_milter.store.engine import Store

REPO = Path(__file__).resolve().parent.parent

TEST_REVISION = '''"""Test only: a future release's migration.

Revision ID: {revision}
Revises: {down}
"""

import sqlalchemy as sa
from alembic import op

revision = {revision!r}
down_revision = {down!r}
branch_labels = None
depends_on = None
readable_by = {readable_by!r}


def upgrade() -> None:
    op.create_table(
        "future_{revision}",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("rule", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("future_{revision}")
'''


def newer_migrations(directory: Path, revisions: Sequence[tuple[str, str]]) -> Path:
    """This version's migrations plus ``revisions`` ((id, readable_by), in order) after its head."""
    source = Path(Store("sqlite://").migrations.location)
    target = directory / "migrations"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    down = Store("sqlite://", migrations=str(target)).head()
    for revision, readable_by in revisions:
        text = TEST_REVISION.format(revision=revision, down=down, readable_by=readable_by)
        (target / "versions" / f"{revision}_test_future.py").write_text(text)
        down = revision
    return target


# The commit that was released as 0.1.0 (tag v0.1.0). Tests name the commit, not the
# tag: every clone of main has the commit in its history, but tags may not travel.
RELEASE_0_1_0 = "aa37ff45d914b933cd8944d610d84e15ba8f0d1c"


def old_release(tag: str, directory: Path) -> Path:
    """The package and migrations of release ``tag`` (a commit or tag of this repository)."""
    try:
        archive = subprocess.run(
            [
                "git",
                "-C",
                str(REPO),
                "archive",
                "--format=tar",
                tag,
                "smtpauth_milter",
                "migrations",
                "setup.cfg",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(
            f"release {tag} is not in this checkout's git history ({exc.stderr.decode().strip()}): "
            "fetch the tags (git fetch --tags)"
        ) from exc
    target = directory / tag
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def _entry_point(release: Path) -> tuple[str, str]:
    """Module and function of ``release``'s ``smtpauth-milter`` console script (its setup.cfg)."""
    setup = configparser.ConfigParser()
    setup.read(release / "setup.cfg")
    scripts = setup["options.entry_points"]["console_scripts"]
    target = next(line for line in scripts.splitlines() if line.startswith("smtpauth-milter"))
    module, _, function = target.partition("=")[2].strip().partition(":")
    return module, function


def old_command(release: Path) -> tuple[list[str], dict[str, str]]:
    """argv prefix and environment that run ``smtpauth-milter`` of ``release``: its own
    console-script entry point, from its setup.cfg."""
    module, function = _entry_point(release)
    argv = [sys.executable, "-c", f"from {module} import {function}; {function}()"]
    return argv, {"PYTHONPATH": str(release)}


def run_old(release: Path, db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """One CLI command of ``release``, run as its own process."""
    argv, env = old_command(release)
    return subprocess.run(
        [*argv, *args],
        env=clean_env(SMTPAUTH_MILTER_DB=db_url, **env),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


_IN_ONE_PROCESS = """
import json, sys
from {module} import {function}
for args in json.loads(sys.argv[1]):
    try:
        {function}(args)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if code:
            sys.exit(code)
"""


def run_old_commands(
    release: Path, db_url: str, commands: Sequence[Sequence[str]]
) -> subprocess.CompletedProcess[str]:
    """Several CLI commands of ``release`` one after the other in one process (its own
    entry point called once per command, as its console script calls it).  The
    first command that fails ends the process with its exit status.  Each start
    of the old CLI costs ~0.5 s of CPU (it imports SQLAlchemy and alembic), and
    setting up a store takes several commands."""
    module, function = _entry_point(release)
    script = _IN_ONE_PROCESS.format(module=module, function=function)
    return subprocess.run(
        [sys.executable, "-c", script, json.dumps([list(args) for args in commands])],
        env=clean_env(SMTPAUTH_MILTER_DB=db_url, PYTHONPATH=str(release)),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
