"""The benchmark's capture analysis (benchmarks/bench_sip.py): bursts and
per-Call-ID latencies read from a pcap file written here byte by byte."""

import struct
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_sip  # noqa: E402


def reference_places(arrivals: list[float], gap: float) -> list[int]:
    """Place in burst, the slow way: count back while the gaps stay short."""
    out = []
    for i in range(len(arrivals)):
        k = i
        while k > 0 and arrivals[k] - arrivals[k - 1] < gap:
            k -= 1
        out.append(i - k)
    return out


@given(st.lists(st.integers(0, 200), max_size=60))
def test_burst_places_match_the_reference(gaps_us):
    arrivals, t = [], 1000.0
    for g in gaps_us:
        t += g * 1e-6
        arrivals.append(t)
    assert bench_sip.burst_places(arrivals) == reference_places(arrivals, bench_sip.BURST_GAP)


def udp_packet(ts: float, sport: int, dport: int, payload: bytes) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + 8 + len(payload), 0, 0, 64, 17, 0,
                     bytes([127, 0, 0, 3]), bytes([127, 0, 0, 1]))
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0)
    frame = b"\0" * 12 + b"\x08\x00" + ip + udp + payload  # Ethernet (linktype 1)
    sec = int(ts)
    return struct.pack("<IIII", sec, round((ts - sec) * 1e6), len(frame), len(frame)) + frame


def test_capture_latencies_pairs_invite_and_403_by_call_id(tmp_path):
    def invite(cid: str) -> bytes:
        return f"INVITE sip:x@t0 SIP/2.0\r\nCall-ID: {cid}\r\n\r\n".encode()

    def forbidden(cid: str) -> bytes:
        return f"SIP/2.0 403 Forbidden\r\nCall-ID: {cid}\r\n\r\n".encode()

    packets = [  # a burst of 3, answered together, then one alone; c9 never answered
        (10.000000, 5061, 5060, invite("c1")), (10.000010, 5061, 5060, invite("c2")),
        (10.000020, 5061, 5060, invite("c3")),
        (10.000100, 5060, 5061, forbidden("c1")), (10.000101, 5060, 5061, forbidden("c2")),
        (10.000102, 5060, 5061, forbidden("c3")), (10.000150, 5060, 5061, forbidden("c1")),
        (10.001000, 5061, 5060, invite("c4")), (10.001060, 5060, 5061, forbidden("c4")),
        (10.002000, 5061, 5060, invite("c9")),
    ]
    pcap = tmp_path / "cap.pcap"
    pcap.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 2048, 1)
                     + b"".join(udp_packet(*p) for p in packets))
    got = bench_sip.capture_latencies(pcap, 5060, 5070, "denied")
    assert got["n"] == 4 and got["requests"] == 5
    assert sorted((place, round(us)) for place, us in got["placed"]) == [(0, 60), (0, 100), (1, 91), (2, 82)]
    assert round(got["p50"]) == 91 and round(got["p99"]) == 100
    places = bench_sip.by_place(got["placed"])
    assert places["1st"][0] == 0.5 and round(places["1st"][2]) == 100
    assert places["5th+"] == (0.0, None, None)
