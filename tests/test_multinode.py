"""Two sipgate nodes on one PostgreSQL: a change through one node's API is
enforced by the other at once (NOTIFY), not at its next revision check.

The nodes are real `sipgate serve` processes on loopback ports with
`store.url = "postgresql://..."` on the test run's own cluster
(tests/pgcluster.py); their revision poll is set to 60 s, so only the
NOTIFY path can make the second node follow within the bound asserted here.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ACCOUNT_SID, DEMO_SEED, Serving, UdpPeer, basic, held_while_stopped, pg_node_config, request
from helpers import api_json as api
from pgcluster import PgCluster, pg_cluster  # noqa: F401  (the session fixture)
from sipgate.sip import parse

SCANNER = "127.0.0.8"


@pytest.fixture
def pg_url(pg_cluster: PgCluster):  # noqa: F811
    dsn = pg_cluster.create_database("node")
    name = dsn.rsplit("dbname=", 1)[1]
    try:
        yield f"postgresql://{pg_cluster.user}@127.0.0.1:{pg_cluster.port}/{name}"
    finally:
        pg_cluster.drop_database(dsn)


def node_config(tmp_path: Path, name: str, pbx_port: int, url: str) -> Path:
    return pg_node_config(tmp_path / name, pbx_port, url)


def verdict(peer: UdpPeer, node: Serving, pbx: UdpPeer, call_id: str) -> str:
    """'relayed' or the status of the answer, for one INVITE to ``node``."""
    peer.send(request(via_host=f"{peer.address[0]}:{peer.address[1]}", call_id=call_id,
                      branch=f"z9hG4bK-{call_id}"), ("127.0.0.1", node.sip_port))
    peer.sock.settimeout(0.05)
    pbx.sock.settimeout(0.05)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            data = pbx.sock.recvfrom(65535)[0]
            if call_id.encode() in data:
                return "relayed"
        except TimeoutError:
            pass
        try:
            return str(parse(peer.sock.recvfrom(65535)[0]).status)
        except TimeoutError:
            pass
    return "nothing"


@dataclass
class Pair:
    """Two nodes on one PostgreSQL, their PBX sockets, a socket on SCANNER
    and the demo list's IpAddresses path."""

    a: Serving
    b: Serving
    pbx_a: UdpPeer
    pbx_b: UdpPeer
    peer: UdpPeer
    addresses: str


@contextmanager
def two_nodes(tmp_path: Path, pg_url: str) -> Iterator[Pair]:
    """Node A (the demo seed) and node B; both stopped at the end, and
    each must exit 0 (stopping one earlier is fine)."""
    with UdpPeer("127.0.0.1") as pbx_a, UdpPeer("127.0.0.1") as pbx_b, UdpPeer(SCANNER) as peer:
        a = Serving(["serve", "--config", str(node_config(tmp_path, "a", pbx_a.address[1], pg_url)),
                     "--seed", str(DEMO_SEED)])
        try:
            b = Serving(["serve", "--config", str(node_config(tmp_path, "b", pbx_b.address[1], pg_url))])
            try:
                lists = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
                acl = api(a, "GET", f"{lists}.json")["ip_access_control_lists"][0]["sid"]
                yield Pair(a, b, pbx_a, pbx_b, peer, f"{lists}/{acl}/IpAddresses")
            finally:
                assert b.stop() == 0
        finally:
            assert a.stop() == 0


def test_a_change_through_one_node_is_enforced_by_the_other_at_once(tmp_path, pg_url):
    with two_nodes(tmp_path, pg_url) as n:
        assert verdict(n.peer, n.a, n.pbx_a, "a-before") == "403"
        assert verdict(n.peer, n.b, n.pbx_b, "b-before") == "403"
        # Node A's 2xx: durable, and enforced by A.
        started = time.monotonic()
        ip = api(n.a, "POST", f"{n.addresses}.json", {"FriendlyName": "scanner no more", "IpAddress": SCANNER})
        assert verdict(n.peer, n.a, n.pbx_a, "a-after") == "relayed"
        # Node B follows through NOTIFY (its poll is 60 s away).
        while verdict(n.peer, n.b, n.pbx_b, f"b-after-{time.monotonic()}") != "relayed":
            assert time.monotonic() - started < 2.0, "node B did not follow node A's change"
        # And back, through node B's API this time.
        api(n.b, "DELETE", f"{n.addresses}/{ip['sid']}.json")
        assert verdict(n.peer, n.b, n.pbx_b, "b-removed") == "403"
        started = time.monotonic()
        while verdict(n.peer, n.a, n.pbx_a, f"a-removed-{time.monotonic()}") != "403":
            assert time.monotonic() - started < 2.0, "node A did not follow node B's change"


def test_a_write_waits_until_the_other_node_enforces_it(tmp_path, pg_url):
    """Each node's processes report in the store the revision their table
    is at.  With node B stopped (SIGSTOP), node A's 2xx is held; once B
    runs again (its NOTIFY read, its table patched, its revision
    reported) the 2xx comes, and B relays the newly listed source at once.
    A node that stops cleanly says so: the next write does not wait."""
    with two_nodes(tmp_path, pg_url) as n:
        assert verdict(n.peer, n.b, n.pbx_b, "b-before") == "403"
        ip = held_while_stopped(n.b.proc.pid, lambda: api(n.a, "POST", f"{n.addresses}.json",
                                                 {"FriendlyName": "scanner no more", "IpAddress": SCANNER}))
        assert verdict(n.peer, n.b, n.pbx_b, "b-at-once") == "relayed"
        assert n.b.stop() == 0
        started = time.monotonic()
        api(n.a, "DELETE", f"{n.addresses}/{ip['sid']}.json")
        assert time.monotonic() - started < 1.0
        assert not any("not yet enforcing" in line for line in n.a.log), "".join(n.a.log)


def test_a_silent_node_holds_one_write_not_every_write(tmp_path, pg_url):
    """Node B stopped (SIGSTOP: to node A as good as dead, it neither
    patches nor reports): A's first write waits the whole bound and names
    B in the log; the writes after it do not wait for B again while B
    stays silent.  Once B runs again (it catches up and reports), A waits
    for it as before."""
    from helpers import metric
    from sipgate.server import WORKER_ACK_TIMEOUT

    with two_nodes(tmp_path, pg_url) as n:
        os.kill(n.b.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            ip = api(n.a, "POST", f"{n.addresses}.json", {"FriendlyName": "scanner", "IpAddress": SCANNER})
            assert WORKER_ACK_TIMEOUT <= time.monotonic() - started < WORKER_ACK_TIMEOUT + 3
            for i in range(3):
                started = time.monotonic()
                api(n.a, "POST", f"{n.addresses}.json", {"FriendlyName": f"more {i}", "IpAddress": f"10.9.0.{i}"})
                assert time.monotonic() - started < 1.0, "waited for a node that was waited for already"
            assert sum("not yet enforcing" in line for line in n.a.log) == 1, "".join(n.a.log)
            assert metric(n.a, "sipgate_enforce_timeouts_total") == 4
        finally:
            os.kill(n.b.proc.pid, signal.SIGCONT)
        started = time.monotonic()
        while verdict(n.peer, n.b, n.pbx_b, f"b-back-{time.monotonic()}") != "relayed":
            assert time.monotonic() - started < 10.0, "node B did not catch up"
        time.sleep(0.5)  # (its report after the patch)
        held_while_stopped(n.b.proc.pid, lambda: api(n.a, "DELETE", f"{n.addresses}/{ip['sid']}.json"))
        assert verdict(n.peer, n.b, n.pbx_b, "b-at-once") == "403"


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_postgres_down_keeps_enforcing_answers_503_and_recovers(tmp_path, pg_url, pg_cluster):  # noqa: F811
    """PostgreSQL stopped under a running node: verdicts stay those of the
    last good table, an API write is a 503 with the Twilio body, the node
    says so (sipgate_store_up 0, /-/ready degraded); PostgreSQL back: the
    same node writes and enforces again, without a restart."""
    from helpers import metric

    with UdpPeer("127.0.0.1") as pbx, UdpPeer(SCANNER) as peer, UdpPeer("127.0.0.2") as carrier:
        config = node_config(tmp_path, "a", pbx.address[1], pg_url)
        config.write_text(config.read_text().replace("poll_interval = 60", "poll_interval = 0.2"))
        node = Serving(["serve", "--config", str(config), "--seed", str(DEMO_SEED)])
        lists = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
        try:
            acl = api(node, "GET", f"{lists}.json")["ip_access_control_lists"][0]["sid"]
            assert verdict(carrier, node, pbx, "ok-before") == "relayed"
            assert verdict(peer, node, pbx, "deny-before") == "403"
            pg_cluster.stop()
            try:
                auth = basic()
                req = urllib.request.Request(
                    f"http://127.0.0.1:{node.api_port}{lists}/{acl}/IpAddresses.json",
                    data=urllib.parse.urlencode({"FriendlyName": "x", "IpAddress": SCANNER}).encode(),
                    headers={"Authorization": auth})
                started = time.monotonic()
                try:
                    urllib.request.urlopen(req, timeout=15)
                    raise AssertionError("a write succeeded with PostgreSQL down")
                except urllib.error.HTTPError as exc:
                    body = json.loads(exc.read())
                    assert exc.code == 503 and body["code"] == 20503 and body["status"] == 503, body
                assert time.monotonic() - started < 10
                deadline = time.monotonic() + 10
                while metric(node, "sipgate_store_up") != 0:
                    assert time.monotonic() < deadline, "sipgate_store_up never went to 0"
                    time.sleep(0.2)
                status, text = get(node.metrics_port, "/-/ready")
                assert status == 200 and "degraded" in text and "store" in text, text
                assert verdict(carrier, node, pbx, "ok-during") == "relayed"
                assert verdict(peer, node, pbx, "deny-during") == "403"
            finally:
                pg_cluster.start()
            deadline = time.monotonic() + 15
            while metric(node, "sipgate_store_up") != 1:
                assert time.monotonic() < deadline, "the node never saw PostgreSQL again"
                time.sleep(0.2)
            api(node, "POST", f"{lists}/{acl}/IpAddresses.json", {"FriendlyName": "x", "IpAddress": SCANNER})
            assert verdict(peer, node, pbx, "admitted-after") == "relayed"
            assert get(node.metrics_port, "/-/ready") == (200, "sipgate is ready\n")
            assert metric(node, "sipgate_internal_errors_total") == 0
        finally:
            assert node.stop() == 0


def test_migrate_command_on_both_backends(tmp_path, pg_url):
    """`sipgate migrate` creates or upgrades the schema ahead of a rollout
    (SQLite and PostgreSQL) and is idempotent."""
    import subprocess

    from helpers import SIPGATE

    for url in (f"sqlite:{tmp_path / 'm.db'}", pg_url):
        config = tmp_path / "m.toml"
        config.write_text(f'[store]\nurl = "{url}"\n')
        for _ in range(2):
            out = subprocess.run([*SIPGATE, "migrate", "--config", str(config)], capture_output=True, text=True,
                                 timeout=60)
            assert out.returncode == 0, out.stderr
            assert out.stdout.startswith(f"{url}: schema version ") and "revision 0" in out.stdout, out.stdout


def test_concurrent_writes_through_three_nodes_end_in_the_same_state_everywhere(tmp_path, pg_url):
    """Three nodes, three threads writing through different nodes at once
    (addresses added, some deleted again): afterwards every node admits
    exactly the addresses that remain in the store, none of the deleted."""

    pbxes = [UdpPeer("127.0.0.1") for _ in range(3)]
    nodes: list[Serving] = []
    try:
        for i, pbx in enumerate(pbxes):
            nodes.append(Serving(["serve", "--config", str(node_config(tmp_path, f"n{i}", pbx.address[1], pg_url)),
                                  *(["--seed", str(DEMO_SEED)] if i == 0 else [])]))
        lists = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
        acl = api(nodes[0], "GET", f"{lists}.json")["ip_access_control_lists"][0]["sid"]
        kept: list[str] = []
        gone: list[str] = []
        errors: list[BaseException] = []

        def writer(w: int) -> None:
            try:
                node = nodes[w]
                for n in range(8):
                    address = f"127.1.{w}.{n + 1}"
                    ip = api(node, "POST", f"{lists}/{acl}/IpAddresses.json",
                             {"FriendlyName": f"w{w}-{n}", "IpAddress": address})
                    if n % 3 == 2:  # some go again, through the next node
                        api(nodes[(w + 1) % 3], "DELETE", f"{lists}/{acl}/IpAddresses/{ip['sid']}.json")
                        gone.append(address)
                    else:
                        kept.append(address)
            except BaseException as exc:  # noqa: BLE001  (reported below)
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        assert len(kept) == 18 and len(gone) == 6
        deadline = time.monotonic() + 5
        for node, pbx in zip(nodes, pbxes):
            for address in kept + gone:
                want = "relayed" if address in kept else "403"
                with UdpPeer(address) as peer:
                    while (got := verdict(peer, node, pbx, f"{address}-{time.monotonic()}")) != want:
                        assert time.monotonic() < deadline, (node.sip_port, address, got, want)
    finally:
        for node in nodes:
            assert node.stop() == 0
        for pbx in pbxes:
            pbx.close()


def test_a_dropped_listen_connection_is_caught_by_the_revision_check(tmp_path, pg_url, pg_cluster):  # noqa: F811
    """The LISTEN connections are killed (pg_terminate_backend) and a write
    goes through node A right away: its NOTIFY reaches no one, yet node B
    enforces it by its next revision check (poll 1 s) and listens again."""
    import psycopg

    with UdpPeer("127.0.0.1") as pbx_a, UdpPeer("127.0.0.1") as pbx_b, UdpPeer(SCANNER) as peer:
        configs = []
        for name, pbx in (("a", pbx_a), ("b", pbx_b)):
            config = node_config(tmp_path, name, pbx.address[1], pg_url)
            config.write_text(config.read_text().replace("poll_interval = 60", "poll_interval = 1"))
            configs.append(config)
        a = Serving(["serve", "--config", str(configs[0]), "--seed", str(DEMO_SEED)])
        try:
            b = Serving(["serve", "--config", str(configs[1])])
            try:
                lists = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
                acl = api(a, "GET", f"{lists}.json")["ip_access_control_lists"][0]["sid"]
                assert verdict(peer, b, pbx_b, "b-before") == "403"
                dbname = pg_url.rsplit("/", 1)[1]
                with psycopg.connect(pg_cluster.dsn, autocommit=True) as conn:
                    killed = conn.execute(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = %s AND query LIKE 'LISTEN%%'", (dbname,)).fetchone()[0]
                assert killed >= 2  # one listener per node
                started = time.monotonic()
                api(a, "POST", f"{lists}/{acl}/IpAddresses.json", {"FriendlyName": "x", "IpAddress": SCANNER})
                while verdict(peer, b, pbx_b, f"b-after-{time.monotonic()}") != "relayed":
                    assert time.monotonic() - started < 4.0, "node B never caught up"
            finally:
                assert b.stop() == 0
        finally:
            assert a.stop() == 0
