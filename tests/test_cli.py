"""The `sipgate` command as a user runs it: serve, seed, check, check-config."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ALLOWED, DEMO_DOMAIN, DENIED, SIPGATE, Process, Serving, UdpPeer, request, write_config
from sipgate.sip import parse

ROOT = Path(__file__).resolve().parent.parent
DEMO_SEED = ROOT / "config" / "demo-seed.toml"


def run(*args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SIPGATE, *args], capture_output=True, text=True, timeout=60, check=check)


@pytest.fixture
def pbx_peer() -> Iterator[UdpPeer]:
    with UdpPeer("127.0.0.1") as peer:
        yield peer


def test_serve_with_demo_seed_admits_and_denies(tmp_path, pbx_peer):
    config = write_config(tmp_path, pbx_peer.address[1])
    server = Serving(["serve", "--config", str(config), "--seed", str(DEMO_SEED)])
    try:
        edge = ("127.0.0.1", server.sip_port)
        with UdpPeer(DENIED) as denied, UdpPeer(ALLOWED) as allowed:
            denied.send(request(via_host=f"{DENIED}:{denied.address[1]}"), edge)
            assert parse(denied.recv()[0]).status == 403
            allowed.send(request(via_host=f"{ALLOWED}:{allowed.address[1]}"), edge)
            assert parse(pbx_peer.recv()[0]).method == "INVITE"

            # A seed applied by another process is enforced without restart.
            extra = tmp_path / "more.toml"
            extra.write_text(DEMO_SEED.read_text().replace(
                'ip_addresses = [\n',
                f'ip_addresses = [\n  {{ friendly_name = "second", ip_address = "{DENIED}" }},\n'))
            assert run("seed", str(extra), "--config", str(config)).returncode == 0
            deadline = time.monotonic() + 5
            while True:
                denied.send(request(via_host=f"{DENIED}:{denied.address[1]}", call_id="again"), edge)
                if pbx_peer.nothing(0.2) is False:
                    break
                denied.recv()
                assert time.monotonic() < deadline, "seeded change never enforced"

        import urllib.request
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
        assert 'sipgate_decisions_total{reason="forbidden",result="reject"}' in text
        assert "sipgate_decision_duration_seconds_bucket" in text
        assert re.search(r"^sipgate_table_entries 2\.0$", text, re.M)
    finally:
        assert server.stop() == 0


def test_seed_is_idempotent_and_check_explains(tmp_path):
    config = write_config(tmp_path, 5070)
    first = run("seed", str(DEMO_SEED), "--config", str(config), check=True)
    second = run("seed", str(DEMO_SEED), "--config", str(config), check=True)
    assert first.stdout != second.stdout  # the report says what was created, then nothing
    ok = run("check", "--trunk", DEMO_DOMAIN, ALLOWED, "--config", str(config))
    assert ok.returncode == 0
    assert ok.stdout.startswith("admit") and "127.0.0.2/32" in ok.stdout and "AL" in ok.stdout
    no = run("check", "--trunk", DEMO_DOMAIN, DENIED, "--config", str(config))
    assert no.returncode == 1 and no.stdout.startswith("deny")
    unknown = run("check", "--trunk", "nobody.example", ALLOWED, "--config", str(config))
    assert unknown.returncode == 1 and "no trunk" in unknown.stdout


def test_check_config_reports_key(tmp_path):
    assert run("check-config", str(ROOT / "config" / "sipgate.toml")).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('[sip]\nunknown_host = "maybe"\n')
    out = run("check-config", str(bad))
    assert out.returncode == 2 and "sip.unknown_host" in out.stderr


def test_check_config_lists_every_problem_one_per_line(tmp_path):
    from test_config import MANY_KEYS, MANY_PROBLEMS

    bad = tmp_path / "many.toml"
    bad.write_text(MANY_PROBLEMS)
    out = run("check-config", str(bad))
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.splitlines()
    # Each line "FILE: key: problem", one per problem, nothing else.
    keys = []
    for line in lines:
        assert line.startswith(f"{bad}: "), line
        key, sep, problem = line[len(f"{bad}: "):].partition(": ")
        assert sep and problem, line
        keys.append(key)
    assert sorted(keys) == sorted(MANY_KEYS)


def test_check_config_ok_summary(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[sip]\nlisten = ["127.0.0.1:5062", "127.0.0.1:5064"]\npbx = "127.0.0.1:5099"\n'
                    '[log]\nlevel = "debug"\n[flood]\nenabled = false\n[lifecycle]\nshutdown_timeout = 1\n')
    out = run("check-config", str(good))
    assert out.returncode == 0 and out.stderr == ""
    assert out.stdout == f"{good}: OK (2 listener(s), PBX 127.0.0.1:5099, store sqlite:sipgate.db)\n"


def test_serve_with_a_broken_config_names_every_problem(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[flood]\ndensity = 0\n[log]\nlevel = "loud"\n')
    out = run("serve", "--config", str(bad))
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f"sipgate: config error: {bad}: log.level: expected one of DEBUG, INFO, WARNING, ERROR, got 'loud'",
        f"sipgate: config error: {bad}: flood.density: must be 1 or more, got 0",
    ]


def test_log_level_from_config_unless_given_on_the_command_line(tmp_path):
    """[log] level = "WARNING" keeps the INFO lines out; --log-level wins."""
    config = write_config(tmp_path, 5070, extra='[log]\nlevel = "warning"\n')
    # The store's directory does not exist: sipgate logs an ERROR and waits.
    config.write_text(config.read_text().replace(str(tmp_path / "edge.db"), str(tmp_path / "none" / "edge.db")))
    for argv, info_shown in (([], False), (["--log-level", "info"], True)):
        proc = Process([*argv, "serve", "--config", str(config)])
        try:
            proc.wait_for(r"ERROR .*not ready, retrying")
        finally:
            assert proc.stop() == 0
        lines = proc.log
        assert any(" INFO " in line for line in lines) is info_shown, lines
        if info_shown:
            assert any("metrics on http://127.0.0.1:" in line for line in lines)
