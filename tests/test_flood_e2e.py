"""The flood defence in a real `sipgate serve`: SIPp floods, raw sockets, the API.

* A SIPp flood of denied calls from 127.0.0.3 is banned after 30 rejections
  in 2 s (its INVITEs stop being answered) while SIPp calls from 127.0.0.2
  keep completing with 0 failures.
* A banned source that a trunk starts to admit (an API write) is heard at
  once; a source a trunk admits is never banned however often it is refused.
* Thousands of spoofed-looking sources (distinct 127.x.y.z sockets) keep the
  tracked set at its bound and the process's memory flat.

Loopback only; every process is stopped by PID (Serving, sippkit).
"""

from __future__ import annotations

import json
import shutil
import socket
import time
import urllib.parse
import urllib.request
from pathlib import Path

from helpers import (
    ACCOUNT_SID,
    ALLOWED,
    DEMO_DOMAIN,
    DEMO_SEED,
    DENIED,
    Serving,
    UdpPeer,
    basic,
    metric,
    request,
    write_config,
)
from sipgate import sippkit
from sipgate.sip import parse

BUFF = ["-buff_size", "4194304"]

if shutil.which("sipp") is None:  # bin/test installs it; never skip silently
    raise RuntimeError("sipp not found: run bin/test (installs Debian's sip-tester)")


def serve(tmp_path: Path, pbx_port: int, flood: str) -> Serving:
    config = write_config(tmp_path, pbx_port, flood=True, extra="[flood]\n" + flood)
    return Serving(["serve", "--config", str(config), "--seed", str(DEMO_SEED)])


def invite(peer: UdpPeer, edge: tuple[str, int], call_id: str, domain: str = DEMO_DOMAIN) -> None:
    peer.send(request(ruri=f"sip:+15551234567@{domain}", via_host=f"{peer.address[0]}:{peer.address[1]}",
                      call_id=call_id, branch=f"z9hG4bK-{call_id}"), edge)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_sipp_flood_is_banned_while_admitted_sipp_calls_complete(tmp_path, pbx_port):
    server = serve(tmp_path, pbx_port, "density = 30\nwindow = 2.0\nban_seconds = 30.0\n")
    edge = ("127.0.0.1", server.sip_port)
    try:
        uas = sippkit.run_uas(("127.0.0.1", pbx_port), "uas_no180", call_count=60, timeout=60,
                              extra_args=BUFF, logdir=tmp_path / "uas")
        try:
            calls = sippkit.start_uac((ALLOWED, sippkit.free_udp_port(ALLOWED)), edge, "uac_trunk",
                                      call_count=60, rate=20, limit=60, timeout=40,
                                      keys={"trunk_domain": DEMO_DOMAIN}, extra_args=BUFF,
                                      logdir=tmp_path / "uac")
            # 200 denied calls at 100/s: after the 31st 403 the rest go
            # unanswered; -recv_timeout ends each of those calls in 1.5 s.
            flood = sippkit.run_uac((DENIED, sippkit.free_udp_port(DENIED)), edge, "uac_403",
                                    call_count=200, rate=100, limit=200, timeout=30,
                                    keys={"trunk_domain": DEMO_DOMAIN},
                                    extra_args=[*BUFF, "-recv_timeout", "1500"], logdir=tmp_path / "flood")
            admitted = calls.wait()
        finally:
            served = uas.wait(timeout=20)
        assert admitted.successful_calls == 60 and admitted.failed_calls == 0, admitted.describe()
        assert served.successful_calls == 60 and served.failed_calls == 0, served.describe()
        # The ban started at the 31st rejection (its 403 had already left).
        assert 25 <= flood.successful_calls <= 31, flood.describe()
        assert flood.failed_calls >= 160, flood.describe()
        assert metric(server, "sipgate_flood_bans_total") == 1
        assert metric(server, "sipgate_flood_bans_active") == 1
        assert metric(server, "sipgate_flood_dropped_datagrams_total") >= 160
        # Still banned: a raw INVITE from 127.0.0.3 gets nothing; another
        # denied source still gets its 403.
        with UdpPeer(DENIED) as banned, UdpPeer("127.0.0.4") as other:
            invite(banned, edge, "after-ban")
            assert banned.nothing(0.5)
            invite(other, edge, "other-source")
            assert parse(other.recv()[0]).status == 403
    finally:
        assert server.stop() == 0
    assert "flood: 127.0.0.3 banned for 30 s after 31 rejected requests" in server.output()


def api_add_address(server: Serving, address: str) -> None:
    base = f"http://127.0.0.1:{server.api_port}/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
    auth = basic()
    with urllib.request.urlopen(urllib.request.Request(f"{base}.json", headers={"Authorization": auth}),
                                timeout=10) as resp:
        acl = json.load(resp)["ip_access_control_lists"][0]["sid"]
    body = urllib.parse.urlencode({"FriendlyName": "unbanned", "IpAddress": address}).encode()
    req = urllib.request.Request(f"{base}/{acl}/IpAddresses.json", data=body, headers={"Authorization": auth})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 201


def test_a_banned_source_a_trunk_starts_to_admit_is_heard_at_once(tmp_path):
    with UdpPeer("127.0.0.1") as pbx, UdpPeer("127.0.0.5") as scanner:
        server = serve(tmp_path, pbx.address[1], "density = 5\nwindow = 10.0\nban_seconds = 300.0\n")
        edge = ("127.0.0.1", server.sip_port)
        try:
            for i in range(6):
                invite(scanner, edge, f"scan-{i}")
                assert parse(scanner.recv()[0]).status == 403
            invite(scanner, edge, "scan-banned")
            assert scanner.nothing(0.5)
            assert metric(server, "sipgate_flood_bans_active") == 1
            api_add_address(server, "127.0.0.5")  # its 2xx: enforced
            invite(scanner, edge, "now-admitted")
            relayed = parse(pbx.recv()[0])
            assert relayed.method == "INVITE" and relayed.first("call-id") == "now-admitted"
            assert metric(server, "sipgate_flood_bans_active") == 0
        finally:
            assert server.stop() == 0


def test_an_admitted_source_is_never_banned(tmp_path):
    with UdpPeer("127.0.0.1") as pbx, UdpPeer(ALLOWED) as carrier:
        server = serve(tmp_path, pbx.address[1], "density = 3\nwindow = 10.0\n")
        edge = ("127.0.0.1", server.sip_port)
        try:
            # 127.0.0.2 is admitted by the demo trunk; calls for a domain no
            # trunk has are refused (404) but must never ban it.
            for i in range(20):
                invite(carrier, edge, f"wrong-{i}", domain="nobody.example")
                assert parse(carrier.recv()[0]).status == 404
            invite(carrier, edge, "right")
            assert parse(pbx.recv()[0]).method == "INVITE"
            assert metric(server, "sipgate_flood_bans_total") == 0
        finally:
            assert server.stop() == 0


def test_thousands_of_sources_keep_memory_flat(tmp_path):
    with UdpPeer("127.0.0.1") as pbx:
        server = serve(tmp_path, pbx.address[1], "density = 30\nmax_sources = 256\n")
        edge = ("127.0.0.1", server.sip_port)
        payload = request(via_host="127.0.0.1:5999", call_id="spoof")

        def from_sources(first: int, count: int) -> None:
            for i in range(first, first + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                try:
                    s.bind((f"127.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", 0))
                    s.sendto(payload, edge)
                finally:
                    s.close()
                if i % 500 == 0:
                    time.sleep(0.02)  # stay inside the socket buffers

        def settled() -> float:
            # Every datagram handled: the received count stops moving.
            last = -1.0
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                now = metric(server, "sipgate_datagrams_received_total")
                if now == last:
                    return now
                last = now
                time.sleep(0.3)
            raise AssertionError("sipgate kept receiving")

        try:
            from_sources(0, 3_000)  # warm up: the bound is reached, allocator warm
            settled()
            before = rss_kib(server.proc.pid)
            from_sources(3_000, 20_000)
            received = settled()
            after = rss_kib(server.proc.pid)
            assert received >= 20_000
            assert metric(server, "sipgate_flood_tracked_sources") <= 256
            # 20,000 more tracked sources would be several MiB.
            assert after - before < 2048, (before, after)
        finally:
            assert server.stop() == 0
