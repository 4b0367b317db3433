"""The house rule: no module over 350 lines (issue 21, item 10).

Every module of the package, whatever its layer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "smtpauth_milter"
DIRECTORIES = ["core", "store", "lookups", "daemon", "admin"]
LIMIT = 350


@pytest.mark.parametrize("directory", DIRECTORIES)
def test_no_module_is_over_350_lines(directory: str) -> None:
    modules = sorted((PACKAGE / directory).rglob("*.py"))
    assert modules, f"no modules under {directory}"
    too_long = {
        str(path.relative_to(PACKAGE)): count
        for path in modules
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > LIMIT
    }
    assert too_long == {}
