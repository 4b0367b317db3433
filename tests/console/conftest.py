"""A console on a real store (SQLite and PostgreSQL), driven in process with Starlette's client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from argon2 import PasswordHasher
from starlette.testclient import TestClient

from smtpauth_milter.admin.console import passwords
from smtpauth_milter.admin.console.app import create_app, make_console
from smtpauth_milter.admin.console.passwords import hash_password
from smtpauth_milter.admin.console.web import Console
from smtpauth_milter.store import accounts, editing
from smtpauth_milter.store.engine import Store
from tests.integration.conftest import mta_sandbox  # noqa: F401 (the browser test's Postfix)
from tests.support.clock import Clock

PASSWORDS = {"root": "server admin password", "alice": "alice's own password"}
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_TOKEN = re.compile(r'name="token" value="([^"]+)"')

# Argon2id with its cheapest parameters for the passwords these tests hash and check in
# process: the same hash and the same check, without the ~0.17 s of CPU and 64 MiB of
# argon2-cffi's defaults each time (the console tests spent ~60 s of CPU in them).
# tests/unit/test_console_passwords.py holds the shipped hasher to those defaults.
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
CHEAP_NOBODY = CHEAP_HASHER.hash("no account has this password hash")


@pytest.fixture(autouse=True)
def cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cheap hasher, and an unknown name checked against a hash of the same cost."""
    monkeypatch.setattr(passwords, "_HASHER", CHEAP_HASHER)
    monkeypatch.setattr(passwords, "_NOBODY", CHEAP_NOBODY)


@dataclass
class Site:
    store: Store
    console: Console
    clock: Clock

    def client(self) -> TestClient:
        return TestClient(create_app(self.console), follow_redirects=False)


@pytest.fixture
def site(db_url: str) -> Iterator[Site]:
    """example.com and example.org (example.net an alias of example.com); root is a server
    admin, alice the domain admin of example.org."""
    store = Store(db_url)
    with store.write() as session:
        editing.add_domains(session, ["example.com", "example.org"])
        editing.add_alias_domains(session, ["example.net"], "example.com")
        accounts.add_admin(session, "root", hash_password(PASSWORDS["root"]))
        accounts.add_admin(session, "alice", hash_password(PASSWORDS["alice"]), ["example.org"])
    clock = Clock()
    try:
        yield Site(store, make_console(store, clock=clock), clock)
    finally:
        store.dispose()


def login(client: TestClient, name: str, password: str | None = None) -> str:
    """Log in; returns the CSRF token of the first page."""
    form = client.get("/login")
    token = _TOKEN.search(form.text)
    assert token, form.text
    answer = client.post(
        "/login",
        data={"token": token[1], "name": name, "password": password or PASSWORDS[name]},
    )
    assert answer.status_code == 303, answer.text
    return csrf_of(
        client.get("/smtp-auth?domain=example.org" if name == "alice" else "/smtp-auth").text
    )


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, html
    return found[1]
