"""TOML config: embedded defaults, the example file, and errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipgate.config import Config, ConfigError, load_config, parse_hostport

ROOT = Path(__file__).resolve().parent.parent


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
])
def test_errors_name_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.key == key
    assert str(path) in str(err.value)


def test_hostport_forms():
    assert parse_hostport("[::1]:5070", "k") == ("::1", 5070)
    assert parse_hostport("::1", "k", 5060) == ("::1", 5060)
    assert parse_hostport("example.net", "k", 5060) == ("example.net", 5060)
    with pytest.raises(ConfigError):
        parse_hostport("[::1", "k")
