"""TOML config: embedded defaults, the example file, and errors naming the key."""

from __future__ import annotations

import atexit
import shutil
import tempfile
import tomllib
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import pytest
import trustme

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
            value = getattr(section, sub.name)
            if is_dataclass(value):  # sip.limits: its fields are [sip] keys
                keys.update(f"{f.name}.{inner.name}" for inner in fields(value))
                continue
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


def _throwaway_tls_pair() -> tuple[str, str]:
    """A certificate and key (trustme) in a temporary directory removed at exit."""
    directory = tempfile.mkdtemp(prefix="sipgate-test-tls-")
    atexit.register(shutil.rmtree, directory, True)
    cert = trustme.CA().issue_cert("127.0.0.1", "localhost")
    cert_path, key_path = Path(directory) / "api.crt", Path(directory) / "api.key"
    cert.cert_chain_pems[0].write_to_path(str(cert_path))
    cert.private_key_pem.write_to_path(str(key_path))
    return str(cert_path), str(key_path)


_TLS_CERT, _TLS_KEY = _throwaway_tls_pair()


# One change to the embedded defaults per key: restart_required must name
# exactly the key when it needs a restart, and nothing otherwise.
CHANGES: dict[str, dict[str, Any]] = {
    "sip.listen": {"sip": {"listen": [{"address": "127.0.0.1:5061", "default_trunk": "demo.sipgate.test"}]}},
    "sip.socket_buffer": {"sip": {"socket_buffer": 65536}},
    "sip.pbx_probe_interval": {"sip": {"pbx_probe_interval": 5}},
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
    "sip.max_headers": {"sip": {"max_headers": 64}},
    "sip.max_vias": {"sip": {"max_vias": 16}},
    "sip.max_header_line": {"sip": {"max_header_line": 2048}},
    "sip.max_uri": {"sip": {"max_uri": 512}},
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
    "api.tls_cert": {"api": {"tls_cert": _TLS_CERT, "tls_key": _TLS_KEY}},
    "api.tls_key": {"api": {"tls_cert": _TLS_CERT, "tls_key": _TLS_KEY}},
    "api.allow_insecure": {"api": {"allow_insecure": True}},
}
# Keys only ever changed together (a certificate needs its key).
TOGETHER = {"api.tls_cert": ["api.tls_cert", "api.tls_key"], "api.tls_key": ["api.tls_cert", "api.tls_key"]}


def test_every_key_is_either_reloadable_or_needs_a_restart():
    assert set(RESTART_KEYS).isdisjoint(RUNTIME_KEYS)
    assert set(RESTART_KEYS) | set(RUNTIME_KEYS) == toml_keys() == set(CHANGES)


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_restart_required_names_exactly_the_key(key):
    new = config_from_dict(CHANGES[key])
    assert new != Config()  # the change is real
    expected = TOGETHER.get(key, [key]) if key in RESTART_KEYS else []
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


# -- [api] TLS and the loopback rule ---------------------------------------------


def _api_problems(tmp_path: Path, api: str) -> dict[str, str]:
    path = tmp_path / "sipgate.toml"
    path.write_text("[api]\n" + api)
    with pytest.raises(ConfigErrors) as err:
        load_config(path)
    assert all(e.source == str(path) for e in err.value.errors)
    return {e.key: e.problem for e in err.value.errors}


@pytest.fixture
def tls_files(tmp_path) -> tuple[Path, Path]:
    """A throwaway certificate and key next to the config file, in certs/."""
    (tmp_path / "certs").mkdir()
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "certs" / "api.crt"))
    cert.private_key_pem.write_to_path(str(tmp_path / "certs" / "api.key"))
    return tmp_path / "certs" / "api.crt", tmp_path / "certs" / "api.key"


@pytest.mark.parametrize("listen", ["0.0.0.0:8088", "[::]:8088", "192.0.2.10:8088", "api.example.com:8088",
                                    "[::ffff:192.0.2.1]:8088"])
def test_api_off_loopback_without_tls_is_an_error_naming_listen(tmp_path, listen):
    problems = _api_problems(tmp_path, f'listen = "{listen}"\n')
    assert list(problems) == ["api.listen"]
    assert "not a loopback address" in problems["api.listen"]
    assert "tls_cert" in problems["api.listen"] and "allow_insecure" in problems["api.listen"]


@pytest.mark.parametrize("listen", ["127.0.0.1:8088", "127.9.8.7:0", "[::1]:8088", "localhost:8088"])
def test_api_on_loopback_needs_no_tls(listen):
    cfg = config_from_dict({"api": {"listen": listen}})
    assert not cfg.api.tls and not cfg.api.allow_insecure


def test_api_off_loopback_with_allow_insecure_or_disabled_is_accepted():
    cfg = config_from_dict({"api": {"listen": "0.0.0.0:8088", "allow_insecure": True}})
    assert (cfg.api.host, cfg.api.port, cfg.api.allow_insecure, cfg.api.tls) == ("0.0.0.0", 8088, True, False)
    assert config_from_dict({"api": {"listen": "0.0.0.0:8088", "enabled": False}}).api.enabled is False


def test_api_tls_paths_are_relative_to_the_config_file(tmp_path, tls_files):
    path = tmp_path / "sipgate.toml"
    path.write_text('[api]\nlisten = "0.0.0.0:8443"\ntls_cert = "certs/api.crt"\ntls_key = "certs/api.key"\n')
    cfg = load_config(path)
    assert cfg.api.tls_cert == str(tls_files[0]) and cfg.api.tls_key == str(tls_files[1])
    assert cfg.api.tls and not cfg.api.allow_insecure


def test_api_cert_without_key_and_key_without_cert(tmp_path, tls_files):
    problems = _api_problems(tmp_path, 'tls_cert = "certs/api.crt"\n')
    assert list(problems) == ["api.tls_key"]
    assert "required with api.tls_cert" in problems["api.tls_key"]
    problems = _api_problems(tmp_path, 'tls_cert = ""\ntls_key = "certs/api.key"\n')
    assert list(problems) == ["api.tls_cert"]
    assert "required with api.tls_key" in problems["api.tls_cert"]


def test_api_missing_tls_file_names_its_key(tmp_path, tls_files):
    problems = _api_problems(tmp_path, 'tls_cert = "certs/api.crt"\ntls_key = "certs/absent.key"\n')
    assert problems == {"api.tls_key": f"no such file: {tmp_path / 'certs' / 'absent.key'}"}
    problems = _api_problems(tmp_path, 'tls_cert = "nope.crt"\ntls_key = "certs/api.key"\n')
    assert problems == {"api.tls_cert": f"no such file: {tmp_path / 'nope.crt'}"}


def test_api_key_that_does_not_match_the_cert_is_an_error(tmp_path, tls_files):
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(tmp_path / "certs" / "other.key"))
    problems = _api_problems(tmp_path, 'tls_cert = "certs/api.crt"\ntls_key = "certs/other.key"\n')
    assert list(problems) == ["api.tls_cert"]
    assert "cannot load certificate" in problems["api.tls_cert"]
    # Not PEM at all.
    (tmp_path / "certs" / "junk.crt").write_text("not a certificate\n")
    problems = _api_problems(tmp_path, 'tls_cert = "certs/junk.crt"\ntls_key = "certs/api.key"\n')
    assert list(problems) == ["api.tls_cert"]


def test_api_new_keys_have_types_checked():
    with pytest.raises(ConfigErrors) as err:
        config_from_dict({"api": {"allow_insecure": "yes", "tls_cert": 1, "tls_key": True, "what": 1}})
    problems = {e.key: e.problem for e in err.value.errors}
    assert problems["api.allow_insecure"] == "expected true or false, got 'yes'"
    assert problems["api.tls_cert"] == "expected a string, got 1"
    assert problems["api.tls_key"] == "expected a string, got True"
    assert "allow_insecure, enabled, listen, tls_cert, tls_key" in problems["api.what"]


def test_check_config_reports_the_api_listen_problem_with_the_others(tmp_path):
    import subprocess
    import sys

    path = tmp_path / "sipgate.toml"
    path.write_text('[log]\nlevel = "loud"\n[api]\nlisten = "0.0.0.0:8088"\n[flood]\ndensity = 0\n')
    done = subprocess.run([sys.executable, "-m", "sipgate.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    keys = [line.split(": ")[1] for line in done.stderr.splitlines()]
    assert sorted(keys) == ["api.listen", "flood.density", "log.level"]
    path.write_text('[api]\nlisten = "0.0.0.0:8088"\nallow_insecure = true\n')
    done = subprocess.run([sys.executable, "-m", "sipgate.cli", "check-config", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_sip_limits_reach_the_edge(tmp_path):
    from sipgate.transport import Edge

    path = tmp_path / "limits.toml"
    path.write_text("[sip]\nmax_headers = 64\nmax_vias = 16\nmax_header_line = 2048\nmax_uri = 512\n")
    config = load_config(path)
    edge = Edge(config.sip)
    assert (edge.limits.max_headers, edge.limits.max_vias, edge.limits.max_header_line,
            edge.limits.max_uri) == (64, 16, 2048, 512)
    path.write_text("[sip]\nmax_uri = 100\nmax_vias = true\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert {e.key for e in info.value.errors} == {"sip.max_uri", "sip.max_vias"}
