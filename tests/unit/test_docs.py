"""The documentation stays inside the repository and its links and anchors resolve.

Checked over every tracked file of the checkout (``git ls-files``):

- every relative link of every Markdown file names a file or directory that
  exists inside the repository, and a ``file.md#anchor`` / ``#anchor`` names a
  heading of that file (GitHub's anchor rules);
- every docs/<page>.md#<heading> pointer in any other text file (code comments,
  docstrings, tests) names an existing page and heading;
- no text file mentions the project's old out-of-tree notes or shared folder.

The checker itself is proven on a small fabricated repository first, so these
tests cannot pass by checking nothing.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = "docs"
# Written in two halves so that this file does not mention them itself.
FORBIDDEN = ("NOTES" + ".md", "../" + "shared")

_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
_CODE_SPAN = re.compile(r"`[^`]*`")
_INLINE_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_WEB = ("http://", "https://", "mailto:")
_POINTER = re.compile(r"(?<![\w./-])" + DOCS + r"/([\w-]+\.md)(?:#([\w-]+))?")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: text only, lower case, punctuation dropped, ' ' -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def _prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans removed."""
    lines, fenced = [], False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(_CODE_SPAN.sub("", line))
    return lines


def anchors(markdown: Path) -> set[str]:
    """Every anchor GitHub gives the headings of ``markdown`` (a repeated one gets -1, -2...)."""
    seen: Counter[str] = Counter()
    found = set()
    text = markdown.read_text(encoding="utf-8")
    lines, fenced = [], False
    for line in text.splitlines():  # headings keep their code spans' text
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append(line)
    for line in lines:
        match = _HEADING.match(line)
        if match:
            base = slug(match.group(1))
            found.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
            seen[base] += 1
    return found


def links(markdown: Path) -> list[str]:
    """The targets of the inline links, images and reference definitions of ``markdown``."""
    targets = []
    for line in _prose_lines(markdown.read_text(encoding="utf-8")):
        targets += _INLINE_LINK.findall(line)
        definition = _REFERENCE_DEF.match(line)
        if definition:
            targets.append(definition.group(1))
    return targets


def _check_target(root: Path, base: Path, target: str, source: Path) -> str | None:
    """None when ``target`` (relative to the directory ``base``, found in ``source``)
    resolves inside ``root``; else the problem."""
    path_part, _, anchor = target.partition("#")
    page = (base / path_part).resolve() if path_part else source.resolve()
    if not page.is_relative_to(root):
        return f"{source}: {target} points outside the repository"
    if not page.exists():
        return f"{source}: {target} does not exist"
    if anchor and page.suffix == ".md" and anchor not in anchors(page):
        return f"{source}: {target}: no heading #{anchor} in {page.relative_to(root)}"
    return None


def link_problems(root: Path, markdown: Path) -> list[str]:
    """Every relative link of ``markdown`` that does not resolve inside ``root``."""
    problems = []
    for target in links(markdown):
        if target.startswith(_WEB):
            continue
        if _SCHEME.match(target) or target.startswith("/"):
            problems.append(f"{markdown}: {target} points outside the repository")
            continue
        problem = _check_target(root, markdown.parent, target, markdown)
        if problem:
            problems.append(problem)
    return problems


def pointer_problems(root: Path, file: Path, text: str) -> list[str]:
    """Every docs/<page>.md#<heading> pointer in ``text`` that names no page or heading."""
    problems = []
    for name, anchor in _POINTER.findall(text):
        target = f"{DOCS}/{name}" + (f"#{anchor}" if anchor else "")
        problem = _check_target(root, root, target, file)
        if problem:
            problems.append(problem)
    return problems


def forbidden_mentions(file: Path, text: str) -> list[str]:
    return [f"{file}: mentions {word}" for word in FORBIDDEN if word in text]


def problems(root: Path, files: list[Path]) -> list[str]:
    """Everything wrong with the links, pointers and mentions of ``files`` under ``root``."""
    found = []
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError):
            continue  # binary, or deleted in the work tree but still tracked
        if file.suffix == ".md":
            found += link_problems(root, file)
        else:
            found += pointer_problems(root, file, text)
        found += forbidden_mentions(file, text)
    return found


def tracked_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.decode()
    return [ROOT / name for name in listed.split("\0") if name]


# --- the checker, proven on a fabricated repository ----------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    (tmp_path / DOCS).mkdir()
    (tmp_path / DOCS / "a.md").write_text(
        "# Page A\n\n## Run: the `milter`\n\n## Twice\n\n## Twice\n\n```\n# not a heading\n```\n"
    )
    (tmp_path / "README.md").write_text(
        f"[a]({DOCS}/a.md#run-the-milter) [b]({DOCS}/a.md#twice-1)\n"
    )
    return tmp_path


def test_the_checker_passes_good_links(repo: Path) -> None:
    assert problems(repo, [repo / "README.md", repo / DOCS / "a.md"]) == []
    assert anchors(repo / DOCS / "a.md") == {"page-a", "run-the-milter", "twice", "twice-1"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"see [x]({DOCS}/missing.md)", "does not exist"),
        (f"see [x]({DOCS}/a.md#no-such-heading)", "no heading #no-such-heading"),
        ("see [x](#not-here)", "no heading #not-here"),
        (f"see [x]({DOCS}/a.md#not-a-heading)", "no heading #not-a-heading"),
        ("see [x](../outside.md)", "points outside the repository"),
        ("see [x](/etc/passwd)", "points outside the repository"),
        ("see [x](file:///etc/passwd)", "points outside the repository"),
        (f"[ref]: {DOCS}/gone.md", "does not exist"),
        (f"![img]({DOCS}/gone.png)", "does not exist"),
    ],
)
def test_the_checker_finds_a_broken_link(repo: Path, text: str, expected: str) -> None:
    page = repo / "README.md"
    page.write_text(f"# Top\n\n{text}\n")
    found = problems(repo, [page])
    assert len(found) == 1
    assert expected in found[0]


def test_the_checker_ignores_code_and_web_links(repo: Path) -> None:
    page = repo / "README.md"
    page.write_text("`[x](gone.md)`\n\n```\n[y](gone.md)\n```\n[w](https://example.com/x)\n")
    assert problems(repo, [page]) == []


def test_the_checker_finds_pointers_and_forbidden_mentions(repo: Path) -> None:
    source = repo / "code.py"
    source.write_text(
        f"# see {DOCS}/a.md#twice and {DOCS}/a.md#gone, {DOCS}/b.md\n# {FORBIDDEN[0]} {FORBIDDEN[1]}\n"
    )
    found = problems(repo, [source])
    assert len(found) == 4, found
    assert "no heading #gone" in found[0]
    assert "does not exist" in found[1]
    assert all(f"mentions {word}" in line for line, word in zip(found[2:], FORBIDDEN, strict=True))


# --- the repository ----------------------------------------------------------------


def test_the_repository_has_its_docs() -> None:
    files = {path.relative_to(ROOT).as_posix() for path in tracked_files()}
    for page in ("policy", "operations", "cli", "internals", "performance"):
        assert f"{DOCS}/{page}.md" in files


def test_every_link_pointer_and_mention_in_the_repository_resolves() -> None:
    assert problems(ROOT, tracked_files()) == []
