"""Faults: SIGKILL mid-burst, the store locked or full at run time, the PBX
down, the reloader while the store fails.

Real `sipgate serve` processes, real SQLite files, real loopback sockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import resource
import signal
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from helpers import (
    ACCOUNT_SID,
    ALLOWED,
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
from sipgate.reload import Reloader
from sipgate.store import Unavailable, open_store
from sipgate.store.sqlite import CHANGE_LOG_KEEP, OP_TIMEOUT

AUTH = basic()
ACLS = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"


def api(port: int, method: str, path: str, form: dict | None = None,
        timeout: float = 15.0) -> tuple[int | None, dict]:
    """One API request: (status, JSON body); (None, {}) when no answer came."""
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Authorization": AUTH})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            body = resp.read()
            return resp.status, json.loads(body) if body else {}
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"raw": body.decode(errors="replace")}
    except (OSError, ValueError):  # connection reset / refused by the SIGKILL
        return None, {}


def invite(peer: UdpPeer, domain: str, call_id: str) -> bytes:
    """An INVITE from ``peer`` (its Via names the peer's own port)."""
    return request(ruri=f"sip:+15551234567@{domain}", via_host=f"{peer.address[0]}:{peer.address[1]}",
                   call_id=call_id, branch=f"z9hG4bK-{call_id}")


def api_500s(server: Serving) -> int:
    """API requests answered 500, from /metrics (every route and method)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    assert "sipgate_api_requests_total{" in text
    return sum(int(float(v)) for v in re.findall(r'^sipgate_api_requests_total\{[^}]*code="500"[^}]*\} (\S+)$',
                                                  text, re.M))


def verdicts(server: Serving, pbx: UdpPeer, calls: list[tuple[str, str]],
             wait: float = 3.0) -> dict[tuple[str, str], str]:
    """Send one INVITE per (source, domain) from that source address; return
    "relayed" (the PBX got it), the response code ("403", "404") or "none"."""
    peers = {}
    result: dict[tuple[str, str], str] = {}
    ids = {}
    try:
        for n, (source, domain) in enumerate(calls):
            peer = peers[source] = peers.get(source) or UdpPeer(source)
            call_id = f"fault-{n}-{source}@{domain}"
            ids[call_id] = (source, domain)
            peer.send(request(ruri=f"sip:+15551234567@{domain}", via_host=f"{source}:{peer.address[1]}",
                              call_id=call_id, branch=f"z9hG4bK-f{n}"), ("127.0.0.1", server.sip_port))
        deadline = time.monotonic() + wait
        while len(result) < len(calls) and time.monotonic() < deadline:
            progressed = False
            for peer in peers.values():
                while True:
                    peer.sock.settimeout(0)
                    try:
                        data = peer.sock.recv(65535)
                    except (BlockingIOError, TimeoutError, socket.timeout):
                        break
                    progressed = True
                    m = re.search(rb"Call-ID: (\S+)", data)
                    if m and m.group(1).decode() in ids and data.startswith(b"SIP/2.0 "):
                        result.setdefault(ids[m.group(1).decode()], data[8:11].decode())
            pbx.sock.settimeout(0.02)
            try:
                data = pbx.sock.recv(65535)
                progressed = True
                m = re.search(rb"Call-ID: (\S+)", data)
                if data.startswith(b"INVITE ") and m and m.group(1).decode() in ids:
                    result[ids[m.group(1).decode()]] = "relayed"
            except (BlockingIOError, TimeoutError, socket.timeout):
                pass
            if not progressed:
                time.sleep(0.01)
    finally:
        for peer in peers.values():
            peer.close()
    return {call: result.get(call, "none") for call in calls}


# -- 1. SIGKILL in the middle of a burst of API writes ----------------------

def _burst_worker(port: int, i: int, stop: threading.Event, log: list) -> None:
    """Rounds of: list, trunk, address, association; each attempt logged
    before it is sent and its answer after."""
    r = 0
    while not stop.is_set() and r < 250:
        r += 1
        rec = {"thread": i, "round": r, "source": f"127.{20 + i}.{r}.1",
               "domain": f"r{r}.t{i}.burst.test"}
        log.append(rec)
        status, body = api(port, "POST", ACLS + ".json", {"FriendlyName": f"burst-{i}-{r}"})
        rec["acl"] = (status, body.get("sid"))
        if status != 201:
            return
        status, body = api(port, "POST", "/v1/Trunks", {"DomainName": rec["domain"]})
        rec["trunk"] = (status, body.get("sid"))
        if status != 201:
            return
        status, body = api(port, "POST", f"{ACLS}/{rec['acl'][1]}/IpAddresses.json",
                           {"FriendlyName": "b", "IpAddress": rec["source"]})
        rec["ip"] = (status, body.get("sid"))
        if status != 201:
            return
        status, _ = api(port, "POST", f"/v1/Trunks/{rec['trunk'][1]}/IpAccessControlLists",
                        {"IpAccessControlListSid": rec["acl"][1]})
        rec["assoc"] = (status, None)
        if status != 201:
            return


def _check_store(path: Path) -> dict:
    """Integrity, foreign keys, revision and change log against the rows."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        revision = db.execute("SELECT revision FROM meta").fetchone()[0]
        revs = [r for (r,) in db.execute("SELECT DISTINCT revision FROM changes ORDER BY revision")]
        # Every revision kept has its change log rows, no gaps, none ahead.
        assert revs == list(range(max(1, revision - CHANGE_LOG_KEEP + 1), revision + 1))
        ops = dict(db.execute("SELECT op, COUNT(*) FROM changes GROUP BY op").fetchall())
        state = {
            "acls": {r[0]: r[1] for r in db.execute("SELECT sid, friendly_name FROM acls")},
            "trunks": {r[0]: r[1] for r in db.execute("SELECT sid, domain_name FROM trunks")},
            "ips": {r[0]: r[1:] for r in db.execute(
                "SELECT sid, acl_sid, ip_address, cidr_prefix_length FROM ip_addresses")},
            "assocs": set(db.execute("SELECT trunk_sid, acl_sid FROM trunk_acls").fetchall()),
        }
        if revision > CHANGE_LOG_KEEP:  # the log was trimmed: no more to count
            return state
        # Nothing is ever deleted here: the log counts exactly the rows.
        assert ops.get("+", 0) == len(state["ips"]) and ops.get("-", 0) == 0
        assert ops.get("A", 0) == len(state["assocs"])
        assert ops.get("T", 0) == len(state["trunks"])
        # Each list creation is one "." revision; plus one per account.
        accounts = db.execute("SELECT COUNT(*) FROM accounts").fetchone()[0]
        assert ops.get(".", 0) == len(state["acls"]) + accounts
        assert revision == len(state["acls"]) + len(state["trunks"]) + len(state["ips"]) \
            + len(state["assocs"]) + accounts
        return state
    finally:
        db.close()


def test_sigkill_mid_burst_keeps_every_2xx_and_no_half_write(tmp_path):
    with UdpPeer("127.0.0.1") as pbx:
        config = str(write_config(tmp_path, pbx.address[1]))
        first = Serving(["serve", "--config", config])
        log: list[dict] = []
        stop = threading.Event()
        threads = [threading.Thread(target=_burst_worker, args=(first.api_port, i, stop, log), daemon=True)
                   for i in range(8)]
        try:
            for t in threads:
                t.start()
            time.sleep(0.5)
            deadline = time.monotonic() + 5  # a slow disk: wait for a few answered writes
            while time.monotonic() < deadline and sum(
                    1 for rec in list(log) for k in ("acl", "trunk", "ip", "assoc")
                    if rec.get(k, (None,))[0] == 201) < 16:
                time.sleep(0.05)
        finally:
            os.kill(first.proc.pid, signal.SIGKILL)  # mid-burst: requests in flight
            first.proc.wait(10)
            stop.set()
        for t in threads:
            t.join(20)
            assert not t.is_alive()
        acked = [(rec, kind) for rec in log for kind in ("acl", "trunk", "ip", "assoc")
                 if rec.get(kind, (None,))[0] == 201]
        assert len(acked) >= 16, f"the burst made too few writes before the kill: {len(acked)}"

        state = _check_store(tmp_path / "edge.db")
        by_source = {}
        for rec in log:
            acl = rec.get("acl", (None, None))[1]
            trunk = rec.get("trunk", (None, None))[1]
            ip = rec.get("ip", (None, None))[1]
            if acl:  # a 2xx is there, as it was answered
                assert state["acls"][acl] == f"burst-{rec['thread']}-{rec['round']}"
            if trunk:
                assert state["trunks"][trunk] == rec["domain"]
            if ip:
                assert state["ips"][ip] == (acl, rec["source"], 32)
            if rec.get("assoc", (None,))[0] == 201:
                assert (trunk, acl) in state["assocs"]
            by_source[rec["source"]] = rec
        # Nothing that did not get a 2xx is half there: every row is whole
        # (foreign keys) and belongs to one attempted write of its round.
        names = {f"burst-{r['thread']}-{r['round']}" for r in log}
        assert set(state["acls"].values()) <= names
        domains = {r["domain"] for r in log}
        assert set(state["trunks"].values()) <= domains
        for acl_sid, address, prefix in state["ips"].values():
            rec = by_source[address]
            assert rec["acl"][1] == acl_sid and prefix == 32
        for trunk_sid, acl_sid in state["assocs"]:
            assert any(r.get("trunk", (0, 0))[1] == trunk_sid and r["acl"][1] == acl_sid for r in log)
        unacked_present = sum(1 for r in log if r.get("ip", (0,))[0] != 201
                              and r["source"] in {a for _, a, _ in state["ips"].values()})

        # The restarted edge enforces exactly the stored state.
        second = Serving(["serve", "--config", config])
        try:
            ips = {address for _, address, _ in state["ips"].values()}
            trunk_by_domain = {d: s for s, d in state["trunks"].items()}
            calls, expected = [], {}
            for rec in log:
                call = (rec["source"], rec["domain"])
                calls.append(call)
                trunk = trunk_by_domain.get(rec["domain"])
                if trunk is None:
                    expected[call] = "404"
                elif rec["source"] in ips and (trunk, rec["acl"][1]) in state["assocs"]:
                    expected[call] = "relayed"
                else:
                    expected[call] = "403"
            got = verdicts(second, pbx, calls)
            assert got == expected
            assert sum(1 for r in log if r.get("ip", (0,))[0] == 201 and r.get("assoc", (0,))[0] == 201) >= 1
            assert "403" in got.values() or "404" in got.values(), "some write was cut by the kill"
            assert metric(second, "sipgate_internal_errors_total") == 0
        finally:
            assert second.stop() == 0
        print(f"{len(log)} rounds, {len(acked)} writes answered 201, "
              f"{unacked_present} address(es) committed but not answered")


# -- 2. The store locked, then full, at run time ----------------------------

def _twilio_503(status: int | None, body: dict) -> None:
    assert status == 503, (status, body)
    assert body["status"] == 503 and body["code"] == 20503
    assert body["message"] and body["more_info"].startswith("https://")


def _concurrent(port: int, n: int, method: str, path: str, form: dict | None
                ) -> tuple[list[tuple[int | None, dict]], float]:
    results: list = [None] * n
    started = time.monotonic()

    def one(k: int) -> None:
        results[k] = api(port, method, path, form)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results, time.monotonic() - started


def _demo_acl(port: int) -> str:
    status, body = api(port, "GET", ACLS + ".json")
    assert status == 200
    return body["ip_access_control_lists"][0]["sid"]


def _wait_verdict(server: Serving, pbx: UdpPeer, source: str, want: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        got = verdicts(server, pbx, [(source, "demo.sipgate.test")], wait=1.0)[(source, "demo.sipgate.test")]
        if got == want or time.monotonic() > deadline:
            assert got == want
            return


def test_store_locked_then_full_answers_503_keeps_enforcing_and_recovers(tmp_path):
    db_path = tmp_path / "edge.db"
    with UdpPeer("127.0.0.1") as pbx:
        server = Serving(["serve", "--config", str(write_config(tmp_path, pbx.address[1])),
                          "--seed", str(DEMO_SEED)])
        locker = None
        try:
            port = server.api_port
            acl = _demo_acl(port)
            ips = f"{ACLS}/{acl}/IpAddresses.json"
            both = [(ALLOWED, "demo.sipgate.test"), (DENIED, "demo.sipgate.test")]
            assert list(verdicts(server, pbx, both).values()) == ["relayed", "403"]

            # (a) Another process holds the write lock.
            locker = sqlite3.connect(db_path, isolation_level=None)
            locker.execute("BEGIN EXCLUSIVE")
            results, took = _concurrent(port, 4, "POST", ips, {"FriendlyName": "x", "IpAddress": DENIED})
            for status, body in results:
                _twilio_503(status, body)
            # Bounded: four requests queued on one connection do not wait a
            # bound each (4 x 2 s), nor SQLite's old 10 s.
            assert took < OP_TIMEOUT + 2.5, took
            # Reads still work in WAL mode; the edge still enforces.
            assert api(port, "GET", ips)[0] == 200
            assert list(verdicts(server, pbx, both).values()) == ["relayed", "403"]
            locker.execute("ROLLBACK")
            locker.close()
            locker = None
            status, body = api(port, "POST", ips, {"FriendlyName": "x", "IpAddress": DENIED})
            assert status == 201, body
            added = body["sid"]
            _wait_verdict(server, pbx, DENIED, "relayed")  # enforced without a restart

            # (b) The disk is full: the process may write no byte to a file.
            resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
            try:
                started = time.monotonic()
                status, body = api(port, "DELETE", f"{ACLS}/{acl}/IpAddresses/{added}.json")
                _twilio_503(status, body)
                status, body = api(port, "POST", ips, {"FriendlyName": "y", "IpAddress": "127.0.0.4"})
                _twilio_503(status, body)
                assert time.monotonic() - started < 2 * OP_TIMEOUT
                assert list(verdicts(server, pbx, both).values()) == ["relayed", "relayed"]
                assert api(port, "GET", f"{ACLS}/{acl}/IpAddresses/{added}.json")[0] == 200
            finally:
                resource.prlimit(server.proc.pid, resource.RLIMIT_FSIZE,
                                 (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            status, _ = api(port, "DELETE", f"{ACLS}/{acl}/IpAddresses/{added}.json")
            assert status == 204
            _wait_verdict(server, pbx, DENIED, "403")
            assert verdicts(server, pbx, both[:1])[both[0]] == "relayed"

            assert metric(server, "sipgate_internal_errors_total") == 0
            assert api_500s(server) == 0
        finally:
            if locker is not None:
                locker.close()
            assert server.stop() == 0
        assert "store unavailable" in server.output() and "Traceback" not in server.output()
    db = sqlite3.connect(db_path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        db.close()


# -- 3. The PBX down, then up -----------------------------------------------

def test_pbx_down_keeps_serving_then_pbx_appears(tmp_path):
    pbx_port = sippkit.free_udp_port("127.0.0.1")  # nobody listens: ICMP port unreachable
    config = write_config(tmp_path, pbx_port)
    # OPTIONS pings every 0.5 s from a connected socket (sipgate.pbxprobe):
    # the relays leave through the unconnected listener socket, where Linux
    # reports ICMP port unreachable only with IP_RECVERR (which uvloop 0.23
    # cannot take), so the probe is what sees the PBX down.
    config.write_text(config.read_text().replace("[sip]\n", "[sip]\npbx_probe_interval = 0.5\n", 1))
    server = Serving(["serve", "--config", str(config), "--seed", str(DEMO_SEED)])

    def wait_metric(name: str, ok, timeout: float = 5.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            value = metric(server, name)
            if ok(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.1)

    try:
        with UdpPeer(ALLOWED) as caller, UdpPeer(DENIED) as intruder:
            target = ("127.0.0.1", server.sip_port)
            for n in range(5):
                caller.send(invite(caller, "demo.sipgate.test", f"down-{n}"), target)
                intruder.send(invite(intruder, "demo.sipgate.test", f"deny-{n}"), target)
                data, _ = intruder.recv()
                assert data.startswith(b"SIP/2.0 403")
                time.sleep(0.05)
            assert metric(server, "sipgate_relayed_requests_total", '{direction="to_pbx"}') >= 5
            assert caller.nothing(0.3)  # relayed (not refused), just unanswered
            assert wait_metric("sipgate_pbx_unreachable_total", lambda v: v >= 1) >= 1
            assert metric(server, "sipgate_pbx_reachable") == 0
            with UdpPeer("127.0.0.1", pbx_port) as pbx:

                def next_request() -> bytes:
                    # The PBX now also gets sipgate's OPTIONS pings.
                    while True:
                        data, _ = pbx.recv()
                        if not data.startswith(b"OPTIONS "):
                            return data

                caller.send(invite(caller, "demo.sipgate.test", "up-1"), target)
                data = next_request()
                assert data.startswith(b"INVITE ") and b"up-1" in data
                intruder.send(invite(intruder, "demo.sipgate.test", "deny-up"), target)
                assert intruder.recv()[0].startswith(b"SIP/2.0 403")
                assert wait_metric("sipgate_pbx_reachable", lambda v: v == 1) == 1
                pbx.sock.settimeout(0.3)
                try:
                    while True:
                        assert pbx.sock.recvfrom(65535)[0].startswith(b"OPTIONS "), "the denied INVITE reached the PBX"
                except TimeoutError:
                    pass
            assert metric(server, "sipgate_internal_errors_total") == 0
            assert server.proc.poll() is None
    finally:
        assert server.stop() == 0
    assert "does not answer: its port is closed" in server.output()


# -- 4. The reloader while the store fails ----------------------------------

def test_reloader_keeps_the_table_logs_once_and_recovers(tmp_path, caplog):
    """A store that fails every read for a while: the table in force stays,
    the failure is logged once (not every poll), the recovery is logged, and
    the next change is installed."""
    store = open_store(str(tmp_path / "r.db"))
    store.ensure_account(ACCOUNT_SID)
    installed = []
    reloader = Reloader(store, lambda table, _seconds: installed.append(table.generation))
    real_revision = store.revision
    down = {"on": False}

    def revision() -> int:
        if down["on"]:
            raise Unavailable("store unavailable: disk I/O error")
        return real_revision()

    store.revision = revision  # type: ignore[method-assign]

    async def scenario() -> None:
        assert await reloader.refresh()
        first = installed[-1]
        down["on"] = True
        for _ in range(20):
            assert not await reloader.refresh()
        assert installed == [first] and reloader.failures == 20
        down["on"] = False
        store.create_acl(ACCOUNT_SID, "after")
        assert await reloader.refresh()
        assert installed[-1] == first + 1 and reloader.failing == 0

    with caplog.at_level(logging.WARNING, logger="sipgate.reload"):
        asyncio.run(scenario())
    store.close()
    failed = [r for r in caplog.records if "reload failed" in r.getMessage()]
    assert len(failed) == 1 and "disk I/O error" in failed[0].getMessage()
    assert any("answers again after 20" in r.getMessage() for r in caplog.records)
