"""Change -> enforcement across nodes, and what it costs a write's 2xx.

Up to three `sipgate serve` nodes share one PostgreSQL (a throwaway cluster
this script starts and stops by PID, as the tests do: tests/pgcluster.py),
with their revision poll at 60 s so only NOTIFY can carry a change.  Each
round adds an address through node A's API, then deletes it; each write's
2xx latency (request sent to response read) is one sample, with node A
alone, then with B, then with B and C running, in blocks that alternate
(the VM's speed drifts): since a 2xx waits until every other node has the
change in force, the difference is the cost of that wait.  With two nodes each 2xx is also followed by INVITEs from that
address to node B every 2 ms until B's verdict flips (the time from A's
2xx to B's first flipped answer: at most the probe spacing, as B already
enforces it).  Appends both tables to benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_nodes.py [--rounds 300] [--blocks 3] [--results -]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
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
CALL_ID = re.compile(rb"(?im)^(?:call-id|i)[ \t]*:[ \t]*(\S+)")


def wait_flip(peer: UdpPeer, node: Serving, pbx: UdpPeer, want_relay: bool, n: int) -> tuple[float, int]:
    """Send INVITEs every 2 ms until one gets the wanted verdict (relayed to
    the PBX, or a 403): when its answer came, and which INVITE it was (1:
    the first one sent).  Answers are matched by Call-ID: a late answer to
    an earlier INVITE of the round counts for that INVITE."""
    peer.sock.settimeout(0.002)
    pbx.sock.settimeout(0.0005)
    deadline = time.monotonic() + 10
    sent: dict[bytes, int] = {}
    got: list[str] = []
    tag = os.urandom(4).hex()  # (no answer from another round can match)
    while time.monotonic() < deadline:
        call_id = f"r{n}-{tag}-{len(sent) + 1}"
        sent[call_id.encode()] = len(sent) + 1
        peer.send(request(via_host=f"{SOURCE}:{peer.address[1]}", call_id=call_id, branch=f"z9hG4bK-{call_id}"),
                  ("127.0.0.1", node.sip_port))
        end = time.monotonic() + 0.002
        while time.monotonic() < end:
            for sock, relayed in ((pbx.sock, True), (peer.sock, False)):
                try:
                    data = sock.recvfrom(65535)[0]
                except TimeoutError:
                    continue
                m = CALL_ID.search(data)
                which = sent.get(m.group(1)) if m else None
                got.append(f"{'relayed' if relayed else data[:12].decode(errors='replace')} "
                           f"{m.group(1).decode() if m else '?'}")
                if which and relayed == want_relay and (relayed or data.startswith(b"SIP/2.0 403")):
                    return time.monotonic(), which
    raise SystemExit(f"node B never followed (round {n}, wanted {'relay' if want_relay else '403'}; "
                     f"{len(sent)} INVITEs; last answers: {got[-5:]})")


def percentile(ms: list[float], q: float) -> float:
    ms = sorted(ms)
    return ms[min(len(ms) - 1, int(round(q * (len(ms) - 1))))]


def rounds(a: Serving, acl: str, count: int, flip: tuple[UdpPeer, Serving, UdpPeer] | None = None,
           ) -> tuple[list[float], list[tuple[float, int]]]:
    """``count`` add/delete pairs through A's API: (2xx latencies, s; with
    ``flip`` = (caller, node B, B's PBX): A's 2xx to B's flipped verdict, s,
    and the INVITEs sent until then)."""
    lists = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists/{acl}/IpAddresses"
    latency: list[float] = []
    flips: list[tuple[float, int]] = []
    for n in range(count):
        sent = time.monotonic()
        ip = api(a, "POST", f"{lists}.json", {"FriendlyName": f"r{n}", "IpAddress": SOURCE})
        done = time.monotonic()
        latency.append(done - sent)
        if flip:
            when, probes = wait_flip(flip[0], flip[1], flip[2], True, 2 * n)
            flips.append((when - done, probes))
        sent = time.monotonic()
        api(a, "DELETE", f"{lists}/{ip['sid']}.json")
        done = time.monotonic()
        latency.append(done - sent)
        if flip:
            when, probes = wait_flip(flip[0], flip[1], flip[2], False, 2 * n + 1)
            flips.append((when - done, probes))
    return latency, flips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300, help="add/delete pairs per node count, in all")
    parser.add_argument("--blocks", type=int, default=3,
                        help="alternate 1, 2, 3 nodes this many times (the VM's speed drifts)")
    parser.add_argument("--results", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = parser.parse_args()
    per = max(1, args.rounds // args.blocks)
    cluster = PgCluster()
    work = Path(tempfile.mkdtemp(prefix="sipgate-nodes-"))
    latency: dict[int, list[float]] = {1: [], 2: [], 3: []}
    medians: dict[int, list[float]] = {1: [], 2: [], 3: []}
    flips: list[tuple[float, int]] = []
    started: list[tuple[str, Serving]] = []
    try:
        cluster.start()
        dsn = cluster.create_database("nodes")
        url = f"postgresql://{cluster.user}@127.0.0.1:{cluster.port}/{dsn.rsplit('dbname=', 1)[1]}"
        with UdpPeer("127.0.0.1") as pbx_a, UdpPeer("127.0.0.1") as pbx_b, UdpPeer("127.0.0.1") as pbx_c, \
                UdpPeer(SOURCE) as peer:

            def start(name: str, pbx: UdpPeer, *extra: str) -> Serving:
                node = Serving(["serve", "--config", str(node_config(work / f"{name}{len(started)}", pbx.address[1],
                                                                     url)), *extra])
                started.append((name, node))
                return node

            def measure(k: int, flip: tuple[UdpPeer, Serving, UdpPeer] | None = None) -> None:
                samples, flipped = rounds(a, acl, per, flip)
                latency[k] += samples
                medians[k].append(statistics.median(samples) * 1000)
                flips.extend(flipped)

            try:
                a = start("A", pbx_a, "--seed", str(DEMO_SEED))
                lists = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
                acl = api(a, "GET", f"{lists}.json")["ip_access_control_lists"][0]["sid"]
                rounds(a, acl, 5)  # (warm-up: connections, first compiles)
                for _ in range(args.blocks):
                    measure(1)
                    b = start("B", pbx_b)
                    measure(2, (peer, b, pbx_b))
                    c = start("C", pbx_c)
                    measure(3)
                    c.stop()  # (a clean stop: A no longer counts it)
                    b.stop()
            finally:
                for _, node in reversed(started):
                    node.stop()
                # What the nodes warned about (a write that hit the 5 s
                # bound names the laggard): printed, and counted below.
                warnings = [f"node {name}: {line}" for name, node in started for line in node.log
                            if " WARNING " in line or " ERROR " in line]
                for line in warnings:
                    print(line, end="", file=sys.stderr)
    finally:
        cluster.destroy()
    bounded = sum("not yet enforcing" in line for line in warnings)
    pg_version = subprocess.run([str(cluster.bindir / "postgres"), "--version"], capture_output=True,
                                text=True).stdout.strip()
    rows = []
    for k, samples in latency.items():
        ms = [s * 1000 for s in samples]
        rows.append(f"| {k} | {len(ms)} | {statistics.median(ms):.1f} ms | {percentile(ms, 0.99):.1f} ms "
                    f"| {max(ms):.1f} ms | {' / '.join(f'{m:.1f}' for m in medians[k])} ms "
                    f"| {statistics.median(medians[k]) / statistics.median(medians[1]):.2f} |\n")
    ms = [s * 1000 for s, _ in flips]
    first = sum(1 for _, probes in flips if probes == 1)
    report = (
        f"\n## {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())} — change -> enforcement across nodes\n\n"
        f"`benchmarks/bench_nodes.py --rounds {args.rounds} --blocks {args.blocks}` on {platform.node()} ({os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, {pg_version}): "
        "`sipgate serve` nodes on one PostgreSQL, revision poll 60 s (NOTIFY only); an address added, then "
        "deleted, through node A's API, with A alone, then with B, then with B and C running (B and C stopped "
        f"cleanly after each block of {per} rounds; {args.blocks} blocks). A write's 2xx waits until every "
        "other node has it in force.\n\n"
        "API write latency at node A (request to 2xx, both writes of each round):\n\n"
        "| nodes | samples | p50 | p99 | max | p50 of each block | median of the block p50s, vs 1 node |\n"
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "".join(rows) +
        f"\nWrites answered at the 5 s bound (a node not yet enforcing them): {bounded}; warnings and errors "
        f"in the nodes' logs: {len(warnings)}.\n" +
        "\nWith two nodes, after each 2xx, INVITEs from the address to node B every 2 ms until B's verdict "
        "flips: time from A's 2xx to B's first flipped answer (a 403 is read after 0.5 ms of looking for a "
        "relay first), and how often the first INVITE already got the new verdict.\n\n"
        "| samples | p50 | p99 | max | flipped at the first INVITE |\n| ---: | ---: | ---: | ---: | ---: |\n"
        f"| {len(ms)} | {statistics.median(ms):.1f} ms | {percentile(ms, 0.99):.1f} ms | {max(ms):.1f} ms "
        f"| {first} of {len(flips)} |\n")
    print(report)
    if args.results != "-":
        with open(args.results, "a") as fh:
            fh.write(report)
    subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
