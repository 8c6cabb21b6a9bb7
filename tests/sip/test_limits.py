"""Size limits (sipgate.sip.limits.SipLimits): the status each one gets, on both paths.

| limit | default | over it |
| --- | --- | --- |
| datagram (sip.max_datagram) | 65535 | 513 Message Too Large |
| header lines (max_headers) | 256 | dropped (counted as a parse error) |
| Via values (max_vias) | 70 | dropped: a reply would copy every Via |
| one header/start line (max_header_line) | 8192 bytes | 513 Message Too Large |
| Request-URI (max_uri) | 4096 bytes | 414 Request-URI Too Long |

A status is answered only when a response can be built and would not
itself copy an over-long line or too many Vias.  The fast path declines
whatever is over a limit, so the verdict is the full parser's, and an edge
with the fast path and one without send the same bytes.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from helpers import DEMO_DOMAIN, DENIED, demo_table, request
from sipgate.config import Listener, SipConfig
from sipgate.sip import DEFAULT_LIMITS, SipLimits, SipParseError, parse
from sipgate.sip.fast import relay_response_bytes, scan
from sipgate.transport import Edge, EdgeProtocol

SMALL = SipLimits(max_headers=20, max_vias=4, max_header_line=300, max_uri=100)


class Recorder:
    max_size = 65535

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple]] = []

    def sendto(self, data: bytes, addr: tuple) -> None:
        self.sent.append((data, addr))


def edge_pair(limits: SipLimits | None = None, **overrides):
    pair = []
    for fast in (True, False):
        listener = Listener(host="127.0.0.1", port=5060, default_trunk=DEMO_DOMAIN)
        config = replace(SipConfig(listen=(listener,), pbx=("127.0.0.1", 5070), secret="s"), **overrides)
        edge = Edge(config if limits is None else replace(config, limits=limits))
        edge.fast_path = fast
        edge.install(demo_table())
        proto = EdgeProtocol(edge, listener)
        rec = Recorder()
        proto.connection_made(rec)  # type: ignore[arg-type]
        pair.append((proto, rec))
    return pair


def verdict(data: bytes, limits: SipLimits | None = None, **overrides) -> str:
    """What both edges (fast path on and off) do with ``data`` from the
    denied source: the status sent, or "drop"; they must agree."""
    results = []
    for proto, rec in edge_pair(limits, **overrides):
        proto.datagram_received(data, (DENIED, 5080))
        assert proto.edge.stats.internal_errors == 0
        results.append(rec.sent)
    assert results[0] == results[1]
    sent = results[0]
    assert len(sent) <= 1
    return sent[0][0].split(b" ", 2)[1].decode() if sent else "drop"


def with_extra(*lines: str, **kw) -> bytes:
    return request(extra=lines, rport=True, **kw)


def test_defaults_and_validation():
    assert (DEFAULT_LIMITS.max_headers, DEFAULT_LIMITS.max_vias, DEFAULT_LIMITS.max_header_line,
            DEFAULT_LIMITS.max_uri) == (256, 70, 8192, 4096)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError):
            SipLimits(max_vias=bad)  # type: ignore[arg-type]


def test_datagram_size_is_513():
    data = with_extra("X-Pad: " + "p" * 700)
    assert verdict(data) == "403"
    assert verdict(data, max_datagram=600) == "513"


def header_lines(data: bytes) -> int:
    return len(data.split(b"\r\n\r\n")[0].split(b"\r\n")) - 1


BASE = header_lines(with_extra())


def test_header_count():
    at = with_extra(*(f"X-H{i}: v" for i in range(20 - BASE)))
    assert header_lines(at) == 20
    assert verdict(at, SMALL) == "403"
    over = with_extra(*(f"X-H{i}: v" for i in range(21 - BASE)))
    assert verdict(over, SMALL) == "drop"
    with pytest.raises(SipParseError) as err:
        parse(over, limits=SMALL)
    assert err.value.status == 513 and err.value.partial is None and err.value.unanswerable
    # The default: 256 lines pass, 257 do not.
    assert verdict(with_extra(*(f"X-H{i}: v" for i in range(256 - BASE)))) == "403"
    assert verdict(with_extra(*(f"X-H{i}: v" for i in range(257 - BASE)))) == "drop"


def test_via_count():
    def vias(n: int, joined: bool = False) -> bytes:
        lower = [f"SIP/2.0/UDP 10.0.0.{i};branch=z9hG4bK{i}" for i in range(n - 1)]
        extra = (", ".join(lower),) if joined and lower else tuple(f"Via: {v}" for v in lower)
        return with_extra(*extra)

    assert verdict(vias(4), SMALL) == "403"
    assert verdict(vias(5), SMALL) == "drop"
    assert verdict(vias(4, joined=True).replace(b"\r\nSIP/2.0", b"\r\nVia: SIP/2.0"), SMALL) == "403"
    assert verdict(vias(5, joined=True).replace(b"\r\nSIP/2.0", b"\r\nVia: SIP/2.0"), SMALL) == "drop"
    with pytest.raises(SipParseError) as err:
        parse(vias(5), limits=SMALL)
    assert err.value.status == 513 and err.value.partial is None
    assert verdict(vias(70)) == "403" and verdict(vias(71)) == "drop"


def test_header_line_length():
    line = "X-Long: " + "x" * (300 - 8)
    assert verdict(with_extra(line), SMALL) == "403"
    assert verdict(with_extra(line + "x"), SMALL) == "513"
    with pytest.raises(SipParseError) as err:
        parse(with_extra(line + "x"), limits=SMALL)
    assert err.value.status == 513 and err.value.partial is not None
    # Over-long in a header a reply copies: no reply (it would reflect it).
    assert verdict(request(call_id="c" * 400, rport=True), SMALL) == "drop"
    # The default, 8 KiB; counted in bytes, not characters.
    assert verdict(with_extra("X-Long: " + "é" * 4092)) == "403"
    assert verdict(with_extra("X-Long: " + "é" * 4093)) == "513"


def test_a_folded_header_counts_its_lines_together():
    """Unfolded, as a relay or a reply writes it, a folded header is one
    line: over the limit together, it is over the limit, though each of
    its lines is under it (found by test_mutated_invites: a Call-ID folded
    over two 5,008-byte lines was relayed as one 10,040-byte line)."""
    half = "x" * (150 - 1)
    assert verdict(with_extra("X-Long: " + half[:140], " " + half), SMALL) == "403"  # (8 + 140 + 150 = 298)
    assert verdict(with_extra("X-Long: " + half[:143], "\t" + half), SMALL) == "513"  # (301)
    with pytest.raises(SipParseError) as err:
        parse(with_extra("X-Long: " + half[:143], " " + half), limits=SMALL)
    assert err.value.status == 513 and err.value.partial is not None
    # An admitted caller's folded header, together under the default limit, is relayed unfolded and parses.
    data = with_extra("X-Long: " + "y" * 5000, " " + "z" * 3000)
    relayed = []
    for proto, rec in edge_pair():
        proto.datagram_received(data, ("127.0.0.2", 5080))
        assert [dest for _, dest in rec.sent] == [("127.0.0.1", 5070)]
        relayed.append(parse(rec.sent[0][0]).first("x-long"))
    assert relayed == ["y" * 5000 + " " + "z" * 3000] * 2
    over = with_extra("X-Long: " + "y" * 5000, " " + "z" * 3200)
    assert verdict(over) == "513"


def test_request_uri_length():
    def ruri(n: int) -> bytes:
        user = "u" * (n - len(f"sip:@{DEMO_DOMAIN}"))
        return request(ruri=f"sip:{user}@{DEMO_DOMAIN}", rport=True)

    assert verdict(ruri(100), SMALL) == "403"
    assert verdict(ruri(101), SMALL) == "414"
    with pytest.raises(SipParseError) as err:
        parse(ruri(101), limits=SMALL)
    assert err.value.status == 414 and err.value.reason == "Request-URI Too Long"
    assert verdict(ruri(4096)) == "403"
    assert verdict(ruri(4097)) == "414"
    # The 414 wins over the line length when the URI is what is long.
    assert verdict(ruri(9000)) == "414"


def test_fast_path_declines_over_every_limit():
    good = with_extra()
    assert scan(good, SMALL) is not None
    assert scan(with_extra(*(f"X-H{i}: v" for i in range(20 - BASE))), SMALL) is not None
    assert scan(with_extra(*(f"X-H{i}: v" for i in range(21 - BASE))), SMALL) is None
    assert scan(with_extra("X-Long: " + "x" * 300), SMALL) is None
    assert scan(request(ruri=f"sip:{'u' * 100}@{DEMO_DOMAIN}"), SMALL) is None
    assert scan(with_extra(*(f"Via: SIP/2.0/UDP 10.0.0.{i};branch=z9hG4bK{i}" for i in range(4))), SMALL) is None
    response = (b"SIP/2.0 200 OK\r\n" + b"".join(b"Via: SIP/2.0/UDP 10.0.0.%d;branch=z9hG4bK%d\r\n" % (i, i)
                                                  for i in range(5))
                + b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n\r\n")
    assert relay_response_bytes(response) is not None
    assert relay_response_bytes(response, SMALL) is None


def test_reconfigure_takes_new_limits_on_the_fast_path():
    """A SIGHUP with new [sip] limits (Edge.reconfigure) holds for the fast
    path too, which keeps them in the form the C walk takes."""
    over = with_extra(*(f"X-H{i}: v" for i in range(21 - BASE)))
    (proto, rec), _full_path = edge_pair()
    edge = proto.edge
    assert edge.fast_path
    proto.datagram_received(over, (DENIED, 5080))
    assert rec.sent[-1][0].startswith(b"SIP/2.0 403 ")
    edge.reconfigure(replace(edge.config, limits=SMALL))
    proto.reconfigure()
    before = len(rec.sent)
    proto.datagram_received(over, (DENIED, 5080))
    assert len(rec.sent) == before  # (over SMALL's header count: dropped, as verdict() finds)
    assert edge.stats.internal_errors == 0
