"""The Logins page: frozen and near-limit logins (what `login list` shows) with Unfreeze;
a domain admin sees and unfreezes only the logins of their domains (docs/console.md#logins)."""

from __future__ import annotations

import time
from pathlib import Path

from starlette.testclient import TestClient

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.admin.console.app import create_app, make_console
from smtpauth_milter.store import audit, editing, loginedit
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.loginstate import Batch, exchange, writing
from tests.console.conftest import Site, csrf_of, login

FROZEN = ("bob@example.com", "carol@example.org", "relay")


def _setup(site: Site) -> None:
    now = time.time()
    with site.store.write() as session:
        editing.set_setting(session, "login-max-messages", "5/1h")
    with writing(site.store) as session:
        for name in FROZEN:
            assert loginedit.freeze(session, name, f"<script>{name}</script>", "root", now)
        counts = {
            (name, "messages", 60, int(now) // 60): 4
            for name in ("dave@example.com", "erin@example.org")
        }
        exchange(session, Batch(counts=counts), now)


def _frozen(site: Site) -> set[str]:
    with site.store.read() as session:
        return set(loginedit.frozen_logins(session, time.time()))


def _history(site: Site) -> list[tuple[str, str, str | None]]:
    with site.store.read() as session:
        return [(e.action, e.subject, e.user) for e in audit.history(session)]


def test_server_admin_sees_every_login_and_unfreezes_into_history(site: Site) -> None:
    _setup(site)
    client = site.client()
    login(client, "root")
    page = client.get("/logins")
    assert page.status_code == 200
    for name in (*FROZEN, "dave@example.com", "erin@example.org"):
        assert f"<code>{name}</code>" in page.text
    assert "&lt;script&gt;bob@example.com&lt;/script&gt;" in page.text
    assert "<script>" not in page.text
    assert "login-max-messages</td><td>4</td><td>5/1h" in page.text
    assert '<a href="/logins"' in page.text
    answer = client.post("/logins", data={"csrf": csrf_of(page.text), "login": "Bob@Example.com"})
    assert answer.status_code == 303
    assert _frozen(site) == {"carol@example.org", "relay"}
    assert ("login-unfreeze", "bob@example.com", "console:root") in _history(site)
    with site.store.read() as session:
        commands = [e.command for e in audit.history(session) if e.action == "login-unfreeze"]
    assert commands == ["console from testclient: login unfreeze bob@example.com"]
    again = client.post("/logins", data={"csrf": csrf_of(page.text), "login": "bob@example.com"})
    assert again.status_code == 400
    assert "login bob@example.com is not frozen" in again.text


def test_domain_admin_sees_and_unfreezes_only_their_domains_logins(site: Site) -> None:
    _setup(site)
    client = site.client()
    csrf = login(client, "alice")
    page = client.get("/logins?domain=example.org")
    assert page.status_code == 200
    assert "<code>carol@example.org</code>" in page.text
    assert "<code>erin@example.org</code>" in page.text
    for other in ("bob@example.com", "relay", "dave@example.com"):
        assert other not in page.text
    before = (_frozen(site), _history(site))
    for crafted in (
        "bob@example.com",
        "BOB@EXAMPLE.COM.",
        "relay",
        "carol@example.org@example.com",
        "",
    ):
        answer = client.post("/logins", data={"csrf": csrf, "login": crafted})
        assert answer.status_code == 403, crafted
    assert (_frozen(site), _history(site)) == before
    assert client.post("/logins", data={"login": "carol@example.org"}).status_code == 403
    assert _frozen(site) == before[0]
    mine = client.post("/logins", data={"csrf": csrf, "login": "carol@example.org"})
    assert mine.status_code == 303
    assert _frozen(site) == {"bob@example.com", "relay"}
    assert ("login-unfreeze", "carol@example.org", "console:alice") in _history(site)
    # ...and alice finds it on her own History page (it is an entry of her domain)
    page = client.get("/history", params={"domain": "example.org"})
    assert page.status_code == 200 and "carol@example.org" in page.text


def test_a_separate_state_store(site: Site, tmp_path: Path) -> None:
    """With `state` set, the page reads and unfreezes there; the history stays in the store."""
    url = f"sqlite:///{tmp_path / 'state.sqlite'}"
    assert run_cli(["--db", url, "db", "init"]) == 0
    state = Store(url)
    try:
        with writing(state) as session:
            loginedit.freeze(session, "zoe@example.org", "", "root", time.time())
        client = TestClient(
            create_app(make_console(site.store, clock=site.clock, state=state)),
            follow_redirects=False,
        )
        login(client, "root")
        page = client.get("/logins")
        assert "<code>zoe@example.org</code>" in page.text
        answer = client.post(
            "/logins", data={"csrf": csrf_of(page.text), "login": "zoe@example.org"}
        )
        assert answer.status_code == 303
        with state.read() as session:
            assert loginedit.frozen_logins(session, time.time()) == {}
        assert ("login-unfreeze", "zoe@example.org", "console:root") in _history(site)
    finally:
        state.dispose()
