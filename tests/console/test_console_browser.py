"""In Debian's Chromium: a server admin turns on require-auth-local for one domain in the
console, and a running milter refuses that domain's unauthenticated local sender through
the real Postfix within 2 s while another domain still accepts; a domain admin sees only
their domain."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.logfile import LogFile
from tests.harness.mta import Sandbox
from tests.integration.milter_fixture import OurMilter, StoreCli

from .browser import ConsoleProcess, chromium, console_process

pytestmark = pytest.mark.mta

AUTH = (530, "5.7.0 Authentication required")
ACCEPTED = (250, "2.1.5 Ok")
PROPAGATION_LIMIT = 2.0  # docs/operations.md#how-a-change-propagates
REMOTE = "x@remote.test"
ROOT_PASSWORD, ALICE_PASSWORD = "server admin password", "alice's own password"


def _admin(store: StoreCli, monkeypatch: pytest.MonkeyPatch, password: str, *args: str) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    store.run("admin", "add", *args)


@pytest.fixture
def setup(
    tmp_path: Path, mta_sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[OurMilter, ConsoleProcess]]:
    store = StoreCli(tmp_path / "store.sqlite")
    store.run("domain", "add", "example.com", "example.org")
    _admin(store, monkeypatch, ROOT_PASSWORD, "root")
    _admin(store, monkeypatch, ALICE_PASSWORD, "alice", "--domain", "example.org")
    milter = OurMilter(store, mta_sandbox.inet_milter_socket(), LogFile(tmp_path / "milter.log"))
    milter.start()
    mta_sandbox.postfix.use_milter(milter.socket)
    try:
        with console_process(store.url, tmp_path / "console.log") as console:
            yield milter, console
    finally:
        mta_sandbox.postfix.use_milter(None)
        milter.stop()


def _first_rcpt(sandbox: Sandbox, mail_from: str) -> tuple[int, str]:
    result = sandbox.smtp(mail_from, [REMOTE])
    assert result.rcpts, result
    return result.rcpts[0].code, result.rcpts[0].text


def test_require_auth_local_for_one_domain_from_the_browser(
    mta_sandbox: Sandbox, setup: tuple[OurMilter, ConsoleProcess]
) -> None:
    milter, console = setup
    milter.wait_loaded()
    assert _first_rcpt(mta_sandbox, "carol@example.com") == ACCEPTED
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{console.url}/login")
        page.fill("input[name=name]", "root")
        page.fill("input[name=password]", ROOT_PASSWORD)
        page.click("button:has-text('Log in')")
        page.select_option("select[name=domain]", "example.com")
        page.click("button:has-text('Show')")
        assert "Values for example.com" in page.inner_text("p.scope")
        page.check("input[type=checkbox][name=require-auth-local]")
        page.click("button:has-text('Save')")
        page.wait_for_selector("p.saved")
        saved_at = time.monotonic()
        row = page.locator("tr", has=page.locator("code", has_text="require-auth-local"))
        assert "this domain" in row.inner_text()
        while _first_rcpt(mta_sandbox, "carol@example.com") != AUTH:
            assert time.monotonic() - saved_at < PROPAGATION_LIMIT, "not enforced within 2 s"
        assert time.monotonic() - saved_at < PROPAGATION_LIMIT
        assert _first_rcpt(mta_sandbox, "dave@example.org") == ACCEPTED
        page.click("button:has-text('Log out')")
        page.fill("input[name=name]", "alice")
        page.fill("input[name=password]", ALICE_PASSWORD)
        page.click("button:has-text('Log in')")
        page.wait_for_selector("select[name=domain]")  # the next page, not the login form
        choices = page.locator("select[name=domain] option").all_inner_texts()
        assert choices == ["example.org"]
        assert "Trusted networks" not in page.inner_text("nav")
    history = milter.store.run("history")
    assert "user=console:root" in history and "require-auth-local" in history
