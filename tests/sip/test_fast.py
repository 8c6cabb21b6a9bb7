"""The fast path (sipgate.sip.fast) against the full parser: same verdict, same bytes, or it declines.

The full path (parse -> decide -> build_response) is the reference.  Every
datagram here goes through two edges that differ only in ``fast_path``;
what they send (bytes and destination) and what they count must be equal.
The datagrams are realistic INVITEs and ACKs varied by Hypothesis in every
way the scanner has to get right or decline: header name case and compact
forms, display names, parameters, whitespace, duplicates, missing headers,
Content-Length, line ends, and raw byte mutations.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from helpers import ACL_SID, ALLOWED, DEMO_DOMAIN, DENIED, TRUNK_SID, demo_table, examples, request, table
from sipgate.config import Listener, SipConfig
from sipgate.sip import SipParseError, derive_to_tag, parse, parse_via
from sipgate.sip.fast import BRANCH, CALL_ID, CSEQ_NUMBER, FROM_TAG, HOST, RPORT, TO_TAG, VIA_PORT, scan
from sipgate.sip.proxy import via_branch
from sipgate.transport import Edge, EdgeProtocol

PBX = ("127.0.0.1", 5070)


class Recorder:
    """A transport that records what would be sent (both edges get one)."""

    max_size = 65535

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple]] = []

    def sendto(self, data: bytes, addr: tuple) -> None:
        self.sent.append((data, addr))


# The demo trunk, whose list also admits ::1: IPv6 callers on both paths.
TABLE = table([(TRUNK_SID, DEMO_DOMAIN, [(ACL_SID, [f"{ALLOWED}/32", "::1/128"])])])


def make(fast: bool, tbl=None, host: str = "127.0.0.1", pbx: tuple[str, int] = PBX,
         **overrides) -> tuple[EdgeProtocol, Recorder]:
    listener = Listener(host=host, port=5060, default_trunk=DEMO_DOMAIN)
    sip = replace(SipConfig(listen=(listener,), pbx=pbx, secret="test-secret"), **overrides)
    edge = Edge(sip)
    edge.fast_path = fast
    edge.install(tbl or TABLE)
    proto = EdgeProtocol(edge, listener)
    rec = Recorder()
    proto.connection_made(rec)  # type: ignore[arg-type]
    return proto, rec


EDGES = {fast: make(fast) for fast in (True, False)}
# The same on an IPv6 listener in front of an IPv6 PBX.
PBX6 = ("::1", 5070)
EDGES6 = {fast: make(fast, host="::1", pbx=PBX6) for fast in (True, False)}
NO_LIST = table([("TK" + "2" * 32, DEMO_DOMAIN, [])])


def outcome(fast: bool, data: bytes, source: tuple[str, int], edges=EDGES):
    proto, rec = edges[fast]
    rec.sent.clear()
    stats = proto.edge.stats
    before = dict(stats.decisions), stats.parse_errors, stats.internal_errors
    proto.datagram_received(data, source)
    assert stats.internal_errors == before[2]
    decisions = {k: v - before[0].get(k, 0) for k, v in stats.decisions.items() if v != before[0].get(k, 0)}
    return list(rec.sent), decisions, stats.parse_errors - before[1]


def same(data: bytes, source: tuple[str, int] = (DENIED, 5080), edges=EDGES) -> list:
    fast = outcome(True, data, source, edges)
    full = outcome(False, data, source, edges)
    unwrapped = source[0].removeprefix("::ffff:")
    if data[:4] == b"ACK " and unwrapped != "127.0.0.1" and \
            not edges[True][0].edge.table.any_trunk.contains(unwrapped):
        # The one designed difference: an ACK from a source no trunk admits
        # is dropped unparsed and counted as drop/forbidden, whatever it is.
        # The full path drops it too (an ACK is never answered), for a
        # reason it works out.
        assert fast == ([], {("drop", "forbidden"): 1}, 0), data
        assert full[0] == [] and len(full[1]) == 1 and next(iter(full[1]))[0] == "drop", data
        return []
    assert fast == full, data
    return fast[0]


# -- the scanner reads what the full parser reads ----------------------------

def test_scan_reads_the_same_fields_as_the_parser():
    data = request(rport=True, branch="z9hG4bK-abc", call_id="c-1@h", from_tag="ft", cseq=42)
    s = scan(data)
    msg = parse(data)
    assert s is not None
    assert s[HOST] == msg.request_uri.host and s[CALL_ID].decode() == msg.call_id
    assert s[FROM_TAG].decode() == msg.from_tag and s[TO_TAG] is None and msg.to_tag is None
    assert s[BRANCH].decode() == msg.top_via.branch and s[VIA_PORT] == msg.top_via.port == 5080
    assert s[RPORT] == b"" and s[CSEQ_NUMBER] == 42  # rport present, without a value


def test_scan_hands_a_proxy_require_to_the_full_path():
    # (which answers 420 where it would relay; any case of the name)
    for name in ("Proxy-Require", "proxy-require", "PROXY-REQUIRE"):
        assert scan(request(extra=[f"{name}: foo"])) is None
    assert scan(request(extra=["Proxy-Requires: foo", "Require: foo"])) is not None


def test_denied_invite_is_answered_by_the_fast_path_with_the_full_paths_bytes():
    data = request()
    sent = same(data)
    assert len(sent) == 1 and sent[0][0].startswith(b"SIP/2.0 403 Forbidden\r\n")
    assert sent[0][1] == (DENIED, 5080)
    msg = parse(sent[0][0])
    assert msg.to_tag == derive_to_tag(parse(data), b"test-secret")
    # And the fast path really took it: with the parser broken it still answers.
    proto, rec = make(True)
    import sipgate.transport.udp as udp
    real = udp.parse
    udp.parse = None  # type: ignore[assignment]
    try:
        rec.sent.clear()
        proto.datagram_received(data, (DENIED, 5080))
        assert rec.sent == sent and proto.edge.stats.internal_errors == 0
    finally:
        udp.parse = real


def test_ipv6_callers_take_the_fast_path_when_their_via_names_them():
    """A Via sent-by "[::1]" from ::1: answered (denied) or relayed (admitted)
    without the full parser, with its bytes.  Any other IPv6 reference, even
    a valid one, goes to the full parser, which checks the literal."""
    import sipgate.transport.udp as udp

    forbidden = table([(TRUNK_SID, DEMO_DOMAIN, [(ACL_SID, [f"{ALLOWED}/32"])])])
    refusing = {fast: make(fast, forbidden) for fast in (True, False)}
    denied = request(via_host="[::1]:5080", call_id="v6-denied")
    admitted = request(via_host="[::1]:5080", call_id="v6-admitted", rport=True)
    answered = same(denied, ("::1", 5080), refusing)
    relayed = same(admitted, ("::1", 5080))
    assert answered[0][0].startswith(b"SIP/2.0 403 Forbidden\r\n") and answered[0][1] == ("::1", 5080)
    assert relayed[0][1] == PBX
    assert b"Via: SIP/2.0/UDP [::1]:5080;branch=z9hG4bK-test-1;rport=5080;received=::1\r\n" in relayed[0][0]
    real = udp.parse
    udp.parse = None  # type: ignore[assignment]
    try:
        for tbl, data, expected in ((forbidden, denied, answered), (None, admitted, relayed)):
            proto, rec = make(True, tbl)
            proto.datagram_received(data, ("::1", 5080))
            assert rec.sent == expected and proto.edge.stats.internal_errors == 0
        # Not the source's own text (the same address written another way, a
        # malformed literal, another address): the full parser's, here broken.
        for via_host in ("[0:0::1]:5080", "[1::2::3]", "[::2]"):
            proto, rec = make(True, forbidden)
            proto.datagram_received(request(via_host=via_host, call_id="v6-x"), ("::1", 5080))
            assert rec.sent == [] and proto.edge.stats.internal_errors == 1, via_host
    finally:
        udp.parse = real
    for via_host in ("[0:0::1]:5080", "[1::2::3]", "[::2]"):
        same(request(via_host=via_host, call_id="v6-x"), ("::1", 5080), refusing)


def test_responses_to_ipv6_callers_take_the_fast_path():
    """On an IPv6 listener: the PBX's responses to a caller whose Via is
    "[::1]:5080" (with sipgate's stamp "rport=5081;received=::1", or a
    bracketed received) go back without the full parser, with its bytes and
    to its destination.  A malformed literal in the next hop's sent-by (the
    full parser drops such a response) or an empty bracketed received go to
    the full parser."""
    import sipgate.transport.udp as udp

    def response_for(next_hop: str) -> bytes:
        return (f"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP [::1]:5060;branch=z9hG4bKours, {next_hop}\r\n"
                "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: v6r\r\nCSeq: 1 INVITE\r\n"
                "Content-Length: 0\r\n\r\n").encode()

    taken = {"SIP/2.0/UDP [::1]:5080;branch=z9hG4bK-1;rport=5081;received=::1": ("::1", 5081),
             "SIP/2.0/UDP [2001:DB8::7];branch=z9hG4bK-1": ("2001:db8::7", 5060),
             "SIP/2.0/UDP [::1]:5080;branch=z9hG4bK-1;received=[::2]": ("::2", 5080),
             "SIP/2.0/UDP 192.0.2.1:5080;branch=z9hG4bK-1;rport=5081;received=2001:db8::9": ("2001:db8::9", 5081)}
    declined = ["SIP/2.0/UDP [1::2::3]:5080;branch=z9hG4bK-1", "SIP/2.0/UDP [1.2.3.4];branch=z9hG4bK-1",
                "SIP/2.0/UDP [::1]:5080;branch=z9hG4bK-1;received=[]"]
    expected = {}
    for hop, dest in taken.items():
        expected[hop] = same(response_for(hop), PBX6, EDGES6)
        assert [d for _, d in expected[hop]] == [dest] and b"z9hG4bKours" not in expected[hop][0][0], hop
    for hop in declined:
        same(response_for(hop), PBX6, EDGES6)
    real = udp.parse
    udp.parse = None  # type: ignore[assignment]
    try:
        for hop in taken:
            proto, rec = make(True, host="::1", pbx=PBX6)
            proto.datagram_received(response_for(hop), PBX6)
            assert rec.sent == expected[hop] and proto.edge.stats.internal_errors == 0, hop
        for hop in declined:
            proto, rec = make(True, host="::1", pbx=PBX6)
            proto.datagram_received(response_for(hop), PBX6)
            assert rec.sent == [] and proto.edge.stats.internal_errors == 1, hop
    finally:
        udp.parse = real


def test_trunk_without_lists_gets_its_own_warning():
    edges = {fast: make(fast, NO_LIST) for fast in (True, False)}
    sent = same(request(), edges=edges)
    assert b'Warning: 399 sipgate "the trunk has no IP access control list"' in sent[0][0]


def test_ack_of_our_403_is_absorbed_and_any_ack_from_an_unadmitted_source_dropped():
    sent = same(request())
    tag = parse(sent[0][0]).to_tag
    ack = request("ACK", to_tag=tag, max_forwards=70)
    assert same(ack) == []
    # From the admitted source, the ACK of a 403 it got (e.g. Max-Forwards 0) is absorbed too.
    assert same(request("ACK", to_tag=tag), (ALLOWED, 5080)) == []
    assert same(request("ACK", to_tag="someone-else"), (DENIED, 5080)) == []
    # In-dialog ACK from the admitted source: relayed by the full path, in both.
    relayed = same(request("ACK", to_tag="pbx-tag"), (ALLOWED, 5080))
    assert relayed and relayed[0][1] == PBX


@pytest.mark.parametrize("data", [
    request(),
    request(rport=True),
    request(via_host="127.0.0.3"),
    request(max_forwards=0),
    request(max_forwards=None),
    request(ruri="sip:100@127.0.0.1"),  # an IP literal: the listener's default trunk
    request(ruri="sip:100@unknown.example"),  # no such trunk: 404 by the full path
    request(ruri="sip:100@DEMO.SIPGATE.TEST:5060;transport=udp"),
    request(to_tag="x"),  # in-dialog
    request("OPTIONS"),
    request(extra=["Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-2"]),
    request(extra=["v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK-2, SIP/2.0/UDP 10.0.0.2"]),
    request(extra=["CSeq: 2 INVITE"]),
    request(extra=["cseq: 1 INVITE"]),
    request(extra=["Bad Name: x"]),
    request(extra=["X-\xe9: x"]),
    request(cseq_method="ACK"),
    request(cseq=2**31),
    request(body=b"v=0\r\n"),
])
@pytest.mark.parametrize("source", [(DENIED, 5080), (ALLOWED, 5080), ("127.0.0.1", 5070)])
def test_examples_agree(data, source):
    same(data, source)


# -- Hypothesis: every variation agrees --------------------------------------

def pick(valid: list[str], odd: list[str]) -> st.SearchStrategy[str]:
    """Mostly a form the scanner accepts, sometimes one it must decline (or get right).

    (Hypothesis favours boundary integers, so the odd branch is a narrow
    band in the middle of the range.)"""
    return st.integers(0, 39).flatmap(lambda k: st.sampled_from(odd if 17 <= k <= 18 else valid))


NAME_FORMS = {
    "Via": (["Via", "via", "VIA", "v", "V", "vIa"], ["Via ", "Vi a"]),
    "From": (["From", "from", "f", "F", "FROM"], ["From\t"]),
    "To": (["To", "to", "t", "T", "TO"], ["T o"]),
    "Call-ID": (["Call-ID", "call-id", "i", "I", "Call-Id"], ["Call-ID "]),
    "CSeq": (["CSeq", "cseq", "CSEQ"], ["C\xe9eq"]),
    "Max-Forwards": (["Max-Forwards", "max-forwards"], ["Max-Forwards "]),
    "Content-Length": (["Content-Length", "l", "content-length"], ["Content Length"]),
}
DISPLAY = pick(['', '"Carrier" ', 'Carrier ', '"a>b" ', 'A B ', '"x"', ' ', '"\xfc" '],
               ['"Ca\\"rrier" ', '"unterminated ', 'a"b ', 'a>b '])
PARAM = pick([";tag=abc", ";TAG=Q1", ";tag", ";x=1", ";user=phone", ";tag=1;tag=2"],
             [";tag=", "; tag=s", ";tag=a b", ";tag=\"q\"", ";tag=a,b"])
PARAMS = st.lists(PARAM, max_size=3).map("".join)
URI = pick(["sip:+1555@carrier.example", "sip:a@b", "tel:+1555", "sip:a@[::1]", "sips:x@y;transport=tls"],
           ["sip:a b@c", "<sip:x>", "1sip:x", ""])
SEP = pick([": "] * 6 + [":", ":  ", ":\t", ": \t"], [" : ", " :"])


@st.composite
def name_addr(draw) -> str:
    if draw(st.integers(0, 39)) != 20:
        return draw(DISPLAY) + "<" + draw(URI) + ">" + draw(PARAMS)
    return draw(URI) + draw(PARAMS)  # addr-spec: the full parser's business


@st.composite
def via(draw) -> str:
    host = draw(pick(["127.0.0.3", "127.0.0.3:5080", "127.0.0.2:5080", "127.0.0.2", "host.example:65535", "a-b.example",
                      "[::1]:5080", "[::1]"],
                     ["host.example:99999", "[::1]:5060", "h_1", "127.0.0.3 :5080", "x.", "[::FFFF:127.0.0.3]:5080",
                      "[0:0::1]", "[1::2::3]", "[::1", "[zz::1]", "[]", "[::1]:", "[::1] :5080"]))
    params = [draw(pick([";branch=z9hG4bK-1", ";branch=z9hG4bK-2", ";BRANCH=z9hG4bKx"], [";branch=old", ""]))]
    params += draw(st.lists(pick([";branch=z9hG4bK-1", ";rport", ";rport=5", ";received=1.2.3.4",
                                  ";received=127.0.0.2", ";branch", ";BRANCH=Z", ";ttl=1"],
                                 ["; branch=x", ";branch=a,b", ";branch=", ";=x"]), max_size=3))
    params = draw(st.permutations(params))
    proto = draw(pick(["SIP/2.0/UDP "], ["SIP/2.0/udp ", "SIP / 2.0 / UDP ", "SIP/2.0/TCP ", "SIP/2.0/UDP  "]))
    return proto + host + "".join(params)


@st.composite
def message(draw) -> bytes:
    method = draw(pick(["INVITE", "INVITE", "ACK", "BYE", "CANCEL"], ["OPTIONS", "invite", "REGISTER"]))
    host = draw(pick([DEMO_DOMAIN, DEMO_DOMAIN.upper(), "127.0.0.1", "other.example", DEMO_DOMAIN + ":5060"],
                     ["[::1]", DEMO_DOMAIN + ":70000", DEMO_DOMAIN + ".", "demo_x"]))
    user = draw(pick(["+15551234567@", "", "a;b=c@"], ["a%41@", "u:pw@", "a@b@", "%zz@"]))
    uri_params = draw(pick(["", ";transport=udp", ";lr"], [";x=%20", ";", "?h=v"]))
    start = draw(pick([f"{method} sip:{user}{host}{uri_params} SIP/2.0"],
                      [f"{method}  sip:{user}{host} SIP/2.0", f"{method} sip:{user}{host} SIP/2.1",
                       f"{method} sip:{user}{host} sip/2.0", f"{method} sip:{user}{host} SIP/2.0 "]))
    cseq_n = draw(pick(["1", "0001", "2147483647"], ["2147483648", "x", "99999999999", ""]))
    cseq_m = draw(pick([method], ["INVITE", "ACK", "invite"]))
    fields = [
        ("Via", draw(via())),
        ("From", draw(name_addr())),
        ("To", draw(name_addr())),
        ("Call-ID", draw(st.sampled_from(["c1@h", "c2", "\xe9t\xe9", "a b"]))),
        ("CSeq", draw(pick([f"{cseq_n} {cseq_m}", f"{cseq_n}\t{cseq_m}", f"{cseq_n}  {cseq_m}"],
                           [f"{cseq_n}{cseq_m}", f" {cseq_n} {cseq_m} x"]))),
        ("Max-Forwards", draw(pick(["70", "0", "00"], ["x", "", "-1", "12345678901"]))),
        ("Content-Length", draw(pick(["0", "00"], ["5", "", "-1", "x"]))),
    ]
    lines = []
    for name, value in fields:
        if draw(st.integers(0, 59)) == 30:
            continue  # missing
        valid_forms, odd_forms = NAME_FORMS[name]
        form = draw(pick(valid_forms, odd_forms))
        lines.append(form + draw(SEP) + value)
        if draw(st.integers(0, 39)) == 20:  # a duplicate, mostly equal
            lines.append(form + ": " + draw(pick([value], [value + "x", draw(via())])))
    lines += draw(st.lists(pick(["Contact: <sip:a@b>", "User-Agent: x", "X-Y:", "Allow: INVITE, ACK", "Subject: a:b",
                                 *ROUTES, "Record-Route: <sip:p1.example;lr>",
                                 "Record-Route: <sip:p2.example;lr>, <sip:p3.example;lr>"],
                                ["Bad Name: 1", " folded", "NoColon", "\tfolded", "X\x00: 1", "A\rB: 1"]),
                           max_size=3))
    order = draw(st.permutations(lines))
    eol = draw(pick(["\r\n"], ["\n", "\r"]))
    body = draw(pick(["", "v=0\r\n"], ["hello", "\r\n"]))
    return (eol.join([start, *order]) + eol + eol + body).encode("utf-8", "surrogateescape")


ROUTES = [f"Route: <sip:127.0.0.1:5060;lr;sgt={TRUNK_SID}>", "Route: <sip:127.0.0.1:5060;lr>",
          "Route: <sip:127.0.0.1;lr;sgt=TKnone>", "Route: <sip:other.example;lr>",
          f"Route: <sip:127.0.0.1:5060;lr;sgt={TRUNK_SID}>, <sip:10.0.0.9;lr>", "route: <sip:127.0.0.1;lr>;x=1",
          f"Route: <sip:127.0.0.1:5060;lr;sgt={TRUNK_SID}>"]


# The Via below ours in a response: the caller's as sipgate relayed it.
NEXT_HOPS = (["Via: SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bK-1;received=127.0.0.2;rport=5081",
              "Via: SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bK-1",
              "Via: SIP/2.0/UDP 127.0.0.3:5080;branch=z9hG4bK-1;rport",
              "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;received=127.0.0.1",
              "Via: SIP/2.0/UDP Host.Example;branch=z9hG4bK-1;rport=99999"],
             ["Via: SIP/2.0/UDP 127.0.0.2:5080;received=;branch=x", "Via: SIP/2.0/UDP [::1]:5080",
              "Via: SIP/2.0/UDP 127.0.0.2, SIP/2.0/UDP 127.0.0.4", "Via: SIP/2.0/UDP 127.0.0.2:0"])
# IPv6 callers: sent-by a reference (valid or not), received an IPv6
# address (with brackets or without, as sipgate's stamp writes it).
NEXT_HOPS6 = (["Via: SIP/2.0/UDP [::1]:5080;branch=z9hG4bK-1",
               "Via: SIP/2.0/UDP [::1]:5080;branch=z9hG4bK-1;rport=5081;received=::1",
               "Via: SIP/2.0/UDP [2001:DB8::1];branch=z9hG4bK-1;received=[::1]",
               "Via: SIP/2.0/UDP [::FFFF:127.0.0.2]:5080;branch=z9hG4bK-1;rport",
               "Via: SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bK-1;rport=5081;received=::1"],
              ["Via: SIP/2.0/UDP [1::2::3]:5080;branch=z9hG4bK-1", "Via: SIP/2.0/UDP [1.2.3.4];branch=z9hG4bK-1",
               "Via: SIP/2.0/UDP [::1]:5080;branch=z9hG4bK-1;received=[]", "Via: SIP/2.0/UDP [::1;branch=z9hG4bK-1",
               "Via: SIP/2.0/UDP [::1]:5080;branch=z9hG4bK-1;received=[::1", "Via: SIP/2.0/UDP []:5080",
               "Via: SIP/2.0/UDP [::1]:5080;branch=z9hG4bK-1;received=::1;x=<y>",
               "Via: SIP/2.0/UDP [ff02::1]:5080;branch=z9hG4bK-1"])


@st.composite
def response(draw, ours_host: str = "127.0.0.1", ipv6: bool = False) -> bytes:
    """A response coming back through sipgate: our Via on top (mostly);
    ``ours_host``: sipgate's sent-by host; ``ipv6``: IPv6 next hops too."""
    status = draw(pick(["100 Trying", "200 OK", "180 Ringing", "486 Busy Here"],
                       ["200", "200  OK", "700 Bad", "200 OK ", "099 x"]))
    ours = draw(pick([f"Via: SIP/2.0/UDP {ours_host}:5060;branch=z9hG4bKabc",
                      f"Via: SIP/2.0/UDP {ours_host}:5060;branch=z9hG4bKabc;received=127.0.0.1"],
                     [f"Via: SIP/2.0/UDP {ours_host}:5061;branch=z9hG4bKabc", f"Via: SIP/2.0/UDP {ours_host};branch=z9",
                      "Via: SIP/2.0/UDP other.example:5060;branch=z9", f"Via:SIP/2.0/UDP {ours_host}:5060"]))
    if ipv6:
        ours = ours.replace("received=127.0.0.1", draw(st.sampled_from(["received=::1", "received=[::1]",
                                                                         "received=127.0.0.1"])))
    hops = (NEXT_HOPS[0] + NEXT_HOPS6[0], NEXT_HOPS[1] + NEXT_HOPS6[1]) if ipv6 else NEXT_HOPS
    nxt = draw(pick(*hops))
    if draw(st.booleans()):
        # The branch sipgate really gave the request below (proxy.via_branch):
        # only such a response from outside is relayed to the PBX.
        try:
            real = via_branch(parse_via(nxt[4:].split(",")[0]), b"test-secret")
        except SipParseError:
            real = None
        if real is not None:
            ours = ours.replace("z9hG4bKabc", real)
    shape = draw(pick(["lines", "joined", "joined3"], ["swapped", "ours only", "joined empty"]))
    if shape == "lines":
        lines = [ours, nxt]
    elif shape == "joined":  # SIPp's uas writes every Via on one line
        lines = [ours + draw(st.sampled_from([", ", ",", " , "])) + nxt[5:], "X-Filler: 1"]
    elif shape == "joined3":
        lines = [ours + ", " + nxt[5:] + ", SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-9", "X-Filler: 1"]
    elif shape == "swapped":
        lines = [nxt, ours]
    elif shape == "ours only":
        lines = [ours, "X-Filler: 1"]
    else:
        lines = [ours + ",, " + nxt[5:], "X-Filler: 1"]
    lines += [draw(pick(["From: <sip:a@b>;tag=1"], ["From:  <sip:a@b>", "From: <sip:a@b> "])),
              "To: <sip:c@d>;tag=2",
              draw(pick(["Call-ID: c1"], ["Call-ID:", "Call-ID: c1\tx "])),
              draw(pick(["CSeq: 1 INVITE", "CSeq: 2 BYE"], ["CSeq: x INVITE", "CSeq: 1"])),
              *draw(st.lists(pick(["Contact: <sip:pbx@127.0.0.1:5070>", "Record-Route: <sip:127.0.0.1:5060;lr>",
                                   "Server: pbx", "Max-Forwards: 70"],
                                  ["X:", "Bad Name: 1", "Max-Forwards: x"]), max_size=3)),
              draw(pick(["Content-Length: 0", "Content-Length:   0", "l:0", "Content-Length: 0 "],
                        ["Content-Length: 3", "Content-Length: x"]))]
    order = draw(st.permutations(lines[2:]))
    body = draw(pick([""], ["abc", "abcdef"]))
    return ("\r\n".join([f"SIP/2.0 {status}", *lines[:2], *order]) + "\r\n\r\n" + body).encode()


SOURCES = st.sampled_from([(DENIED, 5080), (ALLOWED, 5080), (ALLOWED, 5080), ("127.0.0.1", 5070),
                           ("::ffff:127.0.0.3", 1), ("::1", 5080)])
SOURCES6 = st.sampled_from([PBX6, PBX6, ("::1", 5080), ("::2", 5080), (ALLOWED, 5080)])


@settings(max_examples=examples(1200), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message(), SOURCES)
@example(request(), (DENIED, 5080))
@example(request(via_host="[::1]:5080"), ("::1", 5080))
@example(request(via_host="[1::2::3]"), ("::1", 5080))  # (a 400 from the full parser)
@example(request(via_host="[0:0::1]", rport=True), ("::1", 5080))
def test_generated_messages_agree(data, source):
    s = scan(data)
    event("declined" if s is None else "scanned, relayed" if outcome(True, data, source)[0][:1] and
          outcome(True, data, source)[0][0][1] == PBX else "scanned")
    same(data, source)


@settings(max_examples=examples(800), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response(), SOURCES)
def test_generated_responses_agree(data, source):
    from sipgate.sip.fast import relay_response_bytes

    event("relayed by the fast path" if relay_response_bytes(data) is not None else "declined")
    same(data, source)


@settings(max_examples=examples(800), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response("[::1]", ipv6=True), SOURCES6)
@example(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP [::1]:5060;branch=z9hG4bKabc\r\n"
         b"Via: SIP/2.0/UDP [::1]:5080;branch=z9hG4bK-1;rport=5081;received=::1\r\n"
         b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
         b"Content-Length: 0\r\n\r\n", PBX6)
def test_generated_responses_agree_on_an_ipv6_listener(data, source):
    """Responses back to IPv6 callers (and IPv4 ones) through an IPv6
    listener: sipgate's Via "[::1]:5060" on top, bracketed next hops and
    IPv6 received values, valid or not."""
    from sipgate.sip.fast import relay_response_bytes

    event("relayed by the fast path" if relay_response_bytes(data) is not None else "declined")
    same(data, source, EDGES6)


@settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(response(ipv6=True), SOURCES)
def test_ipv6_next_hops_agree_on_an_ipv4_listener(data, source):
    same(data, source)


@settings(max_examples=examples(400), deadline=None)
@given(st.integers(0, 10_000), st.binary(min_size=1, max_size=3), st.sampled_from(["replace", "insert", "delete"]),
       SOURCES)
def test_mutated_invites_agree(position, chunk, how, source):
    base = request(rport=True)
    i = position % len(base)
    if how == "replace":
        data = base[:i] + chunk + base[i + len(chunk):]
    elif how == "insert":
        data = base[:i] + chunk + base[i:]
    else:
        data = base[:i] + base[i + len(chunk):]
    same(data, source)


def test_the_fast_path_takes_most_generated_denied_invites():
    """Not a correctness property: a guard that the scanner is not declining everything."""
    taken = 0
    proto, rec = make(True)
    import sipgate.transport.udp as udp
    real = udp.parse

    def refuse(*a, **k):
        raise AssertionError("full parser used")

    udp.parse = refuse  # type: ignore[assignment]
    try:
        for i in range(50):
            rec.sent.clear()
            proto.datagram_received(request(call_id=f"c{i}", from_tag=f"t{i}", rport=bool(i % 2)), (DENIED, 5080))
            taken += len(rec.sent)
    finally:
        udp.parse = real
    assert taken == 50 and proto.edge.stats.internal_errors == 0


@pytest.mark.parametrize("method", ["INVITE", "ACK"])
def test_a_request_with_no_room_for_sipgates_via_is_not_relayed(method):
    """A relay adds a Via: a request that already has max_vias (70) Via
    values would leave with more than any sipgate (and the relay's own
    response path) accepts.  It gets 483 Too Many Hops (an ACK nothing);
    one Via fewer is relayed.  Both paths agree, from either side."""
    def with_vias(n: int, **kw) -> bytes:
        extra = [f"Via: SIP/2.0/UDP 10.0.{k // 250}.{k % 250};branch=z9hG4bK{k}" for k in range(n - 1)]
        return request(method, to_tag="t1" if method == "ACK" else None, extra=extra, **kw)

    sent, decisions, _ = outcome(True, with_vias(69), (ALLOWED, 5080))
    assert [dest for _, dest in sent] == [PBX] and sent[0][0].count(b"\r\nVia: ") == 70
    same(with_vias(69), (ALLOWED, 5080))
    same(with_vias(70), (ALLOWED, 5080))
    for path in (True, False):
        sent, decisions, _ = outcome(path, with_vias(70), (ALLOWED, 5080))
        if method == "ACK":
            assert sent == [] and decisions == {("drop", "too_many_hops"): 1}
        else:
            assert [dest for _, dest in sent] == [(ALLOWED, 5080)] and decisions == {("reject", "too_many_hops"): 1}
            assert sent[0][0].startswith(b"SIP/2.0 483 Too Many Hops\r\n")
    # From the PBX, outwards: the same limit.
    outward = with_vias(70, ruri="sip:bob@127.0.0.2:5080", via_host="127.0.0.1:5070")
    sent, decisions, _ = outcome(False, outward, PBX)
    if method == "ACK":
        assert sent == [] and decisions == {}
    else:
        assert [(out[:27], dest) for out, dest in sent] == [(b"SIP/2.0 483 Too Many Hops\r\n", PBX)]


def test_admitted_calls_are_relayed_by_the_fast_path():
    """INVITE relayed with Record-Route, the PBX's responses relayed back,
    ACK/BYE routed in-dialog: all without the full parser, and each the
    bytes the full path writes (compared in the same test)."""
    import sipgate.transport.udp as udp

    invite = request(rport=True, call_id="adm-1")
    relayed = same(invite, (ALLOWED, 5080))
    assert relayed[0][1] == PBX and b"Record-Route: <sip:127.0.0.1:5060;lr;sgt=" in relayed[0][0]
    inner = parse(relayed[0][0])
    ours_via = inner.values("via")[0]
    ok = (f"SIP/2.0 200 OK\r\nVia: {ours_via}\r\nVia: {inner.values('via')[1]}\r\n"
          f"Record-Route: <sip:127.0.0.1:5060;lr;sgt={TRUNK_SID}>\r\nFrom: {inner.first('from')}\r\n"
          f"To: {inner.first('to')};tag=pbx\r\nCall-ID: adm-1\r\nCSeq: 1 INVITE\r\n"
          "Contact: <sip:pbx@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n").encode()
    back = same(ok, PBX)
    assert back[0][1] == (ALLOWED, 5080) and b"Via: SIP/2.0/UDP 127.0.0.1:5060" not in back[0][0]
    route = [f"<sip:127.0.0.1:5060;lr;sgt={TRUNK_SID}>"]
    ack = request("ACK", ruri="sip:pbx@127.0.0.1:5070", to_tag="pbx", call_id="adm-1", routes=route)
    bye = request("BYE", ruri="sip:pbx@127.0.0.1:5070", to_tag="pbx", call_id="adm-1", cseq=2, routes=route)
    for msg in (ack, bye):
        out = same(msg, (ALLOWED, 5080))
        assert out[0][1] == PBX and b"Route:" not in out[0][0]
    proto, rec = make(True)
    real = udp.parse
    udp.parse = None  # type: ignore[assignment]
    try:
        for msg, source in ((invite, (ALLOWED, 5080)), (ok, PBX), (ack, (ALLOWED, 5080)), (bye, (ALLOWED, 5080))):
            rec.sent.clear()
            proto.datagram_received(msg, source)
            assert len(rec.sent) == 1 and proto.edge.stats.internal_errors == 0, msg
    finally:
        udp.parse = real


@st.composite
def normal_request(draw) -> bytes:
    """An admitted request in the form the full path renders back ("Name:
    value" lines), so relay_request_bytes takes its splice (sipgate.sip.fast
    ._splice): every combination of our Route popped or not, Record-Route
    lines before ours, Max-Forwards and Content-Length present or not, and
    header order."""
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "CANCEL"]))
    in_dialog = method in ("ACK", "BYE") or draw(st.booleans())
    ruri = "sip:pbx@127.0.0.1:5070" if in_dialog and draw(st.booleans()) else f"sip:+1555@{DEMO_DOMAIN}"
    lines = [f"Via: SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bK-{draw(st.integers(0, 9))}"
             + draw(st.sampled_from(["", ";rport", ";rport=7", ";received=10.0.0.1"])),
             'From: "A" <sip:a@b>;tag=f1', "To: <sip:c@d>" + (";tag=pbx" if in_dialog else ""),
             "Call-ID: n1@h", f"CSeq: 3 {method}"]
    if draw(st.booleans()):
        lines.append("Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-below")
    if draw(st.booleans()):
        lines.append("Max-Forwards: " + draw(st.sampled_from(["70", "1", "0"])))
    body = draw(st.sampled_from(["", "v=0\r\n"]))
    if draw(st.booleans()):
        lines.append(f"Content-Length: {len(body)}")
    routes = draw(st.lists(st.sampled_from(ROUTES[:4] + ["Route: <sip:10.0.0.8;lr>"]), max_size=2))
    lines += routes
    lines += draw(st.lists(st.sampled_from(["Record-Route: <sip:p1.example;lr>", "Record-Route: <sip:p2.example>",
                                            "Contact: <sip:a@127.0.0.2:5080>", "Subject: x y"]), max_size=3))
    order = draw(st.permutations(lines))
    return ("\r\n".join([f"{method} {ruri} SIP/2.0", *order]) + "\r\n\r\n" + body).encode()


@settings(max_examples=examples(800), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(normal_request())
def test_relays_of_normal_form_requests_agree(data):
    out = same(data, (ALLOWED, 5080))
    event("relayed" if out and out[0][1] == PBX else "other")


def test_in_dialog_requests_follow_the_table_and_hosts_in_force():
    """The fast path keeps what it read of sipgate's Route (per Route value)
    and the trunk its sgt= names (per table): a new table that drops the
    trunk, or moves the source out of it, and a new own-host set take
    effect on the next request, as on the full path."""
    from sipgate.sip import fast as fast_module

    proto, rec = make(True)
    route = [f"<sip:127.0.0.1:5060;lr;sgt={TRUNK_SID}>"]
    bye = request("BYE", ruri="sip:pbx@127.0.0.1:5070", to_tag="pbx", call_id="dlg-1", cseq=2, routes=route)

    def relayed() -> bool:
        rec.sent.clear()
        proto.datagram_received(bye, (ALLOWED, 5080))
        return bool(rec.sent) and rec.sent[-1][1] == PBX

    assert relayed() and relayed()  # (the second from what the first kept)
    proto.edge.install(table([("TK" + "9" * 32, DEMO_DOMAIN, [("AL" + "9" * 32, [f"{ALLOWED}/32"])])], 2))
    assert not relayed()  # the sgt= trunk is gone
    proto.edge.install(table([(TRUNK_SID, DEMO_DOMAIN, [("AL" + "9" * 32, ["10.9.9.9/32"])])], 3))
    assert not relayed()  # the trunk no longer admits the source
    proto.edge.install(demo_table())
    assert relayed()
    # The same Route read again by another listener, for which 127.0.0.1 is
    # not its own: not sipgate's Route there, so nothing to pop.
    other = Listener(host="127.0.0.9", port=5060, default_trunk=DEMO_DOMAIN)
    away = EdgeProtocol(proto.edge, other)
    away.connection_made(rec)  # type: ignore[arg-type]
    s = scan(bye)
    assert fast_module.sipgate_route(s, proto.ctx.own_hosts) == (True, TRUNK_SID.encode())
    assert fast_module.sipgate_route(s, away.ctx.own_hosts) == (False, None)


def test_the_route_cache_is_bounded():
    from sipgate.sip import fast as fast_module

    for i in range(fast_module._ROUTES_MAX + 10):
        s = scan(request("BYE", ruri="sip:pbx@127.0.0.1:5070", to_tag="pbx", routes=[f"<sip:10.0.{i // 256}.{i % 256};lr>"]))
        assert fast_module.sipgate_route(s, frozenset({"127.0.0.1"})) == (False, None)
    assert 0 < len(fast_module._ROUTES) <= fast_module._ROUTES_MAX


def _c_walk():
    try:
        from sipgate.sip import _walk
    except ImportError:
        return None
    from sipgate.sip import fast as fast_module
    return fast_module.configure_walks(_walk)


@settings(max_examples=examples(600), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(normal_request(), st.sampled_from([None, b"<sip:127.0.0.1:5060;lr;sgt=TK1>"]), st.booleans(),
       st.sampled_from([b"", b";received=10.9.9.9", b";rport=5081;received=10.9.9.9"]))
def test_the_c_splice_writes_the_python_splices_bytes(data, record_route, pop_route, stamp):
    """sipgate/sip/_walk.c's splice (the compiled build's relay of a request
    in rendered form) against fast._splice: every Record-Route and Route
    placement, Max-Forwards and Content-Length present or not, a body."""
    walk = _c_walk()
    if walk is None:
        pytest.skip("sipgate/sip/_walk.c is not built")
    from sipgate.sip import fast as fast_module

    s = fast_module._scan(data, fast_module.DEFAULT_LIMITS)
    if s is None or s[fast_module.AT] is None:
        event("not spliced")
        return
    event("spliced")
    end = s[fast_module.END]
    body = data[end + 4:]
    if s[fast_module.CONTENT_LENGTH] is not None:
        body = body[:s[fast_module.CONTENT_LENGTH]]
    ours = b"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKours"
    stamped = s[fast_module.VIAS][0] + stamp
    expected = fast_module._splice(s, data[:end].split(b"\r\n"), s[fast_module.AT], body, ours, stamped,
                                   record_route, pop_route)
    assert walk.splice(data, s, ours, stamped, record_route, pop_route) == expected
