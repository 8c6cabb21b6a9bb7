"""RFC 4475 torture messages (tests/torture/*.sip) through a real edge on loopback sockets.

The TABLE says, for each message of RFC 4475 section 3, what sipgate does
with it and why.  The demo trunk's domain is demo.sipgate.test and none of
the messages is addressed to it, so a message that parses and is judged by
the trunk rule gets 404 from any source; each of those is also sent
*retargeted* (its Request-URI host replaced by the demo domain), and then
the trunk rule decides by the source: 403 from the denied source, relayed
to the PBX (or, for OPTIONS, answered 200 at the edge) from the admitted
one.

Outcomes: "404"/"400"/... a response with that status to the sender;
"drop" nothing at all; "relay" the request reaches the PBX; "200" an
OPTIONS answered by sipgate.  After every message a good INVITE must still
get its answer (no stall), and the edge never counts an internal error.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import ALLOWED, DEMO_DOMAIN, DENIED, UdpPeer, request
from sipgate.sip import Request, parse

TORTURE = Path(__file__).resolve().parent / "torture"

# name: (RFC 4475 section, as sent: outcome from any source, retargeted from the admitted source, why)
TABLE: dict[str, tuple[str, str, str | None, str]] = {
    # 3.1.1 valid messages: parsed and judged by the trunk rule.
    "wsinv": ("3.1.1.1", "404", "relay",
              "folding, LWS around every separator, compact forms, leading zeros: all parsed"),
    "intmeth": ("3.1.1.2", "404", "relay",
                "token method, odd URI and NUL/BEL/DEL as quoted-pairs: a NUL is accepted only inside a "
                "quoted string (parser fix)"),
    "esc01": ("3.1.1.3", "404", "relay", "%-escapes are not unescaped by the edge; the host decides"),
    "escnull": ("3.1.1.4", "404", "relay", "%00 in user parts is text, not a NUL"),
    "esc02": ("3.1.1.5", "404", "relay", "RE%47IST%45R is an unknown method, not REGISTER; relayed as such"),
    "lwsdisp": ("3.1.1.6", "404", "200", "display name without LWS before <: accepted"),
    "longreq": ("3.1.1.7", "404", "relay", "34 Vias and long values: within the limits (70 Vias, 8 KiB lines)"),
    "dblreq": ("3.1.1.8", "404", "relay", "octets after Content-Length are discarded (§18.3): never relayed"),
    "semiuri": ("3.1.1.9", "404", "200", "';' and an escaped '@' in the user part: the host is after the last '@'"),
    "transports": ("3.1.1.10", "404", "200", "SCTP/TLS/UNKNOWN transports in lower Vias are not sipgate's concern"),
    "mpart01": ("3.1.1.11", "404", "relay", "binary body with NULs framed by Content-Length"),
    "unreason": ("3.1.1.12", "drop", None, "a response from outside whose top Via is not sipgate's: not ours"),
    "noreason": ("3.1.1.13", "drop", None, "a response from outside whose top Via is not sipgate's: not ours"),
    # 3.1.2 invalid messages.
    "badinv01": ("3.1.2.1", "drop", None,
                 "empty Via parameters: the top Via does not parse, so no response can be routed (the request "
                 "is counted as a parse error, not as judged)"),
    "clerr": ("3.1.2.2", "400", None, "body shorter than Content-Length over UDP (§18.3)"),
    "ncl": ("3.1.2.3", "400", None, "negative Content-Length"),
    "scalar02": ("3.1.2.4", "400", None, "CSeq number over 2**31-1 (the 400 is built from the raw CSeq)"),
    "scalarlg": ("3.1.2.5", "drop", None, "a malformed response is never answered"),
    "quotbal": ("3.1.2.6", "400", None, "unterminated quoted string in To: 400, To copied as received"),
    "ltgtruri": ("3.1.2.7", "400", None, "<> around the Request-URI"),
    "lwsruri": ("3.1.2.8", "400", None, "LWS inside the Request-URI: 400 built from the loosely read request line"),
    "lwsstart": ("3.1.2.9", "404", "relay",
                 "extra SP between request-line elements tolerated; the relayed line has single SPs"),
    "trws": ("3.1.2.10", "404", "200", "trailing SP after SIP/2.0 tolerated"),
    "escruri": ("3.1.2.11", "400", None,
                "a headers component in the Request-URI is refused (it would be relayed to the PBX)"),
    "baddate": ("3.1.2.12", "404", "relay", "the Date header is not sipgate's business"),
    "regbadct": ("3.1.2.13", "404", "relay", "Contact is the registrar's business, passed on unchanged"),
    "badaspec": ("3.1.2.14", "404", "200", "spaces inside <> tolerated in To"),
    "baddn": ("3.1.2.15", "400", None, "unquoted non-token display names are refused, never passed on"),
    "badvers": ("3.1.2.16", "505", None, "SIP/7.0"),
    "mismatch01": ("3.1.2.17", "400", None, "CSeq method differs from the request method"),
    "mismatch02": ("3.1.2.18", "400", None, "unknown method and CSeq mismatch: 400 (the RFC allows it)"),
    "bigcode": ("3.1.2.19", "drop", None, "status code over 699: a malformed response is dropped"),
    # 3.2 transaction layer.
    "badbranch": ("3.2.1", "404", "200", "branch is just the magic cookie: still parsed"),
    # 3.3 application layer.
    "insuf": ("3.3.1", "drop", None, "no From, To or Call-ID: no response can be built"),
    "unkscm": ("3.3.2", "416", None, "Request-URI scheme is not sip/sips"),
    "novelsc": ("3.3.3", "416", None, "Request-URI scheme is not sip/sips"),
    "unksm2": ("3.3.4", "404", "relay", "non-SIP URIs in To/From/Contact are only carried"),
    "bext01": ("3.3.5", "404", "420", "Proxy-Require names extensions no proxy supports: 420 Bad Extension"),
    "invut": ("3.3.6", "404", "relay", "an unknown body type is the PBX's business"),
    "regaut01": ("3.3.7", "404", "relay", "an unknown authorization scheme is the PBX's business"),
    "multi01": ("3.3.8", "400", None, "conflicting CSeq/Call-ID/To/From/Max-Forwards"),
    "mcl01": ("3.3.9", "400", None, "conflicting Content-Length headers"),
    "bcast": ("3.3.10", "drop", None, "a response from outside whose top Via is not sipgate's"),
    "zeromf": ("3.3.11", "404", "200", "Max-Forwards 0 on an OPTIONS that sipgate answers itself"),
    "cparam01": ("3.3.12", "404", "relay", "Contact parameters are the registrar's business"),
    "cparam02": ("3.3.13", "404", "relay", "Contact parameters are the registrar's business"),
    "regescrt": ("3.3.14", "404", "relay", "escaped headers in a Contact URI are the registrar's business"),
    "sdp01": ("3.3.15", "404", "relay", "an unacceptable Accept is the PBX's business"),
    # 3.4 backward compatibility.
    "inv2543": ("3.4.1", "404", "relay", "RFC 2543 request (no branch, no Max-Forwards): relayed with a 2543 branch"),
}

MESSAGES = {path.stem: path.read_bytes() for path in sorted(TORTURE.glob("*.sip"))}


def retarget(data: bytes) -> bytes:
    """``data`` with the Request-URI host replaced by the demo domain."""
    line, sep, rest = data.partition(b"\r\n")
    uri = line.split()[1]
    scheme, _, tail = uri.partition(b":")
    at = tail.rfind(b"@")
    m = re.match(rb"[^;?:>]+", tail[at + 1:])
    assert m is not None
    new = scheme + b":" + tail[:at + 1] + DEMO_DOMAIN.encode() + tail[at + 1 + m.end():]
    return line.replace(uri, new, 1) + sep + rest


def status(data: bytes) -> str:
    return data.split(b" ", 2)[1].decode()


def test_table_covers_every_message_of_section_3():
    assert set(MESSAGES) == set(TABLE)
    assert len(TABLE) == 49  # 13 + 19 valid/invalid, 1 transaction, 15 application, 1 compatibility


def sentinel(n: int) -> bytes:
    """A good INVITE for a domain no trunk has: 404 from anyone, to its
    source port (rport)."""
    return request(ruri="sip:probe@nowhere.example", call_id=f"sentinel-{n}@127.0.0.9", branch=f"z9hG4bK-s{n}",
                   rport=True)


class Sender:
    """A source address with a socket on port 5060 (sends, and gets the
    replies to a Via without a port or with 5060, RFC 3261 §18.2.2) and one
    on 5050 (quotbal's Via port)."""

    def __init__(self, host: str) -> None:
        self.main = UdpPeer(host, 5060)
        self.other = UdpPeer(host, 5050)

    def close(self) -> None:
        self.main.close()
        self.other.close()


@pytest.fixture
def senders():
    made = [Sender(DENIED), Sender(ALLOWED)]
    yield made
    for sender in made:
        sender.close()


def exchange(edge, sender: Sender, pbx, data: bytes, n: int) -> tuple[bytes | None, bool]:
    """Send ``data`` then a sentinel INVITE from ``sender``: (the reply to
    ``data`` or None, whether something reached the PBX).  Datagrams on one
    loopback path arrive in order and the edge handles them one by one, so
    the sentinel's 404 arriving first means ``data`` got no reply (on that
    socket)."""
    peer = sender.main
    peer.send(data, edge.address)
    peer.send(sentinel(n), edge.address)
    first = peer.recv()[0]
    reply = None
    if f"sentinel-{n}@".encode() not in first:
        reply = first
        second = peer.recv()[0]
        assert f"sentinel-{n}@".encode() in second and status(second) == "404"
    else:
        assert status(first) == "404"
        if b":5050;" in data:
            reply = maybe(sender.other, 0.3)
    return reply, not pbx.nothing(0.05)


def maybe(peer: UdpPeer, timeout: float) -> bytes | None:
    """The next datagram within ``timeout``, or None."""
    try:
        return peer.recv(timeout)[0]
    except TimeoutError:
        return None


@pytest.mark.parametrize("name", sorted(TABLE))
def test_torture_message_as_sent(name, edge, senders, pbx):
    section, expected, _, why = TABLE[name]
    data = MESSAGES[name]
    for n, sender in enumerate(senders):
        reply, relayed = exchange(edge, sender, pbx, data, n)
        assert not relayed, f"{name}: reached the PBX"
        if expected == "drop":
            assert reply is None, f"{name} ({section}): expected no reply ({why}), got {reply[:60]!r}"
        else:
            assert reply is not None, f"{name} ({section}): expected {expected} ({why}), got nothing"
            # (The reply copies the request's Via/From/To/Call-ID/CSeq as
            # received, so it is not always itself well formed: scalar02.)
            assert reply.startswith(b"SIP/2.0 ") and status(reply) == expected, (name, reply[:80])
            assert b"\r\nWarning: 399 sipgate " in reply or expected == "404"
    stats = edge.stats
    assert stats.internal_errors == 0


RETARGETED = sorted(name for name, row in TABLE.items() if row[2] is not None)


@pytest.mark.parametrize("name", RETARGETED)
def test_torture_message_for_the_demo_trunk(name, edge, senders, pbx):
    section, _, expected, why = TABLE[name]
    data = retarget(MESSAGES[name])
    original = parse(MESSAGES[name])
    assert type(original) is Request
    denied, allowed = senders
    # The denied source: 403, whatever the message.
    reply, relayed = exchange(edge, denied, pbx, data, 0)
    assert not relayed and reply is not None and status(reply) == "403", (name, reply)
    # The admitted source: relayed, or answered at the edge (OPTIONS: 200;
    # Proxy-Require: 420 naming every option tag, RFC 3261 §16.3 step 5).
    allowed.main.send(data, edge.address)
    if expected in ("200", "420"):
        reply = allowed.main.recv()[0]
        assert status(reply) == expected
        if expected == "420":
            assert parse(reply).values("unsupported") == original.values("proxy-require")
        assert pbx.nothing(0.05)
    else:
        out = parse(pbx.recv()[0])
        assert type(out) is Request and out.method == original.method and out.call_id == original.call_id
        assert out.request_uri.host == DEMO_DOMAIN
        assert len(out.values("via")) == len(original.values("via")) + 1
        assert out.body == original.body
        if original.max_forwards is not None:
            assert out.max_forwards == original.max_forwards - 1
        if name == "dblreq":
            assert b"INVITE sip:joe" not in out.render()
        if name == "lwsstart":
            assert out.start_line() == f"INVITE sip:user@{DEMO_DOMAIN} SIP/2.0"
    assert edge.stats.internal_errors == 0


def test_good_invite_answered_after_all_of_them(edge, allowed, denied, pbx):
    for data in MESSAGES.values():
        denied.send(data, edge.address)
        allowed.send(data, edge.address)
    denied.send(request(call_id="after@127.0.0.3", rport=True), edge.address)
    while True:
        got = denied.recv()[0]
        if b"after@127.0.0.3" in got:
            break
    assert status(got) == "403"
    assert edge.stats.internal_errors == 0


def hostile_corpus() -> list[bytes]:
    """Hand-made hostile datagrams, all from a denied source's point of view."""
    good = request()
    edge_via = b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKforged"
    return [
        good.replace(b"\r\n", b"\n"),
        good.replace(b"test-carrier", b"test\x00carrier"),
        good.replace(b"test-carrier", b"\xff\xfe\xc3\x28"),
        good.replace(b"Via: ", b"Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKx\r\nVia: ", 1) * 1,
        good.replace(b"Via: ", b"".join(b"Via: SIP/2.0/UDP 10.0.0.%d;branch=z9hG4bK%d\r\n" % (i % 250, i)
                                        for i in range(100)) + b"Via: ", 1),
        good.replace(b"User-Agent: test-carrier", b"\r\n".join(b"X-H%d: v" % i for i in range(300))),
        good.replace(b"test-carrier", b"x" * 9000),
        good.replace(b"sip:+15551234567@", b"sip:" + b"9" * 5000 + b"@", 1),
        good.replace(DEMO_DOMAIN.encode(), b"[2001:db8::1]", 1),
        good.replace(DEMO_DOMAIN.encode(), b"[::ffff:127.0.0.2]", 1),
        good.replace(b"Content-Length: 0", b"Content-Length: 99999"),
        good.replace(b"Content-Length: 0", b"Content-Length: 0\r\nContent-Length: 5"),
        good.replace(b"Max-Forwards: 70", b"Max-Forwards: 0"),
        good.replace(b"INVITE sip", b"INVITE  sip"),
        good.replace(b"From:", b"From:\r\n "),
        retarget(MESSAGES["dblreq"]).replace(b"INVITE sip:joe@example.com", b"INVITE sip:joe@" + DEMO_DOMAIN.encode()),
        # Forged responses: sipgate's Via on top, the PBX (or an admitted peer) below.
        b"SIP/2.0 200 OK\r\nVia: " + edge_via + b"\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKpbx\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: f\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        b"SIP/2.0 180 Ringing\r\nVia: " + edge_via + b", SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bKa\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: f\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        b"ACK sip:x@" + DEMO_DOMAIN.encode() + b" SIP/2.0\r\n\r\n",
        b"\x00" * 100, b"SIP/2.0 200 OK\r\n\r\n", b"INVITE\r\n\r\n", b" \r\n", b"",
    ]


def test_nothing_from_the_denied_source_reaches_the_pbx(make_edge, denied, allowed, pbx):
    """Every torture message (as sent and retargeted) and the hostile
    corpus, from the denied source; then one admitted INVITE as a marker:
    the PBX's first datagram must be that marker."""
    edge = make_edge()
    corpus = list(MESSAGES.values()) + [retarget(MESSAGES[n]) for n in RETARGETED] + hostile_corpus()
    for data in corpus:
        data = data.replace(b"127.0.0.1:5060", f"127.0.0.1:{edge.address[1]}".encode())
        denied.send(data.replace(b"127.0.0.1:5070", f"127.0.0.1:{pbx.address[1]}".encode()), edge.address)
    allowed.send(request(call_id="marker@127.0.0.2"), edge.address)
    first = pbx.recv()[0]
    assert b"marker@127.0.0.2" in first, first[:200]
    assert pbx.nothing(0.2)
    assert edge.stats.internal_errors == 0
