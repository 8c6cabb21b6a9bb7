"""The systemd notify protocol, against a real AF_UNIX datagram socket
standing in for systemd's $NOTIFY_SOCKET; and a real `sipgate serve` (and
`--workers 2`) reporting READY=1, RELOADING=1 / READY=1, STOPPING=1; and
the unit file, checked by `systemd-analyze` and by reading it."""

from __future__ import annotations

import configparser
import logging
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import DEMO_SEED, DENIED, SIPGATE, Process, UdpPeer, request, write_config
from sipgate import sdnotify
from sipgate.sip import parse

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "config" / "systemd" / "sipgate.service"
_UCRED = struct.Struct("3i")  # pid, uid, gid


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket that learns each
    sender's PID (SO_PASSCRED), at a path or an abstract "@name"."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind("\0" + name[1:] if name.startswith("@") else name)

    def recv(self, timeout: float = 10.0) -> tuple[str, int | None]:
        """One datagram's text and its sender's PID."""
        self.sock.settimeout(timeout)
        data, ancillary, _flags, _addr = self.sock.recvmsg(65536, socket.CMSG_SPACE(_UCRED.size))
        pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = _UCRED.unpack(payload[:_UCRED.size])[0]
        return data.decode(), pid

    def nothing(self, timeout: float) -> bool:
        try:
            self.recv(timeout)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.sock.close()


def fields(message: str) -> dict[str, str]:
    lines = message.split("\n")
    assert all("=" in line for line in lines), message
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture
def path_socket(tmp_path, monkeypatch) -> Iterator[NotifySocket]:
    sock = NotifySocket(str(tmp_path / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", sock.name)
    yield sock
    sock.close()


@pytest.fixture
def abstract_socket(monkeypatch) -> Iterator[NotifySocket]:
    sock = NotifySocket(f"@sipgate-test-{os.getpid()}-{uuid.uuid4().hex}")
    monkeypatch.setenv("NOTIFY_SOCKET", sock.name)
    yield sock
    sock.close()


# -- the protocol ----------------------------------------------------------------


def test_messages_arrive_intact_on_a_path_socket(path_socket):
    assert sdnotify.notify("READY=1\nSTATUS=serving 2 listeners") is True
    assert path_socket.recv() == ("READY=1\nSTATUS=serving 2 listeners", os.getpid())
    assert sdnotify.status("table générée ✓") is True
    assert path_socket.recv()[0] == "STATUS=table générée ✓"


def test_messages_arrive_intact_on_an_abstract_socket(abstract_socket):
    assert sdnotify.ready() is True
    assert abstract_socket.recv() == ("READY=1", os.getpid())
    assert sdnotify.ready("serving") is True
    assert abstract_socket.recv()[0] == "READY=1\nSTATUS=serving"
    assert sdnotify.stopping() is True
    assert abstract_socket.recv()[0] == "STOPPING=1"


def test_reloading_carries_the_monotonic_clock(path_socket):
    before = monotonic_usec()
    assert sdnotify.reloading() is True
    after = monotonic_usec()
    message, _pid = path_socket.recv()
    got = fields(message)
    assert list(got) == ["RELOADING", "MONOTONIC_USEC"] and got["RELOADING"] == "1"
    assert got["MONOTONIC_USEC"].isdigit() and before <= int(got["MONOTONIC_USEC"]) <= after


def test_a_status_cannot_add_an_assignment(path_socket):
    sdnotify.status("one\nREADY=1")
    sdnotify.ready("two\r\nSTOPPING=1")
    assert path_socket.recv()[0] == "STATUS=one READY=1"
    assert path_socket.recv()[0] == "READY=1\nSTATUS=two STOPPING=1"


def test_unset_or_empty_variable_does_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert (sdnotify.ready(), sdnotify.reloading(), sdnotify.stopping(), sdnotify.status("x")) == (False,) * 4
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert sdnotify.ready() is False


def test_socket_gone_is_false_without_an_exception(monkeypatch, tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="sipgate.sdnotify")
    gone = NotifySocket(str(tmp_path / "gone"))
    gone.close()  # the file stays, nobody listens: ECONNREFUSED
    monkeypatch.setenv("NOTIFY_SOCKET", gone.name)
    assert sdnotify.ready() is False
    os.unlink(gone.name)  # no file at all: ENOENT
    assert sdnotify.stopping() is False
    monkeypatch.setenv("NOTIFY_SOCKET", f"@sipgate-test-nobody-{uuid.uuid4().hex}")
    assert sdnotify.reloading() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")  # not supported: nothing sent
    assert sdnotify.status("x") is False
    failures = [r for r in caplog.records if r.name == "sipgate.sdnotify"]
    assert len(failures) == 4 and all(r.levelno == logging.DEBUG for r in failures)


def test_a_full_receiver_never_blocks_the_sender(path_socket):
    """Nobody reads: the queue fills, and notify() says False at once."""
    started = time.monotonic()
    sent = 0
    while sdnotify.status(f"n={sent}"):
        sent += 1
        assert sent < 100_000, "the receiver's queue never filled"
    assert time.monotonic() - started < 5
    assert sent >= 1 and path_socket.recv()[0] == "STATUS=n=0"


# -- a real `sipgate serve` --------------------------------------------------------


def http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_serve_reports_ready_reloading_and_stopping(tmp_path):
    """READY=1 only once the SIP listener answers (not while the store is
    unreachable at start); SIGHUP: RELOADING=1 (with MONOTONIC_USEC), then
    READY=1 once the new config is in force; SIGTERM: STOPPING=1, exit 0.
    Every message comes from the main PID (NotifyAccess=main)."""
    notify = NotifySocket(str(tmp_path / "notify"))
    with UdpPeer("127.0.0.1") as pbx, UdpPeer(DENIED) as denied:
        config = write_config(tmp_path, pbx.address[1])
        good = config.read_text()
        later = tmp_path / "later"  # the store's directory, created once sipgate waits for it
        config.write_text(good.replace(str(tmp_path / "edge.db"), str(later / "edge.db")))
        server = Process(["serve", "--config", str(config), "--seed", str(DEMO_SEED)],
                         dict(os.environ, NOTIFY_SOCKET=notify.name))
        try:
            metrics_port = int(server.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)").group(1))
            server.wait_for(r"not ready, retrying")
            assert notify.nothing(1.0), "a notification while no listener is bound"
            assert http_status(metrics_port, "/-/ready") == 503
            later.mkdir()

            message, pid = notify.recv(20)
            assert pid == server.proc.pid
            assert fields(message)["READY"] == "1", message
            # READY=1 means serving: the SIP listener is bound and answers now.
            sip_port = int(server.wait_for(r"SIP/UDP listening on 127\.0\.0\.1:(\d+)", 1).group(1))
            edge = ("127.0.0.1", sip_port)
            denied.send(request(via_host=f"{DENIED}:{denied.address[1]}"), edge)
            assert parse(denied.recv()[0]).status == 403
            assert http_status(metrics_port, "/-/ready") == 200

            def unknown_domain(call_id: str) -> int | None:
                denied.send(request(ruri="sip:+1555@nobody.example", via_host=f"{DENIED}:{denied.address[1]}",
                                    call_id=call_id, branch=f"z9hG4bK-{call_id}"), edge)
                try:
                    return parse(denied.recv(0.5)[0]).status
                except TimeoutError:
                    return None

            assert unknown_domain("before") == 404
            # SIGHUP with a run-time change: in force when READY=1 comes back.
            config.write_text(config.read_text().replace("[sip]\n", '[sip]\nunknown_host = "drop"\n', 1))
            before = monotonic_usec()
            server.signal(signal.SIGHUP)
            message, pid = notify.recv(10)
            after = monotonic_usec()
            got = fields(message)
            assert pid == server.proc.pid and got["RELOADING"] == "1", message
            assert before <= int(got["MONOTONIC_USEC"]) <= after
            message, pid = notify.recv(10)
            assert pid == server.proc.pid and fields(message)["READY"] == "1", message
            assert unknown_domain("after") is None

            server.signal(signal.SIGTERM)
            message, pid = notify.recv(10)
            assert (message, pid) == ("STOPPING=1", server.proc.pid)
            assert server.proc.wait(10) == 0
            assert notify.nothing(0.3), "a notification after STOPPING=1"
        finally:
            assert server.stop() == 0
            notify.close()


def test_only_the_main_process_notifies_with_workers(tmp_path):
    """--workers 2: the forked worker inherits $NOTIFY_SOCKET but stays
    quiet; one READY=1 and one STOPPING=1, both from the main PID."""
    notify = NotifySocket(f"@sipgate-test-{os.getpid()}-{uuid.uuid4().hex}")
    config = write_config(tmp_path, 5070)
    server = Process(["serve", "--config", str(config), "--workers", "2"],
                     dict(os.environ, NOTIFY_SOCKET=notify.name))
    try:
        message, pid = notify.recv(20)
        assert pid == server.proc.pid and fields(message)["READY"] == "1", message
        server.wait_for(r"SIP/UDP listening on .*\(worker 1\)")
        assert notify.nothing(1.0), "more than one READY=1"
        server.signal(signal.SIGTERM)
        assert notify.recv(10) == ("STOPPING=1", server.proc.pid)
        assert server.proc.wait(10) == 0
        assert notify.nothing(0.3)
    finally:
        assert server.stop() == 0
        notify.close()


# -- the unit file -------------------------------------------------------------------


def read_unit(text: str) -> configparser.ConfigParser:
    """systemd's format as configparser reads it: repeated keys allowed
    (the last wins), keys case-sensitive, no interpolation."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",),
                                       comment_prefixes=("#", ";"), empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    return parser


def test_unit_file_says_what_the_service_needs():
    unit = read_unit(UNIT.read_text())
    service = unit["Service"]
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "ExecStart": "/opt/sipgate/.venv/bin/sipgate serve --config /etc/sipgate/sipgate.toml",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
        "DynamicUser": "yes",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "StateDirectory": "sipgate",
        "LogsDirectory": "sipgate",
    }
    assert {key: service.get(key) for key in expected} == expected
    # SIGTERM drains within lifecycle.shutdown_timeout: systemd must wait longer.
    stop = re.fullmatch(r"(\d+)s?", service["TimeoutStopSec"])
    assert stop and int(stop.group(1)) > 5
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    text = UNIT.read_text()
    # The paths the config must use inside the sandbox are spelled out.
    assert 'url = "sqlite:///var/lib/sipgate/sipgate.db"' in text
    assert 'deny_log = "/var/log/sipgate/deny.log"' in text


def _unit_copy(tmp_path: Path, text: str) -> Path:
    """The unit with ExecStart pointing at an existing binary (verify checks it)."""
    sipgate = shutil.which("sipgate", path=str(Path(SIPGATE[0]).parent)) or SIPGATE[0]
    path = tmp_path / "sipgate.service"
    path.write_text(text.replace("/opt/sipgate/.venv/bin/sipgate", sipgate))
    return path


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    path = _unit_copy(tmp_path, UNIT.read_text())
    out = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60)
    # An unknown key or a value systemd cannot parse is only a warning
    # naming the file: none allowed.
    assert out.returncode == 0, out.stderr
    assert [line for line in (out.stdout + out.stderr).splitlines() if "sipgate.service" in line] == []
    # ... and that check does catch one.
    broken = _unit_copy(tmp_path, UNIT.read_text().replace("ProtectSystem=strict", "ProtectSystem=strictly"))
    out = subprocess.run(["systemd-analyze", "verify", str(broken)], capture_output=True, text=True, timeout=60)
    assert "strictly" in out.stderr


def test_systemd_analyze_security_rates_the_unit_ok(tmp_path):
    path = _unit_copy(tmp_path, UNIT.read_text())
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=25", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    level = re.search(r"Overall exposure level for sipgate\.service: (\d+\.\d+)", out.stdout)
    assert level and float(level.group(1)) <= 2.5, out.stdout
    # Without the hardening the same threshold fails: the check can tell.
    bare = "\n".join(line for line in UNIT.read_text().splitlines()
                     if not line.startswith(("Protect", "Private", "Restrict", "SystemCall", "Capability",
                                             "MemoryDeny", "NoNewPrivileges", "LockPersonality", "DynamicUser")))
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--threshold=25",
                          str(_unit_copy(tmp_path, bare))], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
