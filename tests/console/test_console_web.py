"""The console in process: logins, sessions, CSRF, the SMTP Authentication page, escaping."""

from __future__ import annotations

import pytest
from markupsafe import escape
from starlette.testclient import TestClient

from smtpauth_milter.admin.console import passwords
from smtpauth_milter.admin.console.login import FAILED, LIMITED
from smtpauth_milter.admin.console.web import COOKIE, SECURITY_HEADERS
from smtpauth_milter.core.errors import StoreError
from smtpauth_milter.store import accounts, audit, editing
from tests.conftest import CliRunner
from tests.console.conftest import _TOKEN, PASSWORDS, Site, login


def _attempt(client: TestClient, name: str, password: str) -> tuple[int, str]:
    token = _TOKEN.search(client.get("/login").text)
    assert token
    answer = client.post("/login", data={"token": token[1], "name": name, "password": password})
    return answer.status_code, answer.text


def _overrides(site: Site, domain: str) -> dict[str, str]:
    with site.store.read() as session:
        return {
            r.key: r.value
            for r in editing.show_settings(session, domain)
            if r.source.value == "domain"
        }


def _trail(site: Site) -> list[tuple[str, str, str | None, str | None, str | None, str]]:
    with site.store.read() as session:
        return [
            (e.user, e.action, e.domain, e.old, e.new, e.command) for e in audit.history(session)
        ]


def test_logged_out_pages_lead_to_the_login_form_with_strict_headers(site: Site) -> None:
    client = site.client()
    answer = client.get("/smtp-auth")
    assert (answer.status_code, answer.headers["location"]) == (303, "/login")
    form = client.get("/login")
    for name, value in SECURITY_HEADERS.items():
        assert form.headers[name] == value
    assert "script" not in form.text.lower()


def test_one_message_for_an_unknown_name_and_a_wrong_password(site: Site) -> None:
    client = site.client()
    assert _attempt(client, "nobody", "whatever password")[0] == 401
    unknown, wrong = _attempt(client, "nobody", "x" * 12), _attempt(client, "root", "x" * 12)
    assert _TOKEN.sub("", unknown[1]) == _TOKEN.sub("", wrong[1]) and unknown[0] == wrong[0]
    assert FAILED in unknown[1]
    assert COOKIE not in client.cookies


def test_the_session_cookie_is_signed_httponly_samesite_strict_and_secure_behind_https(
    site: Site,
) -> None:
    client = site.client()
    login(client, "root")
    token = _TOKEN.search(client.get("/login").text)
    assert token
    answer = client.post(
        "/login", data={"token": token[1], "name": "root", "password": PASSWORDS["root"]}
    )
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    secure = site.console.__class__(**{**site.console.__dict__, "secure": True})
    from smtpauth_milter.admin.console.app import create_app

    behind = TestClient(
        create_app(secure), base_url="https://console.example", follow_redirects=False
    )
    token = _TOKEN.search(behind.get("/login").text)
    assert token
    answer = behind.post(
        "/login", data={"token": token[1], "name": "root", "password": PASSWORDS["root"]}
    )
    assert "Secure" in answer.headers["set-cookie"]
    forged = site.client()
    forged.cookies.set(COOKIE, cookie.split(";")[0].split("=", 1)[1][:-2] + "xx")
    assert forged.get("/smtp-auth").status_code == 303


def test_a_server_admin_sets_and_drops_a_domain_override_audited_with_name_and_address(
    site: Site,
) -> None:
    client = site.client()
    csrf = login(client, "root")
    page = client.get("/smtp-auth?domain=example.org")
    assert "Authentication is always required when mail is from local accounts" in page.text
    assert "<code>require-auth-local</code>" in page.text
    answer = client.post(
        "/smtp-auth",
        data={
            "csrf": csrf,
            "domain": "example.org",
            "require-auth-local": "on",
            "require-auth-role": "on",
            "role-senders": "postmaster, abuse, webmaster",
            "auth-required-reply": "530 5.7.0 Authentication required",
            "sender-mismatch-reply": "553 5.7.1 Sender address rejected: not owned by authenticated user",
        },
    )
    assert answer.status_code == 303
    assert _overrides(site, "example.org") == {"require-auth-local": "on"}
    assert _trail(site)[-1] == (
        "console:root",
        "setting-set",
        "example.org",
        None,
        "on",
        "console from testclient: smtp-auth page saved --domain example.org",
    )
    shown = client.get("/smtp-auth?domain=example.org").text
    assert "this domain" in shown and "Use the server's value" in shown
    client.post(
        "/smtp-auth", data={"csrf": csrf, "domain": "example.org", "unset": "require-auth-local"}
    )
    assert _overrides(site, "example.org") == {}
    assert _trail(site)[-1][1] == "setting-unset"


def test_an_alias_domain_shows_its_targets_value(site: Site) -> None:
    with site.store.write() as session:
        editing.set_setting(session, "dry-run", "on", "example.com")
    client = site.client()
    login(client, "root")
    page = client.get("/smtp-auth?domain=example.net").text
    assert "its alias target example.com" in page


def test_a_form_without_its_csrf_token_changes_nothing(site: Site) -> None:
    client = site.client()
    login(client, "root")
    before = _trail(site)
    for data in (
        {"domain": "example.org", "require-auth-local": "on"},
        {"csrf": "forged", "domain": "example.org", "require-auth-local": "on"},
    ):
        assert client.post("/smtp-auth", data=data).status_code == 403
    assert _overrides(site, "example.org") == {} and _trail(site) == before


def test_a_logged_out_cookie_replayed_is_refused(site: Site) -> None:
    client = site.client()
    csrf = login(client, "root")
    stolen = client.cookies[COOKIE]
    client.post("/logout", data={"csrf": csrf})
    replay = site.client()
    replay.cookies.set(COOKIE, stolen)
    assert replay.get("/smtp-auth").status_code == 303
    answer = replay.post(
        "/smtp-auth", data={"csrf": csrf, "domain": "example.org", "dry-run": "on"}
    )
    assert answer.status_code == 403
    assert _overrides(site, "example.org") == {}


def test_an_idle_session_ends_and_a_new_password_ends_every_session(site: Site) -> None:
    client = site.client()
    login(client, "root")
    site.clock.now += 29 * 60
    assert client.get("/smtp-auth").status_code == 200
    site.clock.now += 30 * 60 + 1
    assert client.get("/smtp-auth").status_code == 303
    login(client, "root")
    with site.store.write() as session:
        accounts.set_password(session, "root", passwords.hash_password("a brand new password"))
    assert client.get("/smtp-auth").status_code == 303


def test_twenty_wrong_passwords_are_rate_limited_even_the_right_one_after(site: Site) -> None:
    client = site.client()
    answers = [_attempt(client, "root", f"wrong password {n}")[0] for n in range(20)]
    assert answers[:10] == [401] * 10 and answers[10:] == [429] * 10
    status, text = _attempt(client, "root", PASSWORDS["root"])
    assert status == 429 and LIMITED in text
    site.clock.now += 15 * 60 + 1
    assert _attempt(client, "root", PASSWORDS["root"])[0] == 303


def test_one_address_is_limited_across_names(site: Site) -> None:
    client = site.client()
    statuses = [_attempt(client, f"name{n}", "wrong password!")[0] for n in range(31)]
    assert statuses[:30] == [401] * 30 and statuses[30] == 429
    assert _attempt(client, "alice", PASSWORDS["alice"])[0] == 429


def test_scripts_quotes_and_non_ascii_are_shown_escaped(site: Site) -> None:
    reply = '530 5.7.0 <script>alert("x")</script> don\'t ü'
    comment = "<script>alert(1)</script> \"quoted\" 'single' Grüße"
    with site.store.write() as session:
        editing.add_domains(session, ["bücher.example"])
        editing.set_setting(session, "auth-required-reply", reply, "example.org")
        editing.add_network(session, "192.0.2.0/24", comment)
    client = site.client()
    login(client, "root")
    page = client.get("/smtp-auth?domain=example.org").text
    assert "<script>" not in page
    assert str(escape(reply)) in page
    assert "xn--bcher-kva.example" in client.get("/smtp-auth").text
    networks = client.get("/networks").text
    assert "<script>" not in networks and str(escape(comment)) in networks


def test_bad_values_are_refused_with_one_message_and_nothing_changed(site: Site) -> None:
    client = site.client()
    csrf = login(client, "root")
    before = _trail(site)
    answer = client.post(
        "/smtp-auth",
        data={
            "csrf": csrf,
            "domain": "example.org",
            "require-auth-local": "on",
            "auth-required-reply": "250 fine",
        },
    )
    assert answer.status_code == 400 and 'class="error"' in answer.text
    assert _overrides(site, "example.org") == {} and _trail(site) == before


def test_explain_answers_as_check_does(site: Site, cli: CliRunner) -> None:
    with site.store.write() as session:
        editing.set_setting(session, "require-auth-local", "on")
    client = site.client()
    login(client, "root")
    query = {"client": "203.0.113.9", "from": "alice@example.com", "rcpts": "x@remote.test"}
    page = client.get("/explain", params={**query, "login": "", "header_from": ""})
    assert page.status_code == 200
    expected = cli(
        "check", "--client", "203.0.113.9", "--from", "alice@example.com", "--rcpt", "x@remote.test"
    ).out
    assert expected.strip() and str(escape(expected.strip())) in page.text
    bad = client.get("/explain", params={**query, "client": "not-an-ip"})
    assert bad.status_code == 400 and "not an IP address" in bad.text
    alice = site.client()
    login(alice, "alice")
    assert alice.get("/explain", params=query).status_code == 403


def test_a_store_in_trouble_is_one_line_503_and_nothing_changed(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = site.client()
    csrf = login(client, "root")

    def down(*_args: object) -> None:
        raise StoreError("cannot reach the store postgresql://***@db/x")

    monkeypatch.setattr(site.store, "write", down)
    answer = client.post(
        "/smtp-auth", data={"csrf": csrf, "domain": "example.org", "dry-run": "on"}
    )
    assert answer.status_code == 503
    assert "The settings store is unavailable: cannot reach the store" in answer.text
    assert answer.headers["content-security-policy"] == SECURITY_HEADERS["content-security-policy"]
    monkeypatch.undo()
    assert _overrides(site, "example.org") == {}


def test_an_unknown_domain_is_one_line_400(site: Site) -> None:
    client = site.client()
    login(client, "root")
    assert client.get("/history?domain=nowhere.example").status_code == 200  # removed ones too
    answer = client.get("/smtp-auth?domain=nowhere.example")
    assert answer.status_code == 400 and "unknown domain &#39;nowhere.example&#39;" in answer.text
