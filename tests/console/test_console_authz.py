"""A domain admin sees and changes only their domains, whatever request they craft:
403, and the store and the history unchanged."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from smtpauth_milter.store import audit, editing
from tests.console.conftest import Site, login
from tests.store.test_doctor import write_main_cf

OTHER_DOMAIN = [
    {"domain": "example.com"},
    {"domain": "EXAMPLE.COM."},
    {"domain": "example.net"},  # an alias of example.com
    {"domain": ""},  # the entire server: global values
    {"domain": "example.org\nexample.com"},
]


def _state(site: Site) -> tuple[object, ...]:
    with site.store.read() as session:
        return (
            [
                (r.key, r.value, r.source)
                for d in editing.list_domains(session)
                for r in editing.show_settings(session, d)
            ],
            editing.global_values(session),
            editing.list_networks(session),
            [(e.action, e.subject, e.new) for e in audit.history(session)],
        )


@pytest.mark.parametrize("target", OTHER_DOMAIN)
def test_another_domain_or_the_server_is_403_and_changes_nothing(
    site: Site, target: dict[str, str]
) -> None:
    client = site.client()
    csrf = login(client, "alice")
    before = _state(site)
    query = client.get("/smtp-auth", params=target)
    assert query.status_code == 403
    for extra in ({"require-auth-local": "on"}, {"unset": "dry-run"}):
        answer = client.post("/smtp-auth", data={"csrf": csrf, **target, **extra})
        assert answer.status_code == 403
    assert _state(site) == before


def test_trusted_networks_are_403_for_a_domain_admin(site: Site) -> None:
    client = site.client()
    csrf = login(client, "alice")
    before = _state(site)
    assert client.get("/networks").status_code == 403
    for data in (
        {"cidr": "0.0.0.0/0", "comment": "all"},
        {"remove": "192.0.2.0/24"},
        {"cidr": "0.0.0.0/0", "domain": "example.org"},
    ):
        assert client.post("/networks", data={"csrf": csrf, **data}).status_code == 403
    assert _state(site) == before
    assert "Trusted networks" not in client.get("/smtp-auth?domain=example.org").text


def test_a_domain_admin_changes_their_own_domain_and_sees_only_it(site: Site) -> None:
    client = site.client()
    csrf = login(client, "alice")
    page = client.get("/smtp-auth?domain=example.org").text
    assert "Entire server" not in page and "example.com" not in page
    answer = client.post(
        "/smtp-auth", data={"csrf": csrf, "domain": "example.org", "require-sender-match": "on"}
    )
    assert answer.status_code == 303
    with site.store.read() as session:
        shown = {r.key: r.source.value for r in editing.show_settings(session, "example.org")}
        last = audit.history(session)[-1]
    assert shown["require-sender-match"] == "domain"
    assert (last.user, last.domain, last.new) == ("console:alice", "example.org", "on")


def test_history_shows_a_domain_admin_only_their_domains_entries(site: Site) -> None:
    with site.store.write() as session:
        audit.begin(session, audit.Actor.now("settings set"))
        editing.set_setting(session, "dry-run", "on", "example.com")
        editing.set_setting(
            session, "auth-required-reply", '530 5.7.0 <b>x</b> "q" ü', "example.org"
        )
    client = site.client()
    login(client, "alice")
    assert client.get("/history").status_code == 403
    assert client.get("/history?domain=example.com").status_code == 403
    mine = client.get("/history?domain=example.org&since=1h")
    assert mine.status_code == 200
    assert "dry-run" not in mine.text and "&lt;b&gt;x&lt;/b&gt; &#34;q&#34; ü" in mine.text
    assert 'href="/history?domain=example.org"' in mine.text
    root = site.client()
    login(root, "root")
    everything = root.get("/history").text
    assert "dry-run" in everything and "auth-required-reply" in everything
    assert root.get("/history?since=yesterday").status_code == 400


@pytest.mark.parametrize(
    "target", ["@example.com", "x@example.com", "*", "x@example.net", "not an address", ""]
)
def test_a_domain_admin_cannot_grant_or_revoke_outside_their_domains(
    site: Site, target: str
) -> None:
    with site.store.write() as session:
        editing.allow(session, "relay", "*")
        editing.allow(session, "helpdesk", "@example.com")
    client = site.client()
    csrf = login(client, "alice")
    before = _state(site), _grants(site)
    for extra in ({}, {"revoke": "1"}):
        data = {"csrf": csrf, "login": "helpdesk", "target": target, "domain": "example.org"}
        assert client.post("/send-as", data={**data, **extra}).status_code == 403
    for grant_login, grant in (("relay", "*"), ("helpdesk", "@example.com")):
        data = {"csrf": csrf, "login": grant_login, "target": grant, "revoke": "1"}
        assert client.post("/send-as", data=data).status_code == 403
    assert (_state(site), _grants(site)) == before


def _grants(site: Site) -> list[tuple[str, str]]:
    with site.store.read() as session:
        return editing.list_grants(session)


def test_a_domain_admin_grants_in_their_domain_and_sees_only_those(site: Site) -> None:
    with site.store.write() as session:
        editing.allow(session, "relay", "*")
        editing.allow(session, "helpdesk", "@example.com")
    client = site.client()
    csrf = login(client, "alice")
    data = {"csrf": csrf, "login": "Helpdesk", "target": "Sales@EXAMPLE.org"}
    assert client.post("/send-as", data=data).status_code == 303
    assert ("helpdesk", "sales@example.org") in _grants(site)
    page = client.get("/send-as").text
    assert "<code>sales@example.org</code>" in page
    assert "<code>@example.com</code>" not in page and "<td>relay</td>" not in page
    root = site.client()
    login(root, "root")
    everything = root.get("/send-as").text
    assert '<tr class="anyone"><td>relay</td>' in everything and "@example.com" in everything


def test_domains_a_domain_admin_sees_theirs_and_changes_none(site: Site) -> None:
    client = site.client()
    csrf = login(client, "alice")
    page = client.get("/domains").text
    assert ">example.org</a>" in page and ">example.com</a>" not in page
    before = _state(site)
    for data in (
        {"names": "evil.example"},
        {"names": "x.example", "alias_of": "example.org"},
        {"remove": "example.org"},
        {"remove": "example.com", "domain": "example.org"},
    ):
        assert client.post("/domains", data={"csrf": csrf, **data}).status_code == 403
    assert _state(site) == before


def test_domains_a_server_admin_adds_aliases_and_removes(site: Site) -> None:
    client = site.client()
    csrf = login(client, "root")
    data = {"csrf": csrf, "names": "example.info Bücher.example", "alias_of": "example.org"}
    assert client.post("/domains", data=data).status_code == 303
    with site.store.read() as session:
        assert editing.domain_aliases(session)["xn--bcher-kva.example"] == "example.org"
    refused = client.post("/domains", data={"csrf": csrf, "remove": "example.org"})
    assert refused.status_code == 400 and "alias domains point at it" in refused.text
    assert client.post("/domains", data={"csrf": csrf, "remove": "example.info"}).status_code == 303
    with site.store.read() as session:
        assert "example.info" not in editing.list_domains(session)
        assert audit.history(session)[-1].user == "console:root"


def test_who_may_send_as_an_address_by_checks_own_forms(site: Site) -> None:
    with site.store.write() as session:
        editing.allow(session, "relay", "*")
        editing.allow(session, "helpdesk", "@example.org")
        editing.allow(session, "bob@example.com", "sales@example.org")
        editing.allow(session, "carol@example.com", "info@example.com")
    client = site.client()
    login(client, "alice")
    page = client.get("/send-as/who", params={"address": "Sales@Example.ORG"})
    assert page.status_code == 200
    rows = re.findall(r"<td>([^<]+)</td><td>([^<]+)</td>", page.text)
    assert rows == [
        ("bob@example.com", "grant"),
        ("helpdesk", "grant-domain"),
        ("relay", "send-as-anyone"),
        ("sales@example.org", "login"),
    ]
    for other in ("info@example.com", "info@example.net", "not an address"):
        assert client.get("/send-as/who", params={"address": other}).status_code == 403


def test_domains_from_postfix_previewed_then_applied_by_a_server_admin_only(
    site: Site, tmp_path: Path
) -> None:
    directory = write_main_cf(tmp_path / "postfix", "mydestination = example.org, new.example\n")
    with site.store.write() as session:
        editing.set_setting(session, "postfix-config-dir", directory)
    alice = site.client()
    csrf = login(alice, "alice")
    assert alice.get("/domains/sync").status_code == 403
    assert alice.post("/domains/sync", data={"csrf": csrf}).status_code == 403
    client = site.client()
    csrf = login(client, "root")
    preview = client.get("/domains/sync")
    assert "would add new.example (mydestination)" in preview.text
    with site.store.read() as session:
        assert "new.example" not in editing.list_domains(session)
    assert client.post("/domains/sync", data={"csrf": csrf}).status_code == 303
    with site.store.read() as session:
        assert "new.example" in editing.list_domains(session)
        last = audit.history(session)[-1]
    assert (last.user, last.action, last.new) == (
        "console:root",
        "domain-sync",
        "1 added, 0 removed",
    )


def test_who_may_send_as_shows_what_sender_login_maps_answer(site: Site, tmp_path: Path) -> None:
    db = tmp_path / "mail.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE alias (address text, goto text)")
        conn.execute("INSERT INTO alias VALUES ('team@example.org', 'erin@example.org, <x>')")
    config = tmp_path / "alias.toml"
    config.write_text(
        f'url = "sqlite:///{db}"\nquery = "SELECT goto FROM alias WHERE address = :sender"\n'
    )
    config.chmod(0o600)
    with site.store.write() as session:
        editing.set_setting(session, "sender-login-maps", f"sql:{config}")
    client = site.client()
    login(client, "alice")
    found = client.get("/send-as/who", params={"address": "team@example.org"})
    assert found.status_code == 200
    assert re.findall(r'<code class="owner">([^<]*)</code>', found.text) == [
        "erin@example.org", "&lt;x&gt;"
    ]  # fmt: skip
    assert f"Map <code>sql:{config}</code> answers key <code>team@example.org</code>" in found.text
    missing = client.get("/send-as/who", params={"address": "nobody@example.org"})
    assert "No map has a key for nobody@example.org." in missing.text
    db.unlink()  # the map breaks: said, not hidden
    broken = client.get("/send-as/who", params={"address": "team@example.org"})
    assert broken.status_code == 200 and "The maps could not be read:" in broken.text
