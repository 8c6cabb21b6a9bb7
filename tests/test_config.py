"""TOML config: embedded defaults, the example file, and errors naming the key."""

from __future__ import annotations

import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest

from sipgate.config import (
    RESTART_KEYS,
    RUNTIME_KEYS,
    Config,
    ConfigError,
    ConfigErrors,
    FloodConfig,
    LifecycleConfig,
    LogConfig,
    config_from_dict,
    load_config,
    parse_hostport,
    restart_required,
)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "config" / "sipgate.toml"


def toml_keys() -> set[str]:
    """Every key a config file can set, as a TOML path, from the dataclasses
    (host and port of [api] / [metrics] are one key, ``listen``)."""
    keys = set()
    defaults = Config()
    for f in fields(Config):
        section = getattr(defaults, f.name)
        if not is_dataclass(section):
            keys.add(f.name)
            continue
        for sub in fields(section):
            keys.add(f"{f.name}.{'listen' if sub.name in ('host', 'port') else sub.name}")
    return keys


def test_embedded_defaults():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.sip.listen[0].host == "127.0.0.1" and cfg.sip.listen[0].port == 5060
    assert cfg.sip.pbx == ("127.0.0.1", 5070)
    assert cfg.store.url.startswith("sqlite:")


def test_example_config_loads():
    cfg = load_config(ROOT / "config" / "sipgate.toml")
    assert cfg.sip.listen[0].default_trunk == "demo.sipgate.test"
    assert cfg.metrics.port == 9160


@pytest.mark.parametrize("text, key", [
    ("[sip]\nlisten = []\n", "sip.listen"),
    ("[sip]\npbx = \"127.0.0.1:99999\"\n", "sip.pbx"),
    ("[sip]\nunknown_host = \"ignore\"\n", "sip.unknown_host"),
    ("[sip]\nlisten = [{ address = \"0.0.0.0:5060\" }]\n", "sip.listen[0].advertise"),
    ("[sip]\nsocket_buffer = true\n", "sip.socket_buffer"),
    ("[sip]\nbogus = 1\n", "sip.bogus"),
    ("[store]\npoll_interval = 0\n", "store.poll_interval"),
    ("[metrics]\nlisten = \"nohost\"\n", "metrics.listen"),
    ("[[accounts]]\nsid = \"AC1\"\nauth_token = \"x\"\n", "accounts[0].sid"),
    ("[[accounts]]\nsid = \"AC00000000000000000000000000000001\"\n", "accounts[0].auth_token"),
    ("nonsense = [\n", "(syntax)"),
    ("log = 1\n", "log"),
    ("[log]\nlevel = \"verbose\"\n", "log.level"),
    ("[log]\nlevel = 10\n", "log.level"),
    ("[log]\ndeny_log = 5\n", "log.deny_log"),
    ("[log]\ndeny_log_burst = 0\n", "log.deny_log_burst"),
    ("[log]\ndeny_log_burst = 2.5\n", "log.deny_log_burst"),
    ("[log]\ndeny_log_interval = 0\n", "log.deny_log_interval"),
    ("[log]\ndeny_log_interval = nan\n", "log.deny_log_interval"),
    ("[log]\nfile = \"x\"\n", "log.file"),
    ("[flood]\nenabled = \"yes\"\n", "flood.enabled"),
    ("[flood]\ndensity = 0\n", "flood.density"),
    ("[flood]\ndensity = true\n", "flood.density"),
    ("[flood]\nwindow = -1\n", "flood.window"),
    ("[flood]\nwindow = \"2s\"\n", "flood.window"),
    ("[flood]\nban_seconds = inf\n", "flood.ban_seconds"),
    ("[flood]\nmax_sources = 15\n", "flood.max_sources"),
    ("[lifecycle]\nshutdown_timeout = 0\n", "lifecycle.shutdown_timeout"),
    ("[lifecycle]\nshutdown_timeout = false\n", "lifecycle.shutdown_timeout"),
    ("[lifecycle]\ngrace = 1\n", "lifecycle.grace"),
])
def test_errors_name_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key
    assert str(path) in str(err.value)
    assert isinstance(err.value, ConfigErrors) and [e.key for e in err.value.errors] == [key]
    assert str(err.value) == str(err.value.errors[0]) == f"{path}: {key}: {err.value.problem}"


def test_new_sections_defaults():
    cfg = Config()
    assert cfg.log == LogConfig(level="INFO", deny_log="", deny_log_burst=5, deny_log_interval=60.0)
    assert cfg.flood == FloodConfig(enabled=True, density=30, window=2.0, ban_seconds=60.0, max_sources=65536)
    assert cfg.lifecycle == LifecycleConfig(shutdown_timeout=5.0)


def test_new_sections_parse(tmp_path):
    path = tmp_path / "conf" / "sipgate.toml"
    path.parent.mkdir()
    path.write_text('[log]\nlevel = "warning"\ndeny_log = "logs/deny.log"\ndeny_log_burst = 1\n'
                    "deny_log_interval = 5\n"
                    "[flood]\nenabled = false\ndensity = 1\nwindow = 0.25\nban_seconds = 600\nmax_sources = 16\n"
                    "[lifecycle]\nshutdown_timeout = 0.5\n")
    cfg = load_config(path)
    # The level is stored upper case; a relative deny log is relative to the file.
    assert cfg.log == LogConfig(level="WARNING", deny_log=str(path.parent / "logs" / "deny.log"),
                                deny_log_burst=1, deny_log_interval=5.0)
    assert isinstance(cfg.log.deny_log_interval, float)
    assert cfg.flood == FloodConfig(enabled=False, density=1, window=0.25, ban_seconds=600.0, max_sources=16)
    assert isinstance(cfg.flood.ban_seconds, float)
    assert cfg.lifecycle.shutdown_timeout == 0.5
    # "-" (stderr), "" (off) and absolute paths are kept as written.
    for value in ("-", "", "/var/log/sipgate/deny.log"):
        assert config_from_dict({"log": {"deny_log": value}}, "x", tmp_path).log.deny_log == value
    for level in ("debug", "Info", "ERROR"):
        assert config_from_dict({"log": {"level": level}}).log.level == level.upper()


def test_example_config_is_the_embedded_defaults():
    """config/sipgate.toml sets every key (none only commented out, except
    seed and accounts) and each to its embedded default."""
    assert load_config(EXAMPLE) == Config()
    raw = tomllib.loads(EXAMPLE.read_text())
    written = {f"{section}.{key}" for section, table in raw.items() if isinstance(table, dict) for key in table}
    assert written == toml_keys() - {"seed", "accounts"}
    text = EXAMPLE.read_text()
    assert "# seed = " in text and "# [[accounts]]" in text


MANY_PROBLEMS = """\
bogus_top = 1
[sip]
listen = ["127.0.0.1:5060", { address = "127.0.0.1:99999" }, { address = "0.0.0.0:5060", colour = "red" }]
socket_buffer = "big"
unknown_host = "maybe"
pbx = "127.0.0.1:5070"
[store]
poll_interval = true
extra = 1
[metrics]
listen = "nohost"
[api]
listen = "127.0.0.1:8088"
[log]
level = "loud"
deny_log_burst = 3
[flood]
density = 0
window = "2s"
[lifecycle]
shutdown_timeout = -1
[[accounts]]
sid = "AC1"
[[accounts]]
sid = "AC00000000000000000000000000000001"
auth_token = ""
nickname = "x"
[[accounts]]
sid = "AC00000000000000000000000000000002"
auth_token = "fine"
"""
MANY_KEYS = [
    "bogus_top", "sip.listen[1].address", "sip.listen[2].colour", "sip.listen[2].advertise",
    "sip.socket_buffer", "sip.unknown_host", "store.poll_interval", "store.extra", "metrics.listen",
    "log.level", "flood.density", "flood.window", "lifecycle.shutdown_timeout", "accounts[0].sid",
    "accounts[0].auth_token", "accounts[1].nickname", "accounts[1].auth_token",
]


def test_every_problem_is_reported(tmp_path):
    """A wrong value in one key hides neither an unknown key nor a wrong
    value anywhere else: one ConfigErrors lists them all."""
    path = tmp_path / "many.toml"
    path.write_text(MANY_PROBLEMS)
    with pytest.raises(ConfigErrors) as err:
        load_config(path)
    exc = err.value
    assert sorted(e.key for e in exc.errors) == sorted(MANY_KEYS)
    assert all(type(e) is ConfigError and e.source == str(path) for e in exc.errors)
    assert str(exc).splitlines() == [f"{path}: {e.key}: {e.problem}" for e in exc.errors]
    # Still a ConfigError, whose attributes are the first problem's.
    assert isinstance(exc, ConfigError) and isinstance(exc, ValueError)
    assert (exc.key, exc.problem, exc.source) == (exc.errors[0].key, exc.errors[0].problem, str(path))
    problems = {e.key: e.problem for e in exc.errors}
    assert problems["sip.listen[2].colour"].startswith("unknown key")
    assert problems["sip.socket_buffer"] == "expected an integer, got 'big'"
    assert problems["accounts[0].auth_token"] == "required"
    assert problems["accounts[1].auth_token"] == "must not be empty"
    assert "DEBUG, INFO, WARNING, ERROR" in problems["log.level"]


def test_errors_without_a_source_name_only_the_key():
    with pytest.raises(ConfigErrors) as err:
        config_from_dict({"flood": {"density": 0}, "log": {"what": 1}})
    assert str(err.value).splitlines() == [
        "log.what: unknown key (expected one of: deny_log, deny_log_burst, deny_log_interval, level)",
        "flood.density: must be 1 or more, got 0",
    ]
    assert all(e.source is None for e in err.value.errors)


def test_unreadable_file_is_one_problem(tmp_path):
    with pytest.raises(ConfigErrors) as err:
        load_config(tmp_path / "absent.toml")
    assert [e.key for e in err.value.errors] == ["(file)"]
    assert str(tmp_path / "absent.toml") in str(err.value)


# One change to the embedded defaults per key: restart_required must name
# exactly the key when it needs a restart, and nothing otherwise.
CHANGES: dict[str, dict[str, Any]] = {
    "sip.listen": {"sip": {"listen": [{"address": "127.0.0.1:5061", "default_trunk": "demo.sipgate.test"}]}},
    "sip.socket_buffer": {"sip": {"socket_buffer": 65536}},
    "store.url": {"store": {"url": "sqlite:other.db"}},
    "api.enabled": {"api": {"enabled": False}},
    "api.listen": {"api": {"listen": "127.0.0.1:8089"}},
    "metrics.enabled": {"metrics": {"enabled": False}},
    "metrics.listen": {"metrics": {"listen": "127.0.0.2:9160"}},
    "lifecycle.shutdown_timeout": {"lifecycle": {"shutdown_timeout": 9}},
    "sip.pbx": {"sip": {"pbx": "127.0.0.1:5080"}},
    "sip.trusted": {"sip": {"trusted": ["127.0.0.9"]}},
    "sip.unknown_host": {"sip": {"unknown_host": "drop"}},
    "sip.aliases": {"sip": {"aliases": ["edge.example"]}},
    "sip.secret": {"sip": {"secret": "another"}},
    "sip.max_datagram": {"sip": {"max_datagram": 1500}},
    "sip.server_header": {"sip": {"server_header": ""}},
    "store.poll_interval": {"store": {"poll_interval": 2}},
    "store.max_ips_per_list": {"store": {"max_ips_per_list": 100}},
    "store.max_lists_per_account": {"store": {"max_lists_per_account": 1000}},
    "log.level": {"log": {"level": "debug"}},
    "log.deny_log": {"log": {"deny_log": "-"}},
    "log.deny_log_burst": {"log": {"deny_log_burst": 50}},
    "log.deny_log_interval": {"log": {"deny_log_interval": 10}},
    "flood.enabled": {"flood": {"enabled": False}},
    "flood.density": {"flood": {"density": 100}},
    "flood.window": {"flood": {"window": 10}},
    "flood.ban_seconds": {"flood": {"ban_seconds": 3600}},
    "flood.max_sources": {"flood": {"max_sources": 1024}},
    "accounts": {"accounts": [{"sid": "AC" + "1" * 32, "auth_token": "t"}]},
    "seed": {"seed": "/etc/sipgate/seed.toml"},
}


def test_every_key_is_either_reloadable_or_needs_a_restart():
    assert set(RESTART_KEYS).isdisjoint(RUNTIME_KEYS)
    assert set(RESTART_KEYS) | set(RUNTIME_KEYS) == toml_keys() == set(CHANGES)


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_restart_required_names_exactly_the_key(key):
    new = config_from_dict(CHANGES[key])
    assert new != Config()  # the change is real
    expected = [key] if key in RESTART_KEYS else []
    assert restart_required(Config(), new) == expected
    assert restart_required(new, Config()) == expected
    assert restart_required(new, new) == []


def test_restart_required_lists_every_change_in_a_fixed_order():
    change: dict[str, Any] = {}
    for key in reversed(RESTART_KEYS):
        for section, table in CHANGES[key].items():
            change.setdefault(section, {}).update(table)
    assert restart_required(Config(), config_from_dict(change)) == list(RESTART_KEYS)


def test_hostport_forms():
    assert parse_hostport("[::1]:5070", "k") == ("::1", 5070)
    assert parse_hostport("::1", "k", 5060) == ("::1", 5060)
    assert parse_hostport("example.net", "k", 5060) == ("example.net", 5060)
    with pytest.raises(ConfigError):
        parse_hostport("[::1", "k")
