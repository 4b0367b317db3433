"""``smtpauth-milter doctor`` against real Postfix configurations (``postconf -c DIR``).

Each test writes a private main.cf (no running Postfix needed), a real store and,
where it matters, a real milter process or a unix socket file with given modes.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpauth_milter import __version__
from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.admin.doctor import checks, facts
from smtpauth_milter.admin.doctor.listeners import holder
from smtpauth_milter.admin.doctor.running import (
    group_options,
    running_store_finding,
)
from smtpauth_milter.store.engine import Store
from smtpauth_milter.store.urls import display_url
from tests.harness.milter import MilterProcesses, ours
from tests.harness.mta.postfix import write_settled
from tests.upgrades import newer_migrations

GOOD = """\
myhostname = mx.example.com
mydomain = example.com
mydestination = $mydomain, localhost.$mydomain, localhost
virtual_mailbox_domains = example.net
relay_domains =
smtpd_milters = inet:127.0.0.1:{port}
milter_default_action = tempfail
"""


def write_main_cf(directory: Path, text: str) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    write_settled(directory / "main.cf", text)
    return str(directory)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    assert run_cli(["--db", url, "db", "init"]) == 0
    assert run_cli(["--db", url, "domain", "add", "example.com", "example.net"]) == 0
    return url


@pytest.fixture
def milters(tmp_path: Path) -> Iterator[MilterProcesses]:
    with MilterProcesses(tmp_path) as procs:
        yield procs


def run_doctor(
    capsys: pytest.CaptureFixture[str], db: str, config_dir: str, socket_spec: str
) -> tuple[int, list[str]]:
    capsys.readouterr()
    code = run_cli(["--db", db, "doctor", "--postfix-config", config_dir, "--socket", socket_spec])
    out = capsys.readouterr().out
    return code, out.splitlines()


@pytest.fixture
def shared_store() -> Iterator[str]:
    """A store user nobody can read (pytest's tmp_path is root's alone)."""
    directory = Path(tempfile.mkdtemp(prefix="smtpauth-doctor-"))
    directory.chmod(0o755)
    url = f"sqlite:///{directory / 'store.sqlite'}"
    assert run_cli(["--db", url, "db", "init"]) == 0
    assert run_cli(["--db", url, "domain", "add", "example.com", "example.net"]) == 0
    (directory / "store.sqlite").chmod(0o644)
    yield url
    shutil.rmtree(directory, ignore_errors=True)


def test_a_good_installation_is_all_ok(
    tmp_path: Path, shared_store: str, milters: MilterProcesses, capsys: pytest.CaptureFixture[str]
) -> None:
    store_url = shared_store
    milter = milters.start(store_url, "--user", "nobody")  # a milter as root is a warning
    config = write_main_cf(tmp_path / "postfix", GOOD.format(port=milter.port))
    code, lines = run_doctor(capsys, store_url, config, milter.socket)
    assert code == 0, lines
    assert all(line.startswith("ok: ") for line in lines)
    assert any("answers option negotiation" in line for line in lines)
    assert any(
        f"smtpd_milters lists the milter (inet:127.0.0.1:{milter.port})" in line for line in lines
    )


def test_a_broken_installation_reports_each_problem_with_its_fix(
    tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_main_cf(
        tmp_path / "postfix",
        "mydestination = $myhostname, localhost\nmyhostname = mx.other.test\n"
        "virtual_alias_domains = alias.test, hash:/nonexistent/vdomains\n"
        "smtpd_milters = inet:127.0.0.1:1\nnon_smtpd_milters = inet:localhost:2\n"
        "milter_default_action = accept\nmilter_protocol = 2\n"
        "milter_mail_macros = i {mail_addr}\n",
    )
    code, lines = run_doctor(capsys, store_url, config, "inet:2@127.0.0.1")
    assert code == 2
    text = "\n".join(lines)
    assert all(line.split(":")[0] in ("ok", "warning", "error") for line in lines)
    for line in lines:
        if not line.startswith("ok: "):
            assert " — fix: " in line, line
    assert "error: smtpd_milters does not list the milter's socket inet:2@127.0.0.1" in text
    assert "postconf -e 'smtpd_milters = inet:127.0.0.1:2'" in text
    assert "warning: non_smtpd_milters lists the milter" in text
    assert "error: milter_default_action = accept fails open" in text
    assert "error: milter_mail_macros lack {auth_authen} with milter_protocol = 2" in text
    assert "warning: Postfix receives mail for mx.other.test (mydestination)" in text
    assert "warning: Postfix receives mail for alias.test (virtual_alias_domains)" in text
    assert "localhost " not in text
    assert "virtual_alias_domains uses hash:/nonexistent/vdomains" in text
    assert "warning: the milter treats example.com as local but Postfix does not" in text
    assert "error: no option negotiation on inet:2@127.0.0.1" in text


def test_per_milter_default_action_and_maps_that_hold_the_domains(
    tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    table = tmp_path / "postfix" / "vdomains"
    table.parent.mkdir()
    table.write_text("example.com OK\nexample.net OK\n")
    config = write_main_cf(
        tmp_path / "postfix",
        f"mydestination =\nvirtual_mailbox_domains = texthash:{table}\n"
        "smtpd_milters = { inet:localhost:3, default_action=accept }\n",
    )
    code, lines = run_doctor(capsys, store_url, config, "inet:3@127.0.0.1")
    text = "\n".join(lines)
    assert "ok: smtpd_milters lists the milter (inet:localhost:3)" in text
    assert "error: default_action=accept in the milter's smtpd_milters entry fails open" in text
    assert "treats example.com as local" not in text  # found in the table with postmap -q
    assert code == 2


def test_store_behind_its_schema_and_unreachable(
    tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_main_cf(tmp_path / "postfix", GOOD.format(port=4))
    store = Store(store_url)
    store.downgrade("base")
    store.dispose()
    _code, lines = run_doctor(capsys, store_url, config, "inet:4@127.0.0.1")
    assert any(
        "is at schema none" in line and "fix: smtpauth-milter db upgrade" in line for line in lines
    )
    assert any(line.startswith("warning: local domains not compared") for line in lines)
    missing = f"sqlite:///{tmp_path / 'nothing' / 'store.sqlite'}"
    code, lines = run_doctor(capsys, missing, config, "inet:4@127.0.0.1")
    assert lines[0] == (
        f"error: the store {missing} does not exist: the milter tempfails every message"
        " — fix: smtpauth-milter db init, then smtpauth-milter domain add YOUR.DOMAIN"
    )
    assert code == 2
    assert not (tmp_path / "nothing").exists()  # looking created nothing
    down = "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"
    code, lines = run_doctor(capsys, down, config, "inet:4@127.0.0.1")
    assert lines[0].startswith("error: cannot read the store") and "secret" not in lines[0]
    assert code == 2


def test_a_store_without_local_domains_is_an_error(
    tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_main_cf(tmp_path / "postfix", GOOD.format(port=4))
    assert run_cli(["--db", store_url, "domain", "remove", "example.com", "example.net"]) == 0
    code, lines = run_doctor(capsys, store_url, config, "inet:4@127.0.0.1")
    assert lines[1] == (
        "error: the store has no local domains: nothing is checked, every message passes"
        " — fix: smtpauth-milter domain add YOUR.DOMAIN"
    )
    assert code == 2


def test_unknown_postfix_directory(
    store_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, lines = run_doctor(capsys, store_url, str(tmp_path / "missing"), "inet:5@127.0.0.1")
    assert code == 2
    assert any(line.startswith("error: cannot read Postfix's configuration") for line in lines)


def _unix_socket(path: Path, mode: int, uid: int, gid: int) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    os.chown(path, uid, gid)
    path.chmod(mode)
    return sock


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_socket_the_postfix_user_cannot_write(tmp_path: Path) -> None:
    user = facts.mta_user("postfix")
    assert user is not None
    postfix_gid = grp.getgrnam("postfix").gr_gid
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o755)
    for directory in (tmp_path, *tmp_path.parents):
        directory.chmod(directory.stat().st_mode | 0o001)
    cases = [
        (0o660, 0, postfix_gid, "ok"),
        (0o600, 0, postfix_gid, "error"),
        (0o660, 0, 0, "error"),
        (0o666, 0, 0, "ok"),
        (0o600, pwd.getpwnam("postfix").pw_uid, 0, "ok"),
    ]
    for index, (mode, uid, gid, expected) in enumerate(cases):
        path = run_dir / f"s{index}.sock"
        with _unix_socket(path, mode, uid, gid):
            spec = f"unix:{path}"
            finding = checks.check_socket_access(
                spec, facts.file_facts(str(path)), facts.parent_facts(str(path)), user
            )
        assert finding.severity.name.lower() == expected, (oct(mode), uid, gid, finding.line())
    run_dir.chmod(0o700)
    path = run_dir / "hidden.sock"
    with _unix_socket(path, 0o666, 0, 0):
        finding = checks.check_socket_access(
            f"unix:{path}", facts.file_facts(str(path)), facts.parent_facts(str(path)), user
        )
    assert finding.severity is checks.Severity.ERROR and "no search permission" in finding.line()


@pytest.mark.parametrize(
    ("ours", "entry", "queue", "match"),
    [
        ("inet:8894@127.0.0.1", "inet:127.0.0.1:8894", "/q", True),
        ("inet:8894@localhost", "inet:127.0.0.1:8894", "/q", True),
        ("inet:8894@127.0.0.1", "inet:127.0.0.1:8895", "/q", False),
        ("inet6:8894@::1", "inet:[::1]:8894", "/q", True),
        ("unix:/run/m.sock", "unix:/run/m.sock", "/q", True),
        ("unix:/var/spool/postfix/m/m.sock", "unix:/m/m.sock", "/var/spool/postfix", True),
        ("unix:/var/spool/postfix/m/m.sock", "unix:m/m.sock", "/var/spool/postfix", True),
        ("unix:/run/m.sock", "unix:/run/other.sock", "/q", False),
    ],
)
def test_socket_notations_match(ours: str, entry: str, queue: str, match: bool) -> None:
    found = checks.find_entry(ours, checks.parse_milters(f"inet:10.0.0.1:1, {entry}"), queue)
    assert (found is not None) is match


def test_parse_milters_with_braces() -> None:
    entries = checks.parse_milters(
        "inet:a:1, { inet:b:2, connect_timeout=10s, default_action = accept } unix:/x"
    )
    assert [e.address for e in entries] == ["inet:a:1", "inet:b:2", "unix:/x"]
    assert entries[1].settings == {"connect_timeout": "10s", "default_action": "accept"}
    assert checks.postfix_notation("inet6:8894@::1") == "inet:[::1]:8894"


def _seeded(url: str) -> str:
    for args in (["db", "init"], ["domain", "add", "example.com", "example.net"]):
        assert run_cli(["--db", url, *args]) == 0
    return url


def test_doctor_says_when_the_running_milter_reads_another_store(
    tmp_path: Path,
    store_url: str,
    milters: MilterProcesses,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    milter = milters.start(store_url)  # SMTPAUTH_MILTER_DB in its environment, cwd /
    config = write_main_cf(tmp_path / "postfix", GOOD.format(port=milter.port))
    other = _seeded(f"sqlite:///{tmp_path / 'other.sqlite'}")
    code, lines = run_doctor(capsys, other, config, milter.socket)
    assert code == 2
    assert lines[-1] == (
        f"error: the milter on {milter.socket} (pid {milter.pid}, user root) reads the store {store_url}, "
        f"not {other}: changes made here do not reach it — fix: give this command the milter's "
        "store: the same --db, --config or SMTPAUTH_MILTER_DB / SMTPAUTH_MILTER_CONFIG as the "
        "milter (both read /etc/smtpauth-milter/smtpauth-milter.toml when neither is set)"
    )
    monkeypatch.chdir(tmp_path)  # the same file, spelt relative to this directory
    code, lines = run_doctor(capsys, "sqlite:///store.sqlite", config, milter.socket)
    assert (
        lines[-1]
        == f"ok: the milter on {milter.socket} (pid {milter.pid}, user root) reads this store"
    )
    # ...and a milter that kept root is a warning (the tests' milters run without --user)
    assert lines[-2] == (
        f"warning: the milter on {milter.socket} (pid {milter.pid}) runs as root, with every "
        "privilege — fix: run it with --user (e.g. --user smtpauth-milter --group postfix), "
        "as the systemd unit in contrib/ does"
    )
    assert code == 1, lines


def test_doctor_resolves_the_milters_store_from_its_default_config_file(
    tmp_path: Path,
    store_url: str,
    milters: MilterProcesses,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    default = tmp_path / "etc" / "smtpauth-milter.toml"
    default.parent.mkdir()
    default.write_text(f'db = "{store_url}"\n', encoding="utf-8")
    env = {"SMTPAUTH_MILTER_CONFIG_DEFAULT": str(default)}  # no SMTPAUTH_MILTER_DB: the file
    milter = milters.add(ours(None, milters.log_path(), env=env)).start()
    spec = milter.socket
    milter.wait_for_log(r"event=start")
    assert milter.log.find(r"event=start")[0].count(f"store={store_url}") == 1
    config = write_main_cf(tmp_path / "postfix", GOOD.format(port=1))
    monkeypatch.setenv("SMTPAUTH_MILTER_CONFIG_DEFAULT", str(default))
    capsys.readouterr()
    run_cli(["doctor", "--postfix-config", config, "--socket", spec])
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"ok: the milter on {spec} (pid {milter.pid}, user root) reads this store"
    other = _seeded(f"sqlite:///{tmp_path / 'other.sqlite'}")
    _code, lines = run_doctor(capsys, other, config, spec)
    assert lines[-1].startswith(
        f"error: the milter on {spec} (pid {milter.pid}, user root) reads the store"
    )


@pytest.mark.postgres
def test_the_running_milters_postgresql_store_is_shown_without_its_password(
    tmp_path: Path, pg_url: str, milters: MilterProcesses, capsys: pytest.CaptureFixture[str]
) -> None:
    milter = milters.start(_seeded(pg_url))
    config = write_main_cf(tmp_path / "postfix", GOOD.format(port=milter.port))
    other = _seeded(f"sqlite:///{tmp_path / 'other.sqlite'}")
    code, lines = run_doctor(capsys, other, config, milter.socket)
    assert code == 2
    masked = display_url(pg_url)
    assert ":***@" in masked
    assert lines[-1].startswith(
        f"error: the milter on {milter.socket} (pid {milter.pid}, user root) reads the store {masked}, "
    )


@pytest.mark.parametrize(("supervisor", "child"), [(300, 301), (32456, 314)])
def test_the_process_named_is_the_supervisor_even_after_pids_wrap(
    tmp_path: Path, supervisor: int, child: int
) -> None:
    """Under AutoRestart the supervisor and its child both hold the socket; once pids
    wrap around the child's is the lower (seen on a busy machine: "pid 314")."""
    for pid, parent in ((supervisor, 1), (child, supervisor), (child + 1, supervisor)):
        (tmp_path / str(pid) / "fd").mkdir(parents=True)
        # a command name with ") S 9 " in it must not be read as the parent
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (run) S 9 () S {parent} {pid} 0\n")
    (tmp_path / str(supervisor) / "fd" / "3").symlink_to("socket:[4242]")
    (tmp_path / str(child) / "fd" / "3").symlink_to("socket:[4242]")
    (tmp_path / str(child + 1) / "fd" / "3").symlink_to("socket:[7]")  # another socket
    assert holder(4242, tmp_path) == supervisor


def test_doctor_says_why_it_cannot_tell_the_milters_store(tmp_path: Path) -> None:
    with socket.socket() as listener:  # this test process listens: not `smtpauth-milter run`
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        spec = f"inet:{listener.getsockname()[1]}@127.0.0.1"
        finding = running_store_finding(spec, "sqlite:///x")
    assert finding.line() == (
        f"warning: cannot tell which store the milter on {spec} reads: the process listening "
        "there is not `smtpauth-milter run` — fix: run doctor as root, or compare the "
        "milter's --db / --config with this command's"
    )
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "m.sock"))
        listener.listen()
        finding = running_store_finding(f"unix:{tmp_path / 'm.sock'}", "sqlite:///x")
    assert "the process listening there is not `smtpauth-milter run`" in finding.what
    gone = running_store_finding(f"unix:{tmp_path / 'none.sock'}", "sqlite:///x")
    assert gone.severity is checks.Severity.WARNING
    assert f"no process listens on unix:{tmp_path / 'none.sock'}" in gone.what


@pytest.mark.parametrize(
    ("argv", "options"),
    [
        (["smtpauth-milter", "run"], {}),
        (["python", "/v/bin/smtpauth-milter", "--db", "sqlite:///a", "run"], {"db": "sqlite:///a"}),
        (["smtpauth-milter", "--db=sqlite:///run", "--config", "c.toml", "run", "--db", "x"],
         {"db": "sqlite:///run", "config": "c.toml"}),
        (["smtpauth-milter", "doctor"], None),
    ],
)  # fmt: skip
def test_the_group_options_of_a_milters_command_line(
    argv: list[str], options: dict[str, str] | None
) -> None:
    assert group_options(argv) == options


def test_store_at_a_newer_schema_readable_or_not(
    tmp_path: Path, store_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_main_cf(tmp_path / "postfix", GOOD.format(port=4))
    location = newer_migrations(tmp_path, [("t9001", "0.1.0"), ("t9002", "99.0")])
    newer = Store(store_url, migrations=str(location))
    newer.upgrade("t9001")
    _code, lines = run_doctor(capsys, store_url, config, "inet:4@127.0.0.1")
    store_lines = [line for line in lines if "is at schema" in line]
    assert store_lines == [
        f"warning: the store {newer.display} is at schema t9001, newer than this version "
        "knows: its milter keeps deciding, but changes and export need the newer version "
        "— fix: upgrade smtpauth-milter on this host"
    ]
    # still readable: the local domains are compared with Postfix's
    assert not any(line.startswith("warning: local domains not compared") for line in lines)
    newer.upgrade()
    newer.dispose()
    code, lines = run_doctor(capsys, store_url, config, "inet:4@127.0.0.1")
    store_lines = [line for line in lines if "is at schema" in line]
    assert store_lines == [
        f"error: the store {newer.display} is at schema t9002, which needs smtpauth-milter "
        f"99.0 or later (this is {__version__}): upgrade smtpauth-milter "
        "— fix: upgrade smtpauth-milter on this host"
    ]
    assert any(line.startswith("warning: local domains not compared") for line in lines)
    assert code == 2
