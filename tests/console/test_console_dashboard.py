"""The Dashboard shows what two real milter processes decided, flushed by their login-sync
threads into one store; a domain admin sees only their domains' rows
(docs/console.md#dashboard)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from smtpauth_milter.store import editing
from tests.console.conftest import Site, login
from tests.harness.milter import MilterProcesses
from tests.harness.waiting import wait_until
from tests.support.verdicts import CONTINUE, verdicts


@pytest.fixture
def milters(tmp_path: Path) -> Iterator[MilterProcesses]:
    with MilterProcesses(tmp_path) as procs:
        yield procs


def _row(html: str, label: str) -> tuple[int, ...] | None:
    """The counts (accepted, refused, tempfailed, dry run) of a chart row."""
    found = re.search(
        rf"<td><code>{re.escape(label)}</code></td>\s*((?:<td class=\"num\">\d+</td>)+)", html
    )
    return tuple(int(n) for n in re.findall(r"\d+", found[1])) if found else None


def _page(client: TestClient, path: str = "/dashboard") -> str:
    answer = client.get(path)
    assert answer.status_code == 200
    return answer.text


def test_two_milters_counts_in_one_store_on_the_dashboard(
    site: Site, milters: MilterProcesses, db_url: str
) -> None:
    with site.store.write() as session:
        editing.set_setting(session, "require-auth-local", "on")
    mx1, mx2 = (milters.start(db_url, ready="loaded") for _ in range(2))
    own = {"sender": "alice@example.com", "login": "alice@example.com", "rcpts": ["x@r.test"]}
    assert verdicts(mx1.socket, **own) == [CONTINUE]  # type: ignore[arg-type]
    assert verdicts(mx2.socket, **own) == [CONTINUE]  # type: ignore[arg-type]
    for mx, sender, client_addr in (
        (mx1, "forged@example.com", "198.51.100.7"),
        (mx2, "forged@example.com", "198.51.100.7"),
        (mx2, "forged@example.org", "192.0.2.44"),
    ):
        refused = verdicts(mx.socket, sender=sender, rcpts=["x@r.test"], client_addr=client_addr)
        assert refused[0].startswith("5"), refused
    root = site.client()
    login(root, "root")
    expected = {"example.com": (2, 2, 0, 0), "example.org": (0, 1, 0, 0)}
    wait_until(
        lambda: {d: _row(_page(root), d) for d in expected} == expected,
        10.0,
        "both milters' counts on the dashboard",
    )
    html = _page(root)
    assert _row(html, "198.51.100.7") == (2,)
    assert _row(html, "192.0.2.44") == (1,)
    assert '<a href="/dashboard"' in html and "<svg" in html
    assert mx1.trouble() == [] and mx2.trouble() == []
    alice = site.client()
    login(alice, "alice")
    mine = _page(alice, "/dashboard?domain=example.org")
    assert _row(mine, "example.org") == (0, 1, 0, 0)
    assert _row(mine, "192.0.2.44") == (1,)
    assert "example.com" not in mine and "198.51.100.7" not in mine
