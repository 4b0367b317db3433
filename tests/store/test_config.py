"""Configuration precedence: flag > environment > config file > default."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from smtpauth_milter.admin.cli import run_cli
from smtpauth_milter.core.errors import ConfigError
from smtpauth_milter.daemon.config import (
    CONFIG_DEFAULT_ENV,
    DEFAULT_CONFIG_FILE,
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


# key, the value given, how a flag or variable shows it (parsed as a float), how TOML shows it
BAD_LIMITS = [
    ("max-stale", "nan", "nan", "nan"),
    ("max-stale", "inf", "inf", "inf"),
    ("max-stale", "0", "0.0", "0"),
    ("max-stale", "-5", "-5.0", "-5"),
    ("refresh", "nan", "nan", "nan"),
    ("refresh", "-inf", "-inf", "-inf"),
    ("refresh", "0", "0.0", "0"),
    ("refresh", "-0.5", "-0.5", "-0.5"),
]


@pytest.mark.parametrize(("key", "value", "as_float", "in_toml"), BAD_LIMITS)
@pytest.mark.parametrize("source", ["flag", "env", "file"])
def test_nonsense_limits_are_one_line_naming_value_and_source(
    key: str,
    value: str,
    as_float: str,
    in_toml: str,
    source: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("DB", "CONFIG", "MAX_STALE", "REFRESH"):
        monkeypatch.delenv(f"SMTPAUTH_MILTER_{name}", raising=False)
    store = tmp_path / "store.sqlite"
    args = ["--db", f"sqlite:///{store}"]
    tail = ["run", "--socket", "inet:1@127.0.0.1"]
    env = "SMTPAUTH_MILTER_" + key.upper().replace("-", "_")
    config = tmp_path / "milter.toml"
    shown = as_float
    if source == "flag":
        tail += [f"--{key}", value]
        where = f"--{key}"
    elif source == "env":
        monkeypatch.setenv(env, value)
        where = f"environment {env}"
    else:
        config.write_text(f"{key} = {value}\n", encoding="utf-8")
        args += ["--config", str(config)]
        where = f"config file {config}"
        shown = in_toml
    capsys.readouterr()
    assert run_cli([*args, *tail]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        f"smtpauth-milter: error: {key} must be a finite, positive number of seconds, "
        f"not {shown} (from {where})\n",
    )
    assert not store.exists(), "refused before touching the store"


@pytest.mark.parametrize(
    ("flags", "file", "message"),
    [
        (
            {"max_stale": 1.0, "refresh": 0.6},
            {},
            "max-stale 1 (from --max-stale), refresh 0.6 (from --refresh)",
        ),
        ({}, {"max-stale": 0.9}, "max-stale 0.9 (from F), refresh 0.5 (from the default)"),
        (
            {"refresh": 30.0},
            {"max-stale": 50},
            "max-stale 50 (from F), refresh 30 (from --refresh)",
        ),
    ],
)
def test_max_stale_must_be_at_least_twice_refresh(
    flags: dict[str, float], file: dict[str, float], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        RunConfig.resolve("sqlite:///x", flags, file, file_name="F")
    assert str(raised.value) == f"max-stale must be at least twice refresh: {message}"
    ok = RunConfig.resolve("sqlite:///x", {"max_stale": 1.0, "refresh": 0.5}, {})
    assert (ok.max_stale, ok.refresh) == (1.0, 0.5), "exactly twice is enough"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('syslog = "no"', "syslog must be true or false, not 'no'"),
        ("syslog = 0", "syslog must be true or false, not 0"),
        ("db = 5", "db must be a string, not int"),
        ('db = ["postgresql://u:pw-in-a-list@h/x"]', "db must be a string, not list"),
        ('max-stale = "60"', "max-stale must be a number, not '60'"),
        ("refresh = true", "refresh must be a number, not True"),
        ("socket = [1]", "socket must be a string, not [1]"),
        ("user = 0", "user must be a string, not 0"),
        ('log-level = {a = "b"}', "log-level must be a string, not {'a': 'b'}"),
    ],
)
def test_every_config_file_key_has_its_type(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        read_file(str(path))
    assert str(raised.value) == f"bad config file {path}: {message}"


def test_real_booleans_and_numbers_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("syslog = false\nmax-stale = 60\nrefresh = 0.25\n", encoding="utf-8")
    config = RunConfig.resolve("sqlite:///x", {}, read_file(str(path)))
    assert (config.syslog, config.max_stale, config.refresh) == (False, 60.0, 0.25)


def test_tests_never_read_the_real_default_config_file() -> None:
    assert DEFAULT_CONFIG_FILE == "/etc/smtpauth-milter/smtpauth-milter.toml"
    assert os.environ[CONFIG_DEFAULT_ENV].startswith("/nonexistent/"), "set by tests/conftest.py"


def test_the_default_config_file_is_read_by_every_command_when_it_exists(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    urls = {name: f"sqlite:///{tmp_path / name}.sqlite" for name in ("default", "other", "env")}
    for name, url in urls.items():
        _store_with_domain(cli, url, f"{name}.test")
    default = tmp_path / "etc" / "smtpauth-milter.toml"
    monkeypatch.setenv(CONFIG_DEFAULT_ENV, str(default))
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))

    def domains(*args: str) -> list[str]:
        result = cli(*args, "domain", "list", db=None)
        assert result.code == 0, result.err
        return result.out.split()

    assert cli("domain", "list", db=None).code == 2, "no default file: the default store"
    default.parent.mkdir()
    default.write_text(f'db = "{urls["default"]}"\nmax-stale = 0\n', encoding="utf-8")
    assert domains() == ["default.test"]
    other = tmp_path / "other.toml"
    other.write_text(f'db = "{urls["other"]}"\n', encoding="utf-8")
    assert domains("--config", str(other)) == ["other.test"], "--config replaces the default"
    monkeypatch.setenv("SMTPAUTH_MILTER_CONFIG", str(other))
    assert domains() == ["other.test"], "so does SMTPAUTH_MILTER_CONFIG"
    monkeypatch.delenv("SMTPAUTH_MILTER_CONFIG")
    monkeypatch.setenv("SMTPAUTH_MILTER_DB", urls["env"])
    assert domains() == ["env.test"], "the environment beats the file"
    monkeypatch.delenv("SMTPAUTH_MILTER_DB")
    assert domains("--db", urls["other"]) == ["other.test"], "a flag beats the file"
    refused = cli("run", db=None)  # and run reads the same file: its max-stale too
    assert refused.code == 2
    assert refused.err == (
        "smtpauth-milter: error: max-stale must be a finite, positive number of seconds, "
        f"not 0 (from config file {default})\n"
    )
