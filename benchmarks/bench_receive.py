"""Microbenchmark of the receive path: parse, decide, reply/relay, count.

Feeds a realistic INVITE straight into ``EdgeProtocol.datagram_received``
with a transport that only records what would be sent, so the figure is the
Python cost per datagram without the kernel, through the full parser and
through the fast path, each split into its parts.

    .venv/bin/python benchmarks/bench_receive.py [--entries 10,10000,1000000] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import random
import statistics
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sipgate.admission import AdmissionTable, Context, TrunkSource, decide, trunk_for_host  # noqa: E402
from sipgate.config import Listener, SipConfig  # noqa: E402
from sipgate.sip import build_response, derive_to_tag, parse  # noqa: E402
from sipgate.sip.fast import HOST, forbidden_response, scan  # noqa: E402
from sipgate.transport import Edge, EdgeProtocol  # noqa: E402

DOMAIN = "demo.sipgate.test"
SDP = (b"v=0\r\no=- 20518 0 IN IP4 203.0.113.10\r\ns=-\r\nc=IN IP4 203.0.113.10\r\nt=0 0\r\n"
       b"m=audio 16424 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
       b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n")
INVITE = (
    f"INVITE sip:+15551234567@{DOMAIN} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;rport\r\n"
    "Max-Forwards: 70\r\n"
    "Contact: <sip:+15557654321@127.0.0.2:5080;transport=udp>\r\n"
    f"To: <sip:+15551234567@{DOMAIN}>\r\n"
    "From: \"Carrier\" <sip:+15557654321@carrier.example>;tag=9fxced76sl\r\n"
    "Call-ID: 3848276298220188511@127.0.0.2\r\n"
    "CSeq: 1 INVITE\r\n"
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY\r\n"
    "Content-Type: application/sdp\r\n"
    "Supported: replaces, timer\r\n"
    "User-Agent: carrier-sbc/1.0\r\n"
    f"Content-Length: {len(SDP)}\r\n\r\n"
).encode() + SDP


class NullTransport:
    """Counts sends; the kernel is not part of this measurement."""

    max_size = 65535

    def __init__(self) -> None:
        self.sent = 0

    def sendto(self, data: bytes, addr: tuple) -> None:
        self.sent += 1


def build_table(entries: int) -> AdmissionTable:
    rng = random.Random(42)
    # Random /24 networks below 127/8 plus the one source the INVITE comes from.
    rows = [(f"IP{i:032x}", f"{rng.randrange(1, 127)}.{rng.randrange(256)}.{rng.randrange(256)}.0", 24) for i in range(entries - 1)]
    rows.append(("IP" + "f" * 32, "127.0.0.2", 32))
    acl = ("AL" + "1" * 32, "bench", tuple(rows))
    return AdmissionTable.compile(1, [TrunkSource("TK" + "1" * 32, "AC" + "0" * 32, DOMAIN, (acl,))])


def per_call(fn, number: int, repeat: int) -> float:
    """Median seconds per call over ``repeat`` runs of ``number`` calls."""
    return statistics.median(timeit.repeat(fn, number=number, repeat=repeat)) / number


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", default="10,10000,1000000")
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    args = ap.parse_args()
    number, repeat = (2000, 3) if args.quick else (20000, 7)
    sizes = [int(s) for s in args.entries.split(",")]

    print(f"# receive path microbenchmark — {datetime.date.today()} — Python {platform.python_version()} "
          f"on {platform.machine()} ({platform.processor() or platform.platform()})\n")
    print("Full path (the reference parser, `fast_path = False`) and fast path (`sipgate/sip/fast.py`), "
          "same edge, same INVITE.\n")
    print("| entries | full: parse | full: decide (deny) | full: build 403 | full: denied INVITE -> 403 "
          "| full: admitted INVITE -> relay | fast: scan | fast: trunk + lookup | fast: To-tag + 403 "
          "| fast: denied INVITE -> 403 | fast: its ACK | fast: admitted INVITE -> relay | metrics |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    ack = INVITE.replace(b"INVITE sip:", b"ACK sip:", 1).replace(b"CSeq: 1 INVITE", b"CSeq: 1 ACK")
    for n in sizes:
        table = build_table(n)
        ctx = Context(own_hosts=frozenset({"127.0.0.1"}), secret=b"bench")
        req = parse(INVITE)
        edge = Edge(SipConfig(listen=(Listener("127.0.0.1", 5060),), pbx=("127.0.0.1", 5070)))
        edge.install(table)
        proto = EdgeProtocol(edge, edge.config.listen[0])
        transport = NullTransport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        scanned = scan(INVITE)
        key = edge.tag_key
        extra = edge.forbidden_listed
        hist = edge.stats.latency

        def lookup() -> bool:
            trunk = trunk_for_host(scanned[HOST], table, ctx)
            return trunk.matcher.contains("127.0.0.3")

        def metrics() -> None:
            t = time.perf_counter()
            hist.observe(time.perf_counter() - t)

        edge.fast_path = False
        full = [
            per_call(lambda: parse(INVITE), number, repeat),
            per_call(lambda: decide(req, "127.0.0.3", table, ctx), number, repeat),
            per_call(lambda: build_response(req, 403, "Forbidden", to_tag=derive_to_tag(req, b"bench"),
                                            headers=[("Warning", "399 sipgate \"x\"")]), number, repeat),
            per_call(lambda: proto.datagram_received(INVITE, ("127.0.0.3", 5080)), number, repeat),
            per_call(lambda: proto.datagram_received(INVITE, ("127.0.0.2", 5080)), number, repeat),
        ]
        edge.fast_path = True
        fast = [
            per_call(lambda: scan(INVITE), number, repeat),
            per_call(lookup, number, repeat),
            per_call(lambda: forbidden_response(scanned, key, extra), number, repeat),
            per_call(lambda: proto.datagram_received(INVITE, ("127.0.0.3", 5080)), number, repeat),
            per_call(lambda: proto.datagram_received(ack, ("127.0.0.3", 5080)), number, repeat),
            per_call(lambda: proto.datagram_received(INVITE, ("127.0.0.2", 5080)), number, repeat),
            per_call(metrics, number, repeat),
        ]
        assert edge.stats.internal_errors == 0
        print(f"| {n:,} | " + " | ".join(f"{c * 1e6:.1f} µs" for c in full + fast) + " |")
    print("\nMedians of repeated timeit runs; the whole path (\"->\") includes metrics and the (null) send; "
          "\"metrics\" is the per-datagram histogram update with its two clock reads.")
    responses(number, repeat)


def relayed_ok(proto: EdgeProtocol, source: tuple[str, int]) -> bytes:
    """The PBX's 200 OK for INVITE relayed from ``source`` (through the full
    path, whatever the edge's setting): sipgate's Via on top of the caller's."""
    sent: list[bytes] = []

    class Keep(NullTransport):
        def sendto(self, data: bytes, addr: tuple) -> None:
            sent.append(data)

    invite = INVITE if ":" not in source[0] else INVITE.replace(b"127.0.0.2:5080", b"[::1]:5080")
    fast_path = proto.edge.fast_path
    proto.edge.fast_path = False
    proto.connection_made(Keep())  # type: ignore[arg-type]
    proto.datagram_received(invite, source)
    proto.edge.fast_path = fast_path
    relayed = parse(sent[-1])
    assert relayed.vias[1].host == source[0], relayed.vias
    return build_response(relayed, 200, "OK", to_tag="pbx", headers=[("Contact", "<sip:pbx@127.0.0.1:5070>")])


def responses(number: int, repeat: int) -> None:
    """The PBX's 200 OK relayed back to the caller, an IPv4 one and an IPv6
    one (Via sent-by "[::1]:5080", rport filled: "received=::1"), each on a
    listener of its family (the IPv6 PBX on a documentation address: ::1,
    the only IPv6 loopback address, is the caller's, and nothing is sent)."""
    print("\nResponses from the PBX relayed back to the caller (a 200 OK with sipgate's Via on top of the "
          "caller's, rport filled), full path and fast path, same edge.\n")
    print("| caller | full: 200 OK relayed | fast: 200 OK relayed | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for family, host, caller, pbx in (("IPv4", "127.0.0.1", ("127.0.0.2", 5080), ("127.0.0.1", 5070)),
                                      ("IPv6", "::1", ("::1", 5080), ("2001:db8::5", 5070))):
        edge = Edge(SipConfig(listen=(Listener(host, 5060),), pbx=pbx))
        edge.install(AdmissionTable.compile(1, [TrunkSource("TK" + "1" * 32, "AC" + "0" * 32, DOMAIN, (
            ("AL" + "1" * 32, "bench", (("IP" + "1" * 32, "127.0.0.2", 32), ("IP" + "2" * 32, "::1", 128))),))]))
        proto = EdgeProtocol(edge, edge.config.listen[0])
        ok = relayed_ok(proto, caller)
        transport = NullTransport()
        proto.connection_made(transport)  # type: ignore[arg-type]
        times = []
        for fast_path in (False, True):
            edge.fast_path = fast_path
            before = transport.sent
            times.append(per_call(lambda: proto.datagram_received(ok, pbx), number, repeat))
            assert transport.sent - before == number * repeat  # (every one relayed)
        assert edge.stats.internal_errors == 0
        print(f"| {family} | {times[0] * 1e6:.1f} µs | {times[1] * 1e6:.1f} µs | {times[1] / times[0]:.2f} |")

if __name__ == "__main__":
    main()
