"""Change -> enforcement across nodes: a write through node A's API, seen by node B.

Two `sipgate serve` nodes share one PostgreSQL (a throwaway cluster this
script starts and stops by PID, as the tests do: tests/pgcluster.py), with
their revision poll at 60 s so only NOTIFY can carry a change. Each round
adds an address through A's API (or deletes it), then sends INVITEs from
that address to B every 2 ms until B's verdict flips; the time from A's 2xx
to B's first flipped answer is one sample. Appends p50/p99/max to
benchmarks/RESULTS.md (issue 7: p99 <= 200 ms).

    .venv/bin/python benchmarks/bench_nodes.py [--rounds 100] [--results -]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import ACCOUNT_SID, DEMO_SEED, Serving, UdpPeer, request  # noqa: E402
from helpers import api_json as api, pg_node_config as node_config  # noqa: E402
from pgcluster import PgCluster  # noqa: E402

SOURCE = "127.0.0.9"


def wait_flip(peer: UdpPeer, node: Serving, pbx: UdpPeer, want_relay: bool, n: int) -> float:
    """Send INVITEs every 2 ms until the verdict is the wanted one; when."""
    peer.sock.settimeout(0.002)
    pbx.sock.settimeout(0.0005)
    deadline = time.monotonic() + 10
    i = 0
    while time.monotonic() < deadline:
        i += 1
        call_id = f"r{n}-{i}"
        peer.send(request(via_host=f"{SOURCE}:{peer.address[1]}", call_id=call_id, branch=f"z9hG4bK-{call_id}"),
                  ("127.0.0.1", node.sip_port))
        end = time.monotonic() + 0.002
        while time.monotonic() < end:
            try:
                if call_id.encode() in pbx.sock.recvfrom(65535)[0] and want_relay:
                    return time.monotonic()
            except TimeoutError:
                pass
            try:
                if b"SIP/2.0 403" in peer.sock.recvfrom(65535)[0] and not want_relay:
                    return time.monotonic()
            except TimeoutError:
                pass
    raise SystemExit("node B never followed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()
    cluster = PgCluster()
    work = Path(tempfile.mkdtemp(prefix="sipgate-nodes-"))
    samples: list[float] = []
    try:
        cluster.start()
        dsn = cluster.create_database("nodes")
        url = f"postgresql://{cluster.user}@127.0.0.1:{cluster.port}/{dsn.rsplit('dbname=', 1)[1]}"
        with UdpPeer("127.0.0.1") as pbx_a, UdpPeer("127.0.0.1") as pbx_b, UdpPeer(SOURCE) as peer:
            a = Serving(["serve", "--config", str(node_config(work / "a", pbx_a.address[1], url)),
                         "--seed", str(DEMO_SEED)])
            b = None
            try:
                b = Serving(["serve", "--config", str(node_config(work / "b", pbx_b.address[1], url))])
                lists = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
                acl = api(a, "GET", f"{lists}.json")["ip_access_control_lists"][0]["sid"]
                for n in range(args.rounds):
                    ip = api(a, "POST", f"{lists}/{acl}/IpAddresses.json",
                             {"FriendlyName": f"r{n}", "IpAddress": SOURCE})
                    done = time.monotonic()
                    samples.append(wait_flip(peer, b, pbx_b, True, 2 * n) - done)
                    api(a, "DELETE", f"{lists}/{acl}/IpAddresses/{ip['sid']}.json")
                    done = time.monotonic()
                    samples.append(wait_flip(peer, b, pbx_b, False, 2 * n + 1) - done)
            finally:
                if b is not None:
                    b.stop()
                a.stop()
    finally:
        cluster.destroy()
    pg_version = subprocess.run([str(cluster.bindir / "postgres"), "--version"], capture_output=True,
                                text=True).stdout.strip()
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    report = (
        f"\n## {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())} — change -> enforcement across nodes\n\n"
        f"`benchmarks/bench_nodes.py --rounds {args.rounds}` on {platform.node()} ({os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {pg_version}): "
        "two `sipgate serve` nodes on one PostgreSQL, revision poll 60 s (NOTIFY only); an address added or "
        "deleted through node A's API, INVITEs from it to node B every 2 ms until B's verdict flips; time "
        "from A's 2xx to B's first flipped answer (includes up to 2 ms of probe spacing).\n\n"
        "| samples | p50 | p99 | max |\n| ---: | ---: | ---: | ---: |\n"
        f"| {len(ms)} | {statistics.median(ms):.1f} ms | {p99:.1f} ms | {ms[-1]:.1f} ms |\n")
    print(report)
    if args.results != "-":
        with open(args.results, "a") as fh:
            fh.write(report)
    subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
