"""``domain sync --from-postfix`` against private Postfix configurations (``postconf -c DIR``).

Real postconf and postmap read each main.cf; the store is SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import CliRunner
from tests.store.test_doctor import write_main_cf

MAIN_CF = """\
myhostname = mx.example.com
mydomain = example.com
mydestination = $myhostname, localhost.$mydomain, localhost, $mydomain
virtual_mailbox_domains = {files}/vdomains, hash:{files}/missing
virtual_alias_domains = Alias.Example, .sub.example
relay_domains = relayed.example
"""
LISTED = ["alias.example", "example.com", "filed.example", "mx.example.com", "other.example"]


@pytest.fixture
def postfix_dir(tmp_path: Path) -> str:
    files = tmp_path / "postfix"
    files.mkdir()
    (files / "vdomains").write_text("# mailbox domains\nfiled.example  other.example # two\n")
    return write_main_cf(files, MAIN_CF.format(files=files))


def sync(cli: CliRunner, directory: str, *flags: str) -> tuple[int, list[str], str]:
    result = cli("domain", "sync", "--from-postfix", "--config-dir", directory, *flags)
    return result.code, result.out.splitlines(), result.err


def domains(cli: CliRunner) -> list[str]:
    return cli("domain", "list").out.splitlines()


def test_dry_run_prints_the_difference_and_changes_nothing(
    cli: CliRunner, postfix_dir: str
) -> None:
    cli("domain", "add", "example.com", "stale.example")
    before, history = cli("export").out, cli("history").out
    code, lines, err = sync(cli, postfix_dir, "--dry-run", "--remove")
    assert (code, err) == (0, "")
    assert lines == [
        "would add alias.example (virtual_alias_domains)",
        "would add filed.example (virtual_mailbox_domains)",
        "would add mx.example.com (mydestination)",
        "would add other.example (virtual_mailbox_domains)",
        # not removable: the hash: table Postfix could not be asked may hold it
        "kept stale.example: Postfix does not list it and some lookup tables could not be asked",
        f"cannot list hash:{postfix_dir}/missing (virtual_mailbox_domains): "
        "add its domains with smtpauth-milter domain add",
        "skipped .sub.example (virtual_alias_domains): not a domain name",
    ]
    assert cli("export").out == before and cli("history").out == history


def test_sync_adds_removes_only_with_remove_and_is_one_audited_command(
    cli: CliRunner, tmp_path: Path
) -> None:
    files = tmp_path / "pf"
    files.mkdir()
    table = files / "vmailbox"
    table.write_text("kept-in-table.example OK\n")
    directory = write_main_cf(
        files,
        "myhostname = mx.example.com\nmydomain = example.com\n"
        "mydestination = $mydomain\n"
        f"virtual_mailbox_domains = new.example, texthash:{table}\n",
    )
    cli("domain", "add", "example.com", "stale.example", "kept-in-table.example")
    code, lines, _ = sync(cli, directory)
    assert code == 0
    assert lines == [
        "added new.example (virtual_mailbox_domains)",
        "not in Postfix: stale.example (kept; --remove removes it)",
        f"cannot list texthash:{table} (virtual_mailbox_domains): "
        "add its domains with smtpauth-milter domain add",
    ]
    assert domains(cli) == ["example.com", "kept-in-table.example", "new.example", "stale.example"]
    code, lines, _ = sync(cli, directory, "--remove")
    assert code == 0
    assert lines[:2] == [
        "removed stale.example",
        f"cannot list texthash:{table} (virtual_mailbox_domains): "
        "add its domains with smtpauth-milter domain add",
    ]
    assert lines[2] == "nothing to add: every domain Postfix lists is a local domain"
    assert domains(cli) == ["example.com", "kept-in-table.example", "new.example"]
    code, lines, _ = sync(cli, directory, "--remove")  # in sync: nothing written
    entries = cli("history", "--json").json()["entries"]
    synced = [e for e in entries if e["command"].startswith("domain sync")]
    assert [(e["action"], e["subject"], e["new"]) for e in synced] == [
        ("domain-add", "new.example", None),
        ("domain-sync", f"postfix:{directory}", "1 added, 0 removed"),
        ("domain-remove", "stale.example", None),
        ("domain-sync", f"postfix:{directory}", "0 added, 1 removed"),
    ]
    assert synced[0]["command"] == f"domain sync --from-postfix --config-dir {directory}"
    assert synced[0]["at"] == synced[1]["at"] and synced[2]["at"] == synced[3]["at"]


def test_removing_a_target_whose_alias_postfix_still_has_is_refused(
    cli: CliRunner, tmp_path: Path
) -> None:
    directory = write_main_cf(
        tmp_path / "pf", "mydestination =\nvirtual_alias_domains = example.net\n"
    )
    cli("domain", "add", "example.com")
    cli("domain", "add", "example.net", "--alias-of", "example.com")
    before = cli("export").out
    code, lines, err = sync(cli, directory, "--remove")
    assert code == 2 and lines == []
    assert err == (
        "smtpauth-milter: error: cannot remove example.com: alias domains point at it: "
        "example.net (remove them first, or in the same command)\n"
    )
    assert cli("export").out == before


def test_bad_invocations_say_one_line_and_change_nothing(cli: CliRunner, tmp_path: Path) -> None:
    cli("domain", "add", "example.com")
    before = cli("export").out
    missing = cli("domain", "sync", "--from-postfix", "--config-dir", str(tmp_path / "none"))
    assert missing.code == 2 and missing.err.count("\n") == 1
    assert missing.err.startswith("smtpauth-milter: error: postconf -c ")
    assert "No such file or directory" in missing.err
    no_source = cli("domain", "sync", "--config-dir", str(tmp_path))
    assert (no_source.code, no_source.err) == (
        2,
        "smtpauth-milter: error: say where the domains come from: --from-postfix\n",
    )
    assert cli("export").out == before


def test_sync_then_doctor_agree_but_relay_domains_and_doctor_warns_about_send_as_anyone(
    cli: CliRunner, postfix_dir: str
) -> None:
    assert sync(cli, postfix_dir)[0] == 0
    assert domains(cli) == LISTED  # relay_domains are not local: sync leaves them out
    cli("sender", "allow", "relay", "*")
    result = cli("doctor", "--postfix-config", postfix_dir, "--socket", "inet:1@127.0.0.1")
    lines = result.out.splitlines()
    receives = [line for line in lines if "Postfix receives mail for" in line]
    assert len(receives) == 1 and "relayed.example (relay_domains)" in receives[0], lines
    assert not any("does not receive mail for" in line for line in lines), lines
    assert (
        "warning: login relay may send as anyone (send-as-anyone grant '*') — fix: keep it only "
        "for a relay or application login; else smtpauth-milter sender revoke relay '*'"
    ) in lines
    assert result.code == 2  # no milter listens on port 1


def test_without_config_dir_it_reads_the_postfix_config_dir_setting(
    cli: CliRunner, postfix_dir: str
) -> None:
    assert cli("settings", "set", "postfix-config-dir", postfix_dir).code == 0
    result = cli("domain", "sync", "--from-postfix", "--dry-run")
    assert result.code == 0, result.err
    assert "would add mx.example.com (mydestination)" in result.out.splitlines()
    assert f"cannot list hash:{postfix_dir}/missing" in result.out
