"""Hostile import files, hostile stored text, and who the audit trail says did it.

Every malformed import is one line and exit 2 with nothing changed; every output
that prints stored or user-given text escapes control and bidi characters (as
``\\uXXXX`` in JSON, which stays valid and parses back to the same text); the
trail names the real uid, never a name from the environment.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from smtpauth_milter.store import transfer
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.models import (
    AuditEntry,
    Domain,
    GlobalSetting,
    SendAsGrant,
    TrustedNetwork,
)
from tests.conftest import CliRunner

HEAD = '{"format": "smtpauth-milter/1", '
HOSTILE_FILES = {
    "deep nesting": (HEAD + '"settings": ' + "[" * 100_000 + "]" * 100_000 + "}").encode(),
    "deep objects": (HEAD + '"domains": ' + '{"a": ' * 50_000 + "{}" + "}" * 50_001).encode(),
    "5,000-digit number": (HEAD + '"settings": {"dry-run": ' + "9" * 5000 + "}}").encode(),
    "5,000-digit negative": (HEAD + '"settings": {"dry-run": -' + "9" * 5000 + "}}").encode(),
    "NaN": (HEAD + '"settings": {"dry-run": NaN}}').encode(),
    "duplicate top-level key": (HEAD + '"settings": {}, "settings": {"dry-run": "on"}}').encode(),
    "duplicate setting": (HEAD + '"settings": {"dry-run": "on", "dry-run": "off"}}').encode(),
    "duplicate domain": (HEAD + '"domains": {"a.test": {}, "a.test": {"dry-run": "on"}}}').encode(),
    "duplicate key in a network": (
        HEAD + '"networks": [{"cidr": "192.0.2.0/24", "cidr": "0.0.0.0/0"}]}'
    ).encode(),
    "unknown key in a network": (
        HEAD + '"networks": [{"cidr": "192.0.2.0/24", "comment": "", "trusted": false}]}'
    ).encode(),
    "unknown key in a grant": (
        HEAD + '"grants": [{"login": "bob", "target": "*", "expires": "never"}]}'
    ).encode(),
}


def _seed(cli: CliRunner) -> str:
    for args in (
        ("domain", "add", "example.com"),
        ("settings", "set", "require-auth-local", "on"),
        ("network", "add", "192.0.2.0/24", "--comment", "Büro Köln"),
        ("sender", "allow", "alice", "@example.com"),
    ):
        assert cli(*args).code == 0, args
    return cli("export").out


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("smtpauth-milter: error: import: ")
    assert "Traceback" not in err
    return lines[0]


def _safe(text: str) -> None:
    """Nothing a terminal would act on: every line printable (no C0/C1, no bidi)."""
    for line in text.splitlines():
        assert line.isprintable(), repr(line)


@pytest.mark.parametrize("content", list(HOSTILE_FILES.values()), ids=list(HOSTILE_FILES))
def test_a_hostile_import_file_is_one_line_exit_2_and_changes_nothing(
    cli: CliRunner, tmp_path: Path, content: bytes
) -> None:
    before = _seed(cli)
    trail = cli("history", "--json").out
    path = tmp_path / "hostile.json"
    path.write_bytes(content)
    result = cli("import", str(path))
    assert result.code == 2, result.err
    _one_error_line(result.err)
    assert cli("export").out == before
    assert cli("history", "--json").out == trail


def test_an_endless_file_is_refused_after_the_size_limit(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/dev/zero once grew import without bound (the real limit: 64 Mi characters)."""
    before = _seed(cli)
    monkeypatch.setattr(transfer, "MAX_CHARS", 4096)
    result = cli("import", "/dev/zero")
    assert result.code == 2, result.err
    assert "/dev/zero is larger than any export" in _one_error_line(result.err)
    assert cli("export").out == before


def test_a_file_name_that_is_not_utf8_is_one_line_exit_2(cli: CliRunner, tmp_path: Path) -> None:
    before = _seed(cli)
    dump = tmp_path / "store.json"
    dump.write_text(before, encoding="utf-8")
    name = os.fsencode(tmp_path) + b"/store-\xff\xfe.json"
    os.link(dump, name)
    result = cli("import", os.fsdecode(name))
    assert result.code == 2, result.err
    line = _one_error_line(result.err)
    assert "store-\\udcff\\udcfe.json is not UTF-8" in line
    _safe(result.err)
    assert cli("export").out == before


def test_a_file_name_with_a_newline_and_bidi_is_echoed_escaped(
    cli: CliRunner, tmp_path: Path
) -> None:
    """The name once started a second, history-looking line; it is recorded as it is."""
    before = _seed(cli)
    name = tmp_path / "x\nat=2026-01-01T00:00:00Z user=root action=import \u202egpj.json"
    name.write_text(before, encoding="utf-8")
    result = cli("import", str(name))
    assert result.code == 0, result.err
    shown = "x\\nat=2026-01-01T00:00:00Z user=root action=import \\u202egpj.json"
    assert result.out == f"imported {tmp_path}/{shown}\n"
    text = cli("history").out
    _safe(text)
    assert text.count("\n") == len(cli("history", "--json").json()["entries"])
    (entry,) = [e for e in cli("history", "--json").json()["entries"] if e["action"] == "import"]
    assert entry["subject"] == str(name)  # JSON escapes, parsed back: the very name
    missing = cli("import", str(name) + ".missing")
    assert missing.code == 2
    assert missing.err.count("\n") == 1
    _safe(missing.err)


HOSTILE = "web \x1b[31m\x9b2J\u202eevil\u2028\u200f\U000e0041 end"  # ESC, C1 CSI, bidi, LS, tag


@pytest.fixture
def hostile_store(cli: CliRunner, db_url: str) -> Iterator[str]:
    """A store holding control and bidi characters, written past the CLI's checks
    (by SQL, an older version, another tool), and a trail entry holding them too."""
    _seed(cli)
    assert cli("sender", "allow", "bob", "*").code == 0
    assert cli("settings", "set", "tempfail-reply", "451 4.3.0 later").code == 0
    store = Store(db_url)
    try:
        with store.write() as session:
            session.execute(
                update(GlobalSetting)
                .where(GlobalSetting.key == "tempfail-reply")
                .values(value="451 4.3.0 " + HOSTILE)
            )
            session.execute(update(Domain).values(name="ex" + HOSTILE))
            session.execute(update(TrustedNetwork).values(comment=HOSTILE))
            session.execute(update(SendAsGrant).values(login="bob" + HOSTILE))
            session.execute(update(AuditEntry).values(os_user="root" + HOSTILE, new=HOSTILE))
        yield db_url
    finally:
        store.dispose()


def test_export_and_history_json_escape_and_parse_back(cli: CliRunner, hostile_store: str) -> None:
    exported = cli("export")
    assert exported.code == 0
    _safe(exported.out)
    assert "\\u001b[31m\\u009b2J\\u202eevil\\u2028\\u200f\\udb40\\udc41 end" in exported.out
    data = exported.json()
    assert data["networks"] == [{"cidr": "192.0.2.0/24", "comment": HOSTILE}]
    assert {g["login"] for g in data["grants"]} == {"bob" + HOSTILE}
    history = cli("history", "--json")
    _safe(history.out)
    entries = history.json()["entries"]
    assert entries and all(e["user"] == "root" + HOSTILE for e in entries)
    assert {e["new"] for e in entries} == {HOSTILE}


def test_text_outputs_escape_stored_text(cli: CliRunner, hostile_store: str) -> None:
    for args in (
        ("history",),
        ("network", "list"),
        ("sender", "list"),
        ("domain", "list"),
        ("settings", "show"),
        ("settings", "show", "--json"),
    ):
        result = cli(*args)
        assert result.code == 0, (args, result.err)
        _safe(result.out)
        _safe(result.err)
    listed = cli("network", "list").out
    assert listed == "192.0.2.0/24  web \\x1b[31m\\x9b2J\\u202eevil\\u2028\\u200f\\U000e0041 end\n"
    assert (
        cli("domain", "list").out
        == "exweb \\x1b[31m\\x9b2J\\u202eevil\\u2028\\u200f\\U000e0041 end\n"
    )
    shown = cli("settings", "show", "--json").json()["settings"]["tempfail-reply"]["value"]
    assert shown == "451 4.3.0 " + HOSTILE
    warning = cli("sender", "list").err
    assert "login bobweb \\x1b[31m" in warning and warning.count("\n") == 1


def test_non_ascii_text_stays_readable_and_round_trips(cli: CliRunner, tmp_path: Path) -> None:
    exported = _seed(cli)
    assert '"comment": "Büro Köln"' in exported
    dump = tmp_path / "store.json"
    dump.write_text(exported, encoding="utf-8")
    assert cli("network", "remove", "192.0.2.0/24").code == 0
    assert cli("import", str(dump)).code == 0
    assert cli("export").out == exported


# --- the recorded user: a uid without a passwd entry, LOGNAME=root ----------

UNUSED_UID = 54321


@pytest.fixture
def reachable_url(db_url: str) -> Iterator[str]:
    """``db_url`` as a process running as UNUSED_UID can write it (pytest's tmp_path
    is root-only 0700: the SQLite store is moved to a directory that uid owns)."""
    if not db_url.startswith("sqlite:///"):
        yield db_url
        return
    shared = Path(tempfile.mkdtemp(prefix="smtpauth-uid-"))
    try:
        shared.chmod(0o755)
        store = shared / "store"
        store.mkdir()
        shutil.copy(db_url.removeprefix("sqlite:///"), store / "store.sqlite")
        for path in (store, store / "store.sqlite"):
            os.chown(path, UNUSED_UID, UNUSED_UID)
        yield f"sqlite:///{store / 'store.sqlite'}"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# The interpreter lives where only root may read (/root/.pyenv): the child starts as
# root, loads what a store command loads (one read as root), then drops to the uid.
DROP_THEN_RUN = f"""
import os, sys
from smtpauth_milter.admin.cli import run_cli
assert run_cli(["domain", "list"]) == 0
os.setgroups([])
os.setgid({UNUSED_UID})
os.setuid({UNUSED_UID})
assert os.getuid() == os.geteuid() == {UNUSED_UID}
sys.exit(run_cli(sys.argv[1:]))
"""


def _as_unused_uid(url: str, env: dict[str, str], *args: str) -> None:
    base = {k: v for k, v in os.environ.items() if k not in ("SUDO_USER", "SUDO_UID")}
    result = subprocess.run(
        [sys.executable, "-c", DROP_THEN_RUN, *args],
        env={**base, "SMTPAUTH_MILTER_DB": url, **env},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="changing to another uid needs root")
def test_a_uid_without_passwd_entry_is_recorded_as_its_number_not_logname(
    cli: CliRunner, reachable_url: str
) -> None:
    import pwd

    with pytest.raises(KeyError):
        pwd.getpwuid(UNUSED_UID)
    liar = {"LOGNAME": "root", "USER": "root"}
    _as_unused_uid(reachable_url, liar, "domain", "add", "one.example")
    _as_unused_uid(reachable_url, {**liar, "SUDO_USER": "alice"}, "domain", "add", "two.example")
    result = cli("history", "--json", db=reachable_url)
    assert result.code == 0, result.err
    entries = result.json()["entries"]
    assert [(e["subject"], e["user"]) for e in entries] == [
        ("one.example", "uid:54321"),
        ("two.example", "uid:54321 (claimed sudo: alice)"),
    ]
    assert [e["claimed_sudo"] for e in entries] == [None, "alice"]
    text = cli("history", db=reachable_url).out
    assert 'user="uid:54321 (claimed sudo: alice)"' in text
