"""The man page smtpauth-milter(8) is generated from the click help and cannot rot."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click

from smtpauth_milter.admin.cli import cli
from smtpauth_milter.admin.manpage import escape, render

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "man" / "smtpauth-milter.8"
REGENERATE = "python -m smtpauth_milter.admin.manpage > man/smtpauth-milter.8"


def test_the_committed_man_page_is_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "smtpauth_milter.admin.manpage"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout == render()
    assert PAGE.read_text(encoding="utf-8") == result.stdout, (
        f"man/smtpauth-milter.8 is stale: run `{REGENERATE}`"
    )


def _leaf_paths(group: click.Group, prefix: str) -> list[str]:
    paths = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            paths += _leaf_paths(command, f"{prefix} {name}")
        else:
            paths.append(f"{prefix} {name}")
    return paths


def test_every_command_and_option_is_in_the_page() -> None:
    page = render()
    paths = _leaf_paths(cli, "smtpauth-milter")
    assert "smtpauth-milter history" in paths
    for path in paths:
        assert f'.SS "{escape(path)} ' in page, path
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "ENVIRONMENT", "FILES"):
        assert f".SH {section}\n" in page
    assert ".SH SEE ALSO" in page
    for option in ("--db", "--since", "--max-stale", "--rcpt", "--comment"):
        assert f"\\fB{escape(option)}" in page, option
    assert "SMTPAUTH_MILTER_DB" in page


def test_roff_escaping() -> None:
    assert escape("a\\b") == "a\\eb"
    assert escape(".start\n'quote") == "\\&.start\n\\&'quote"
    assert escape("--db") == "\\-\\-db"


def test_man_renders_the_page_without_warnings() -> None:
    assert shutil.which("man"), "man-db is missing: scripts/test installs it"
    env = {**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0", "LC_ALL": "C.UTF-8"}
    result = subprocess.run(
        ["man", "--warnings", "-l", str(PAGE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    head = result.stdout.splitlines()[:5]
    assert head[0].split() == [
        "SMTPAUTH-MILTER(8)",
        "System",
        "Administration",
        "SMTPAUTH-MILTER(8)",
    ]
    assert "smtpauth-milter - refuse mail sent as a local user" in " ".join(result.stdout.split())
    assert "smtpauth-milter history [OPTIONS]" in result.stdout
