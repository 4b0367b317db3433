"""Bad input the battery in tests/store/test_bad_input.py does not cover yet:
one line on stderr, exit 2, no traceback, the store unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from tests.conftest import run_captured

BAD = {
    "reply with CRLF injection": [
        "settings",
        "set",
        "auth-required-reply",
        "530 5.7.0 no\r\n250 2.0.0 ok",
    ],
    "reply with NUL": ["settings", "set", "sender-mismatch-reply", "553 5.7.1 a\x00b"],
    "reply 2xx": ["settings", "set", "bad-sender-reply", "250 2.1.0 Sender ok"],
    "reply without status": ["settings", "set", "tempfail-reply", "451"],
    "empty bool": ["settings", "set", "require-auth-local", ""],
    "bool with newline": ["settings", "set", "require-auth-local", "on\noff"],
    "delimiter too long": ["settings", "set", "recipient-delimiter", "+-_=~!#$%"],
    "role list with @": ["settings", "set", "role-senders", "postmaster@example.com"],
    "empty domain": ["domain", "add", ""],
    "domain with NUL": ["domain", "add", "exa\x00mple.org"],
    "domain with newline": ["domain", "add", "example.org\nevil.test"],
    "domain 300 chars": ["domain", "add", "a" * 60 + "." + "b" * 60 + "." + "c" * 180 + ".test"],
    "empty cidr": ["network", "add", ""],
    "ipv4 prefix 33": ["network", "add", "10.0.0.0/33"],
    "ipv6 prefix 129": ["network", "add", "2001:db8::/129"],
    "ipv6 host bits": ["network", "add", "2001:db8::1/32"],
    "empty login": ["sender", "allow", "", "alice@example.com"],
    "login with newline": ["sender", "allow", "alice\nroot", "alice@example.com"],
    "grant target with CRLF": ["sender", "allow", "alice", "alice@exa\r\nmple.com"],
    "grant to empty": ["sender", "allow", "alice", ""],
    "run refresh 0": ["run", "--refresh", "0"],
    "run negative max-stale": ["run", "--max-stale", "-1"],
    "run port 0": ["run", "--socket", "inet:0@127.0.0.1"],
    "run port 70000": ["run", "--socket", "inet:70000@127.0.0.1"],
    "run relative unix socket": ["run", "--socket", "unix:milter.sock"],
    "run unknown log level": ["run", "--log-level", "loud"],
    "check without --from": ["check", "--rcpt", "b@example.net"],
    "unknown option": ["domain", "list", "--frobnicate"],
}


def _run(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    done = run_captured(capsys, ["--db", url, *args])
    return done.code, done.out, done.err


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One seeded store, copied for each test (migrating a new file costs ~0.3 s)."""
    path = tmp_path_factory.mktemp("seeded") / "store.sqlite"
    url = f"sqlite:///{path}"
    for args in (
        ["db", "init"],
        ["domain", "add", "example.com"],
        ["settings", "set", "require-auth-local", "on"],
        ["network", "add", "192.0.2.0/24"],
        ["sender", "allow", "alice", "@example.com"],
    ):
        assert run_cli(["--db", url, *args]) == 0
    return path, url


def _seed(url: str, capsys: pytest.CaptureFixture[str], seeded: tuple[Path, str]) -> str:
    target = Path(url.removeprefix("sqlite:///"))
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(seeded[0], target)
    return _run(url, capsys, "export")[1]


def _one_line(err: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("smtpauth-milter: error: "), err
    assert "Traceback" not in err


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name in ("DB", "CONFIG", "SOCKET", "USER", "GROUP", "MAX_STALE", "REFRESH", "LOG_LEVEL"):
        monkeypatch.delenv(f"SMTPAUTH_MILTER_{name}", raising=False)
    return f"sqlite:///{tmp_path / 'state' / 'store.sqlite'}"


@pytest.mark.parametrize("args", list(BAD.values()), ids=list(BAD))
def test_more_bad_input_is_one_line_and_changes_nothing(
    url: str, capsys: pytest.CaptureFixture[str], args: list[str], seeded: tuple[Path, str]
) -> None:
    before = _seed(url, capsys, seeded)
    code, _out, err = _run(url, capsys, *args)
    assert code == 2, err
    _one_line(err)
    assert _run(url, capsys, "export")[1] == before


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.toml", 'db = "sqlite:///x\n'),
        ("wrong-type.toml", 'max-stale = "soon"\n'),
        ("wrong-type-refresh.toml", "refresh = 0.0\n"),
        ("wrong-user-type.toml", "user = 65534\n"),
        ("binary.toml", "\udcff\udcfe"),
    ],
)
def test_a_bad_config_file_for_run_is_one_line(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, content: str
) -> None:
    config = tmp_path / name
    config.write_bytes(content.encode("utf-8", "surrogateescape"))
    code, _out, err = _run(url, capsys, "--config", str(config), "run")
    assert code == 2, err
    _one_line(err)


def test_a_missing_config_file_is_one_line(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = _run(url, capsys, "--config", "/nonexistent/milter.toml", "domain", "list")
    assert code == 2
    _one_line(err)


@pytest.mark.parametrize(
    "db",
    [
        "not a url",
        "mysql+nodriver://x@127.0.0.1/db",
        "sqlite:////proc/self/no-such-dir/store.sqlite",
        "sqlite:////dev/null/store.sqlite",
    ],
)
def test_an_unusable_store_url_is_one_line(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["--db", db, "domain", "list"])
    assert code == 2
    _one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "content", [b"\xff\xfe not utf-8", b"", b"[]", b'{"format": "smtpauth-milter/1", "domains": 1}']
)
def test_more_bad_imports_change_nothing(
    url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    seeded: tuple[Path, str],
) -> None:
    before = _seed(url, capsys, seeded)
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    code, _out, err = _run(url, capsys, "import", str(path))
    assert code == 2, err
    _one_line(err)
    assert _run(url, capsys, "export")[1] == before


def test_importing_a_directory_is_one_line(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], seeded: tuple[Path, str]
) -> None:
    before = _seed(url, capsys, seeded)
    code, _out, err = _run(url, capsys, "import", str(tmp_path))
    assert code == 2
    _one_line(err)
    assert _run(url, capsys, "export")[1] == before
