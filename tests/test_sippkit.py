"""The SIPp harness (sipgate.sippkit + tests/scenarios) against SIPp alone.

No sipgate process is involved: these prove the harness itself, so that a
failure in the end-to-end tests points at sipgate, not at the tooling.
Loopback only; every SIPp process is stopped by PID in a finalizer.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time

import pytest

from sipgate import sippkit

pytestmark = pytest.mark.skipif(shutil.which("sipp") is None,
                                reason="SIPp (Debian sip-tester) not installed")

TRUNK_DOMAIN = "demo.sipgate.test"


@pytest.fixture
def procs():
    """Collects SippProcess handles; stops any still running at teardown."""
    started: list[sippkit.SippProcess] = []
    yield started
    for p in started:
        if p.running:
            p.stop(grace=1.0)


def _uri_host(uri: str) -> str:
    # sip:user@host[:port][;params]
    rest = uri.split(":", 1)[1]
    hostport = rest.split("@", 1)[-1]
    return re.split(r"[:;>]", hostport, maxsplit=1)[0]


def test_pysipp_imports_with_pluggy_1x():
    import pluggy

    assert int(pluggy.__version__.split(".")[0]) >= 1
    pysipp = sippkit.load_pysipp()
    assert sippkit.load_pysipp() is pysipp
    # The shim was only in place for the import.
    assert pluggy.PluginManager.__name__ == "PluginManager"
    mng = pysipp.plugin.mng
    assert isinstance(mng, pluggy.PluginManager)
    assert mng.hook.pysipp_conf_scen_protocol.get_hookimpls()

    # implprefix semantics: an unmarked pysipp_* function is a hook impl.
    class Conf:
        @staticmethod
        def pysipp_order_agents(agents, clients, servers):
            return None

        not_a_hook = None

    conf = Conf()
    mng.register(conf)
    try:
        assert any(i.plugin is conf
                   for i in mng.hook.pysipp_order_agents.get_hookimpls())
    finally:
        mng.unregister(conf)


def test_builtin_uac_to_builtin_uas(procs, tmp_path):
    uas_addr = ("127.0.0.1", sippkit.free_udp_port("127.0.0.1"))
    uac_addr = ("127.0.0.1", sippkit.free_udp_port("127.0.0.1"))
    uas = sippkit.run_uas(uas_addr, "uas", call_count=20, limit=100, timeout=30,
                          logdir=tmp_path)
    procs.append(uas)
    uac = sippkit.run_uac(uac_addr, uas_addr, "uac", call_count=20, rate=200,
                          limit=20, timeout=20, logdir=tmp_path,
                          extra_args=["-buff_size", "4194304"])
    assert "-buff_size 4194304" in uac.cmd
    assert uac.source == "stat_csv", uac.describe()
    assert uac.successful_calls == 20, uac.describe()
    assert uac.failed_calls == 0, uac.describe()
    assert uac.total_calls == 20
    assert uac.exit_code == 0 and uac.ok
    assert uac.counts["0_INVITE_Sent"] == 20

    # The uas ends by itself after its 20 calls (+ the built-in 4 s timewait).
    srv = uas.wait(timeout=15)
    assert not srv.timed_out, srv.describe()
    assert srv.successful_calls == 20 and srv.failed_calls == 0, srv.describe()
    assert srv.exit_code == 0


def test_uac_trunk_to_uas_no180_direct(procs, tmp_path):
    uas_addr = ("127.0.0.1", sippkit.free_udp_port("127.0.0.1"))
    uac_addr = ("127.0.0.2", sippkit.free_udp_port("127.0.0.2"))
    uas = sippkit.run_uas(uas_addr, "uas_no180", call_count=10, limit=100,
                          timeout=30, logdir=tmp_path, trace_msg=True)
    procs.append(uas)
    uac = sippkit.run_uac(uac_addr, uas_addr, "uac_trunk", call_count=10, rate=100,
                          timeout=20, logdir=tmp_path, trace_msg=True,
                          keys={"trunk_domain": TRUNK_DOMAIN})
    assert uac.successful_calls == 10 and uac.failed_calls == 0, uac.describe()
    assert uac.exit_code == 0

    srv = uas.wait(timeout=10)
    assert srv.successful_calls == 10 and srv.failed_calls == 0, srv.describe()

    invites = srv.received("INVITE")
    assert len(invites) == 10
    for inv in invites:
        assert _uri_host(inv.request_uri) == TRUNK_DOMAIN
        assert _uri_host(inv.header("To")) == TRUNK_DOMAIN
        assert "127.0.0.2" in inv.header("Via")
    contact = f"sip:pbx@{uas_addr[0]}:{uas_addr[1]};transport=UDP"
    for method in ("ACK", "BYE"):
        reqs = srv.received(method)
        assert len(reqs) == 10
        # In-dialog requests target the remote target (the 200's Contact);
        # no proxy here, so no Route header.
        assert all(r.request_uri == contact for r in reqs)
        assert all(r.header("Route") is None for r in reqs)


class Deny403Responder(threading.Thread):
    """UDP endpoint that answers every INVITE with 403 and records ACKs."""

    def __init__(self, host="127.0.0.1"):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.1)
        self.addr = self.sock.getsockname()
        self.invites: dict[str, dict] = {}   # call-id -> info
        self.acks: list[dict] = []
        self._halt = threading.Event()

    @staticmethod
    def _parse(data: bytes):
        head = data.decode(errors="replace").split("\r\n\r\n", 1)[0]
        lines = head.split("\r\n")
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        return lines[0], headers

    def run(self):
        while not self._halt.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            start, headers = self._parse(data)
            h = dict(headers)
            method, uri = start.split(" ")[:2]
            call_id = h.get("call-id", "")
            branch = re.search(r"branch=([^;,\s]+)", h.get("via", ""))
            branch = branch.group(1) if branch else None
            if method == "INVITE":
                tag = f"deny{len(self.invites) + 1}"
                info = self.invites.setdefault(
                    call_id, {"uri": uri, "branch": branch, "tag": tag, "peer": peer})
                resp = ["SIP/2.0 403 Forbidden"]
                resp += [f"Via: {v}" for k, v in headers if k == "via"]
                resp += [f"From: {h['from']}", f"To: {h['to']};tag={info['tag']}",
                         f"Call-ID: {call_id}", f"CSeq: {h['cseq']}", "Content-Length: 0"]
                self.sock.sendto(("\r\n".join(resp) + "\r\n\r\n").encode(), peer)
            elif method == "ACK":
                tag = re.search(r";tag=([^;>\s]+)", h.get("to", ""))
                self.acks.append({"call_id": call_id, "uri": uri, "branch": branch,
                                  "tag": tag.group(1) if tag else None,
                                  "cseq": h.get("cseq"), "peer": peer})

    def stop(self):
        self._halt.set()
        self.join(timeout=2)
        self.sock.close()


def test_uac_403_acks_every_denial(tmp_path):
    responder = Deny403Responder()
    responder.start()
    try:
        uac_addr = ("127.0.0.3", sippkit.free_udp_port("127.0.0.3"))
        n = 10
        res = sippkit.run_uac(uac_addr, responder.addr, "uac_403", call_count=n,
                              rate=100, timeout=20, logdir=tmp_path,
                              keys={"trunk_domain": TRUNK_DOMAIN})
        assert res.successful_calls == n and res.failed_calls == 0, res.describe()
        assert res.exit_code == 0
        deadline = time.monotonic() + 2
        while len(responder.acks) < n and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        responder.stop()

    assert len(responder.invites) == n
    assert len(responder.acks) == n  # exactly one ACK per INVITE
    assert {a["call_id"] for a in responder.acks} == set(responder.invites)
    for ack in responder.acks:
        inv = responder.invites[ack["call_id"]]
        assert ack["peer"] == inv["peer"] == uac_addr
        assert ack["branch"] == inv["branch"]      # same transaction
        assert ack["tag"] == inv["tag"]            # To tag of the 403
        assert ack["uri"] == inv["uri"]
        assert _uri_host(ack["uri"]) == TRUNK_DOMAIN
        assert ack["cseq"] == "1 ACK"
