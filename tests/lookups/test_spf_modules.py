"""The SPF modules' shape: imports one way only (issue 21, item 10), small, and the rule
that decides which records are cached per sender rather than per domain."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import smtpauth_milter
from smtpauth_milter.core.spf import split_sender, uses_local_part

PACKAGE = Path(smtpauth_milter.__file__).parent
MAX_LINES = 350


def _imports(path: Path) -> set[str]:
    """Every smtpauth_milter module ``path`` imports, wherever the import stands
    (inside functions and ``if TYPE_CHECKING:`` too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("smtpauth_milter.")}


def _lookups_modules() -> dict[str, Path]:
    return {
        f"smtpauth_milter.lookups.{path.stem}": path
        for path in (PACKAGE / "lookups").glob("*.py")
        if path.stem != "__init__"
    }


def test_no_two_lookups_modules_import_each_other() -> None:
    modules = _lookups_modules()
    graph = {name: _imports(path) & modules.keys() for name, path in modules.items()}
    circles = sorted(
        (a, b) for a, targets in graph.items() for b in targets if a < b and a in graph[b]
    )
    assert circles == []
    assert "smtpauth_milter.lookups.spf" not in graph["smtpauth_milter.lookups.spfdns"]


def test_the_spf_modules_are_small() -> None:
    names = ["lookups/spf.py", "lookups/spfdns.py", "lookups/spfslots.py", "core/spf.py"]
    sizes = {name: len((PACKAGE / name).read_text().splitlines()) for name in names}
    assert all(size <= MAX_LINES for size in sizes.values()), sizes


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ("v=spf1 exists:%{l}.%{d} -all", True),
        ("v=spf1 exists:%{L}.%{d} -all", True),  # upper case: URL-escaped, same letter
        ("v=spf1 exists:%{ir}.%{v}.%{l1r+}._x.%{d2} -all", True),
        ("v=spf1 exists:%{s}.x.example -all", True),
        ("v=spf1 include:%{S2}.x.example -all", True),
        ("v=spf1 ip4:192.0.2.0/24 -all exp=%{l}.why.example", True),  # anywhere in the record
        ("v=spf1 exists:%{ir}.%{v}._spf.%{d2} -all", False),  # IP and domain only
        ("v=spf1 exists:%{o}.%{h}.%{p}.x.example -all", False),
        ("v=spf1 ip4:192.0.2.0/24 include:_spf.example.net -all", False),
        ("v=spf1 a:%%{l}.example -all", True),  # an escaped % still counts: erring safe
    ],
)
def test_which_records_depend_on_the_local_part(record: str, expected: bool) -> None:
    assert uses_local_part(record) is expected


def test_split_sender() -> None:
    assert split_sender("Bob+x@Example.COM.") == ("Bob+x", "example.com")
    assert split_sender('"a@b"@example.com') == ('"a@b"', "example.com")
    assert split_sender("nobody") is None
    assert split_sender("") is None
