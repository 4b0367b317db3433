"""Screenshots of every console page for docs/console.md, at 1280x800 in the test browser.

    python -m tests.console.screenshots [docs/console]

A throwaway SQLite store with example data, the real ``smtpauth-milter console``
process, Debian's Chromium through Playwright; look at every PNG before committing.
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path
from unittest import mock

from playwright.sync_api import Page

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.store import decisioncounts
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.loginstate import Batch, exchange, writing
from tests.console.browser import chromium, console_process

PASSWORD = "screenshot password"
SETUP = (
    ["db", "init"],
    ["domain", "add", "example.com", "example.org"],
    ["domain", "add", "example.net", "--alias-of", "example.com"],
    ["settings", "set", "require-auth-local", "on"],
    ["settings", "set", "exempt-local-recipients", "on"],
    ["settings", "set", "--domain", "example.com", "require-sender-match", "on"],
    ["settings", "set", "--domain", "example.net", "dry-run", "on"],
    ["network", "add", "192.0.2.0/24", "--comment", "web servers"],
    ["network", "add", "2001:db8::/32", "--comment", "office"],
    ["sender", "allow", "helpdesk", "@example.org"],
    ["sender", "allow", "alice", "sales@example.com"],
    ["sender", "allow", "relay-web", "*"],
    ["admin", "add", "root"],
    ["admin", "add", "alice", "--domain", "example.org"],
    ["settings", "set", "--domain", "example.com", "login-max-messages", "50/1h"],
    ["login", "freeze", "sales@example.com", "--reason", "phished password, ticket 4711"],
    ["login", "freeze", "newsletter@example.org", "--reason", "sent from 40 addresses"],
)
# (login, kind, count) the milters counted this minute: near login-max-messages 50/1h
NEAR = (("bob@example.com", "messages", 44), ("alice@example.com", "messages", 48))
# What the milters decided this hour, for the Dashboard: (rule, action, domain) -> n
DECIDED = {
    ("sender-owned", "continue", "example.com"): 1830,
    ("authenticated", "continue", "example.org"): 942,
    ("local-recipient", "continue", "example.com"): 611,
    ("sender-mismatch", "reject", "example.com"): 57,
    ("auth-required", "reject", "example.org"): 212,
    ("login-max-messages", "tempfail", "example.com"): 38,
    ("sender-mismatch", "would-reject", "example.net"): 19,
    ("trusted-network", "continue", ""): 420,
}
REFUSED = {
    ("login", "sales@example.com"): 61,
    ("login", "bob@example.com"): 12,
    ("client", "198.51.100.23"): 180,
    ("client", "203.0.113.77"): 64,
    ("client", "192.0.2.200"): 21,
}


def _count(url: str) -> None:
    now = time.time()
    store = Store(url)
    try:
        counts = {(login, kind, 60, int(now) // 60): n for login, kind, n in NEAR}
        hour = int(now) // 3600
        decided = decisioncounts.Counts(
            {(hour, *key): n for key, n in DECIDED.items()},
            {(hour, kind, value, "example.com"): n for (kind, value), n in REFUSED.items()},
        )
        with writing(store) as session:
            exchange(session, Batch(counts=counts), now)
            decisioncounts.write(session, decided)
    finally:
        store.dispose()


def _cli(url: str, args: list[str]) -> None:
    with mock.patch("sys.stdin", io.StringIO(PASSWORD + "\n")), redirect_stdout(io.StringIO()):
        code = run_cli(["--db", url, *args])
    if code != 0:
        raise SystemExit(f"smtpauth-milter {' '.join(args)} exited {code}")


def _login(page: Page, base: str, name: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_selector("nav")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/store.sqlite"
        for args in SETUP:
            _cli(url, args)
        _count(url)
        with console_process(url, Path(tmp) / "console.log") as console, chromium() as browser:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            base = console.url
            page.goto(f"{base}/login")
            page.screenshot(path=out / "login.png")
            _login(page, base, "root")
            shots = {
                "dashboard.png": "/dashboard",
                "smtp-auth-server.png": "/smtp-auth",
                "smtp-auth-domain.png": "/smtp-auth?domain=example.net",
                "domains.png": "/domains",
                "send-as.png": "/send-as",
                "networks.png": "/networks",
                "logins.png": "/logins",
                "history.png": "/history",
                "explain.png": "/explain?client=203.0.113.9&login=&from=alice%40example.com"
                "&rcpts=x%40remote.test%2C+bob%40example.org&header_from=",
            }
            for name, path in shots.items():
                page.goto(base + path)
                page.screenshot(path=out / name)
            page.click("button:has-text('Log out')")
            _login(page, base, "alice")
            page.screenshot(path=out / "smtp-auth-domain-admin.png")
    for png in sorted(out.glob("*.png")):
        print(png)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/console"))
