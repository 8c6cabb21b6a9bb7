"""A denied INVITE through the real socket path, with cold caches.

At low rates the filter's core sleeps between datagrams, and what its
wake-up finds in the CPU's caches decides most of the latency ("Latency at
low rates" in benchmarks/README.md).  This measures the receive path as
the first datagram after an idle spell meets it: a client socket on
127.0.0.3 sends a denied INVITE to a ``SocketTransport`` on loopback, the
transport's reader callback is called (as the event loop would), and the
client reads the 403.  Before each round the script writes one byte per
64-byte line of a buffer larger than the last-level cache (``--evict-kib``,
64 MiB), which evicts the path's code and data.

    .venv/bin/python benchmarks/bench_cold.py [--rounds 300]
    .venv/bin/python benchmarks/bench_cold.py --cachegrind   # needs valgrind

The default prints p50 / p90 / p99 of the reader callback's time, warm
(no eviction) and cold.  ``--cachegrind`` runs the same rounds under
valgrind's cachegrind with a 16 MiB last-level cache simulated, twice
(0 and 40 rounds), and prints the difference per round: how many code and
data lines the path misses in the last-level cache, in all and by function.
Timings on a shared VM move with the host; the line counts do not, so
they compare builds exactly (the harness's own client socket calls are
part of both).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_receive import INVITE, build_table  # noqa: E402

from sipgate import native  # noqa: E402
from sipgate.config import Listener, SipConfig  # noqa: E402
from sipgate.transport import Edge, EdgeProtocol  # noqa: E402
from sipgate.transport.udp import SocketTransport  # noqa: E402

LL = "16777216,16,64"  # (the simulated last-level cache: 16 MiB, 16-way, 64-byte lines)


def rig(entries: int) -> tuple:
    """(one-round function, edge): the edge with a table of ``entries``
    that denies 127.0.0.3, its socket transport, and a client socket."""
    edge = Edge(SipConfig(listen=(Listener("127.0.0.1", 0),), pbx=("127.0.0.1", 5070)))
    edge.install(build_table(entries))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    protocol = EdgeProtocol(edge, edge.config.listen[0])
    loop = asyncio.new_event_loop()
    transport = SocketTransport(loop, sock, protocol)
    transport.start()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.3", 0))
    client.settimeout(2)
    port = client.getsockname()[1]
    # The INVITE from the client's own address, so the 403 comes back to it.
    data = INVITE.replace(b"127.0.0.2:5080;branch", b"127.0.0.3:%d;branch" % port, 1)
    dest = sock.getsockname()
    readable = transport.readable
    clock = time.perf_counter

    def one() -> float:
        client.sendto(data, dest)
        started = clock()
        readable()
        took = clock() - started
        reply = client.recv(65535)
        if not reply.startswith(b"SIP/2.0 403 "):
            raise SystemExit(f"expected a 403, got {reply[:40]!r}")
        return took

    return one, edge


def evictor(kib: int):
    junk = bytearray(kib << 10)
    ones = b"\1" * (len(junk) // 64)

    def evict() -> None:
        junk[::64] = ones
    return evict


def timings(args: argparse.Namespace) -> None:
    one, _edge = rig(args.entries)
    evict = evictor(args.evict_kib)
    for _ in range(20):
        one()
    print(f"{native.status()[1]}; {args.entries} entries; reader callback, µs ({args.rounds} rounds)")
    for label, cold in (("warm", False), ("cold", True), ("warm", False), ("cold", True)):
        times = []
        for _ in range(args.rounds):
            if cold:
                evict()
            times.append(one() * 1e6)
        times.sort()
        q = statistics.quantiles(times, n=100)
        print(f"  {label}: p50 {q[49]:.1f}  p90 {q[89]:.1f}  p99 {q[98]:.1f}")


def rounds_only(args: argparse.Namespace) -> None:
    """The body cachegrind runs: 3 warm-up rounds, then ``--rounds`` cold ones."""
    one, _edge = rig(args.entries)
    evict = evictor(args.evict_kib)
    for _ in range(3):
        one()
    for _ in range(args.rounds):
        evict()
        one()


def load(path: Path) -> tuple[list[str], dict[tuple[str, str], list[int]]]:
    """cachegrind's output: the event names and the counts per (file, function)."""
    events: list[str] = []
    per: dict[tuple[str, str], list[int]] = {}
    fl = fn = ""
    for line in path.read_text().splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("fl="):
            fl = line[3:].rsplit("/", 1)[-1]
        elif line.startswith("fn="):
            fn = line[3:]
        elif line[:1].isdigit():
            counts = per.setdefault((fl, fn), [0] * len(events))
            for i, v in enumerate(line.split()[1:]):
                counts[i] += int(v)
    return events, per


def cachegrind(args: argparse.Namespace) -> None:
    n = 40
    with tempfile.TemporaryDirectory(prefix="sipgate-cold-") as tmp:
        outs = []
        for rounds in (0, n):
            out = Path(tmp) / f"cg.{rounds}"
            cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=yes", f"--LL={LL}", f"--cachegrind-out-file={out}",
                   sys.executable, __file__, "--rounds-only", "--rounds", str(rounds), "--entries", str(args.entries),
                   "--evict-kib", str(args.evict_kib)]
            subprocess.run(cmd, check=True, capture_output=True, timeout=1800)
            outs.append(load(out))
    (events, base), (_, full) = outs
    at = {e: i for i, e in enumerate(events)}
    rows = []
    totals: collections.Counter[str] = collections.Counter()
    for key, counts in full.items():
        if key[1] in ("bytearray_ass_subscript", "__memcpy_avx_unaligned_erms"):
            continue  # (the eviction itself)
        before = base.get(key, [0] * len(events))
        d = {e: (counts[i] - before[i]) / n for e, i in at.items()}
        for e in ("ILmr", "DLmr", "DLmw", "Ir"):
            totals[e] += d[e]
        rows.append((d["ILmr"] + d["DLmr"] + d["DLmw"], d["ILmr"], key))
    print(f"{native.status()[1]}; {args.entries} entries; per denied INVITE, cold, last-level cache misses "
          f"(simulated {LL}):")
    print(f"  code lines {totals['ILmr']:.0f}, data lines read {totals['DLmr']:.0f}, written {totals['DLmw']:.0f}: "
          f"{totals['ILmr'] + totals['DLmr'] + totals['DLmw']:.0f} in all; {totals['Ir']:.0f} instructions")
    print("  top functions (lines missed, of them code):")
    for lines, code, (fl, fn) in sorted(rows, reverse=True)[:args.top]:
        print(f"    {lines:6.1f} {code:6.1f}  {fn} ({fl})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--evict-kib", type=int, default=65536)
    ap.add_argument("--cachegrind", action="store_true", help="count cache lines missed instead of timing")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--rounds-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rounds_only:
        rounds_only(args)
    elif args.cachegrind:
        cachegrind(args)
    else:
        timings(args)


if __name__ == "__main__":
    main()
