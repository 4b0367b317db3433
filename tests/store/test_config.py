"""Configuration precedence: flag > environment > config file > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from smtpauth_milter.core.errors import ConfigError
from smtpauth_milter.daemon.config import (
    DEFAULT_SOCKET,
    RunConfig,
    check_socket,
    default_db_url,
    read_file,
)
from tests.conftest import CliRunner


def _store_with_domain(cli: CliRunner, url: str, name: str) -> None:
    assert cli("--db", url, "db", "init", db=None).code == 0
    assert cli("--db", url, "domain", "add", name, db=None).code == 0


def test_db_precedence_flag_env_file_default(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = {name: f"sqlite:///{tmp_path / name}.sqlite" for name in ("flag", "env", "file", "home")}
    for name, url in urls.items():
        _store_with_domain(cli, url, f"{name}.test")
    config = tmp_path / "milter.toml"
    config.write_text(f'db = "{urls["file"]}"\n', encoding="utf-8")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))

    def domains(*args: str) -> list[str]:
        result = cli(*args, "domain", "list", db=None)
        assert result.code == 0, result.err
        return result.out.split()

    assert domains("--config", str(config), "--db", urls["flag"]) == ["flag.test"]
    monkeypatch.setenv("SMTPAUTH_MILTER_DB", urls["env"])
    assert domains("--config", str(config), "--db", urls["flag"]) == ["flag.test"]
    assert domains("--config", str(config)) == ["env.test"]
    monkeypatch.delenv("SMTPAUTH_MILTER_DB")
    assert domains("--config", str(config)) == ["file.test"]
    monkeypatch.setenv("SMTPAUTH_MILTER_CONFIG", str(config))
    assert domains() == ["file.test"]
    monkeypatch.delenv("SMTPAUTH_MILTER_CONFIG")
    default = tmp_path / "xdg" / "smtpauth-milter" / "store.sqlite"
    missing = cli("domain", "list", db=None)
    assert (missing.code, missing.out) == (2, "")
    assert missing.err == (
        f"smtpauth-milter: error: no store at {default} (create it with `smtpauth-milter db init`)\n"
    )
    assert not default.parent.exists(), "reading must not create the store"
    assert cli("db", "init", db=None).code == 0
    assert domains() == [], "the default store is new and empty"
    assert default.is_file()


def test_default_store_path_for_root_and_users(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)
    assert default_db_url() == "sqlite:////var/lib/smtpauth-milter/store.sqlite"
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_db_url() == f"sqlite:///{tmp_path}/smtpauth-milter/store.sqlite"


def test_run_options_precedence(tmp_path: Path) -> None:
    file = {"socket": "unix:/run/x.sock", "max-stale": 60, "log-level": "debug"}
    flags = {"socket": "inet:9999@127.0.0.1", "max_stale": None, "refresh": None}
    config = RunConfig.resolve("sqlite:///x", flags, file)
    assert config.socket == "inet:9999@127.0.0.1"
    assert config.max_stale == 60.0
    assert config.log_level == "debug"
    assert config.refresh == 0.5
    assert RunConfig.resolve("sqlite:///x", {}, {}).socket == DEFAULT_SOCKET


@pytest.mark.parametrize(
    "file",
    [
        {"max-stale": "soon"},
        {"max-stale": -1},
        {"refresh": 0},
        {"log-level": "loud"},
        {"socket": "inet:0@127.0.0.1"},
        {"socket": "inet:70000@127.0.0.1"},
        {"socket": "unix:"},
    ],
)
def test_bad_run_options_are_refused(file: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RunConfig.resolve("sqlite:///x", {}, file)


@pytest.mark.parametrize(
    "spec", ["inet:8894@127.0.0.1", "inet6:8894@[::1]", "inet6:8894@::1", "unix:/run/m.sock"]
)
def test_socket_forms(spec: str) -> None:
    assert check_socket(spec) == spec


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("db = \n", "bad config file"), ('dbb = "x"\n', "unknown key"), (None, "cannot read")],
)
def test_bad_config_files(tmp_path: Path, content: str | None, fragment: str) -> None:
    path = tmp_path / "c.toml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigError, match=fragment):
        read_file(str(path))
