"""The install section of docs/operations.md holds exactly the shell blocks that
tests/system/test_install.py runs on the real machine: a block edited in the docs
but not in the test (or the other way round) fails here, and one that stops
working fails there."""

from __future__ import annotations

import pytest

from smtpauth_milter import __version__
from tests.system import install_docs


def test_the_install_section_is_the_commands_the_system_test_runs() -> None:
    text = install_docs.OPERATIONS.read_text(encoding="utf-8")
    assert install_docs.shell_blocks(text) == install_docs.BLOCKS


def test_the_documented_wheel_is_this_version() -> None:
    assert f"smtpauth_milter-{__version__}-py3-none-any.whl" in install_docs.INSTALL_FROM_WHEEL


def test_the_extraction_sees_every_block_and_only_the_install_section() -> None:
    text = (
        "# Doc\n\n## Install on Debian 12\n\nprose\n\n```sh\n# a comment\necho one\n```\n\n"
        "```\nnot shell\n```\n\n```sh\necho two\necho three\n```\n\n"
        "## Next\n\n```sh\necho elsewhere\n```\n"
    )
    assert install_docs.shell_blocks(text) == ["echo one", "echo two\necho three"]
    with pytest.raises(ValueError):
        install_docs.shell_blocks("# Doc without the section\n")
