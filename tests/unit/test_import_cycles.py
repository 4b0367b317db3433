"""No import circle inside smtpauth_milter: every pair of modules imports one way only.

Read from the source with ``ast`` (no module is imported), counting every
import: module level, inside functions and under ``TYPE_CHECKING`` alike,
since each one ties the two modules together.  ``lint-imports`` holds the
layers; this holds the modules within a layer (docs/internals.md#layers).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "smtpauth_milter"
ROOT = "smtpauth_milter"

# Circles known and being removed: the lead deletes an entry when its fix lands.
ALLOWED: list[frozenset[str]] = []


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imported(module: str, path: Path, known: Mapping[str, Path]) -> Iterator[str]:
    """The package's modules that ``module`` imports (``from pkg import mod`` names mod)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                here = module.split(".") if is_package else module.split(".")[:-1]
                anchor = here[: len(here) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base not in known:
                continue
            names = [f"{base}.{alias.name}" for alias in node.names]
            submodules = [name for name in names if name in known]
            yield from submodules
            if len(submodules) < len(names):
                yield base


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    known = _modules(package)
    return {
        module: {m for m in _imported(module, path, known) if m != module}
        for module, path in known.items()
    }


def circles(graph: Mapping[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_no_import_circle_inside_the_package() -> None:
    graph = import_graph()
    assert "smtpauth_milter.core.policy" in graph  # the walk found the package
    unexpected = [sorted(c) for c in circles(graph) if c not in ALLOWED]
    assert not unexpected, f"modules that import each other (directly or around): {unexpected}"


def test_the_core_pair_imports_one_way() -> None:
    graph = import_graph()
    assert "smtpauth_milter.core.policy" not in graph["smtpauth_milter.core.ownership"]
    assert "smtpauth_milter.core.ownership" in graph["smtpauth_milter.core.policy"]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param({"a.py": "from . import b", "b.py": "import p.a"}, [{"p.a", "p.b"}], id="pair"),
        pytest.param(
            {"a.py": "from p.b import x", "b.py": "from p.c import y", "c.py": "def f():\n    from p import a"},
            [{"p.a", "p.b", "p.c"}],
            id="around-three-lazy",
        ),
        pytest.param(
            {"a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.b import T", "b.py": "from .a import x"},
            [{"p.a", "p.b"}],
            id="type-checking-counts",
        ),
        pytest.param({"a.py": "from p import b", "b.py": "import os"}, [], id="one-way"),
    ],
)  # fmt: skip
def test_the_walk_finds_circles(
    tmp_path: Path, files: dict[str, str], expected: list[set[str]]
) -> None:
    package = tmp_path / "p"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name, text in files.items():
        (package / name).write_text(text + "\n")
    assert sorted(map(sorted, circles(import_graph(package)))) == sorted(map(sorted, expected))
