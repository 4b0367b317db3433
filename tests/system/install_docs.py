"""The shell blocks of docs/operations.md's install section, as the system test runs them.

tests/unit/test_install_docs.py holds the documentation to exactly these blocks,
and tests/system/test_install.py runs each of them on the real machine, so a
block that stops working fails a test.
"""

from __future__ import annotations

import re
from pathlib import Path

from smtpauth_milter import __version__

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
SECTION = "## Install on Debian 12"
WHEEL = f"smtpauth_milter-{__version__}-py3-none-any.whl"

# On any machine with a clone (run in the clone): the sdist and the wheel in dist/.
BUILD = """\
python3 -m venv /tmp/smtpauth-build
/tmp/smtpauth-build/bin/pip install --quiet build
/tmp/smtpauth-build/bin/python -m build"""
# On the mail host, as root, in the directory the wheel was copied to.
INSTALL_FROM_WHEEL = f"PYTHONPATH={WHEEL} python3 -m smtpauth_milter.admin.install"
# On the mail host, as root, in a clone.
INSTALL_FROM_CLONE = "./scripts/install"
UNINSTALL = "/opt/smtpauth-milter/bin/python -P -m smtpauth_milter.admin.install uninstall"
PURGE = f"{INSTALL_FROM_WHEEL} uninstall --purge"
BLOCKS = [BUILD, INSTALL_FROM_WHEEL, INSTALL_FROM_CLONE, UNINSTALL, PURGE]

_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def install_section(text: str) -> str:
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def shell_blocks(text: str) -> list[str]:
    """The ``sh`` code blocks of the install section, each without its comment lines."""
    blocks = []
    for block in _BLOCK.findall(install_section(text)):
        lines = [line for line in block.splitlines() if line and not line.startswith("#")]
        blocks.append("\n".join(lines))
    return blocks
