"""The console as a real process, and Debian's Chromium driven by Playwright (never a download)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

from smtpauth_milter.admin.milterproto.transport import free_tcp_port
from smtpauth_milter.daemon.config import clean_env
from tests.harness.waiting import reap_pid, tcp_accepts, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
LOOPBACK = "127.0.0.1"


@dataclass
class ConsoleProcess:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        """SIGTERM this console (by its pid), then reap it."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
        reap_pid(self.process.pid, 10.0)
        self.process.wait(10)


@contextmanager
def console_process(db_url: str, log: Path) -> Iterator[ConsoleProcess]:
    """``smtpauth-milter console`` on a free loopback port, the store URL in its environment."""
    port = free_tcp_port(LOOPBACK)
    command = [sys.executable, "-c", "from smtpauth_milter.admin.cli import main; main()"]
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*command, "console", "--listen", f"{LOOPBACK}:{port}"],
            env=clean_env(SMTPAUTH_MILTER_DB=db_url),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = ConsoleProcess(process, f"http://{LOOPBACK}:{port}", log)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the console exited: {log.read_text()}")
            return tcp_accepts(LOOPBACK, port)

        wait_until(ready, 20.0, "the console to listen")
        yield running
    finally:
        running.stop()


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
