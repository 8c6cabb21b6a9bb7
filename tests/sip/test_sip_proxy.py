"""Stateless responses and RFC 3261 section 16 proxy transforms."""

from __future__ import annotations

from sip_samples import INVITE, RESPONSE_180
from sipgate.sip import (
    build_response,
    compute_branch,
    derive_to_tag,
    parse,
    relay_request,
    relay_response,
)

SECRET = b"k"
OUR_VIA = "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsg1"


def test_response_copies_headers_and_adds_to_tag():
    req = parse(INVITE)
    tag = derive_to_tag(req, SECRET)
    data = build_response(req, 403, "Forbidden", to_tag=tag, headers=[("Warning", '399 x "y"')])
    resp = parse(data)
    assert (resp.status, resp.reason) == (403, "Forbidden")
    assert resp.values("via") == req.values("via")
    assert resp.first("from") == req.first("from")
    assert resp.first("to") == req.first("to") + ";tag=" + tag
    assert resp.first("call-id") == req.first("call-id") and resp.first("cseq") == req.first("cseq")
    assert resp.first("warning") == '399 x "y"'
    assert data.endswith(b"Content-Length: 0\r\n\r\n")
    assert build_response(parse(INVITE), 403, "Forbidden", to_tag=tag,
                          headers=[("Warning", '399 x "y"')]) == data  # byte-identical


def test_existing_to_tag_is_kept():
    req = parse(INVITE.replace(b"To: <sip:+15551234567@demo.sipgate.test>",
                               b"To: <sip:+15551234567@demo.sipgate.test>;tag=abc"))
    assert parse(build_response(req, 481, "No", to_tag="zzz")).to_tag == "abc"


def test_to_tag_same_for_invite_and_its_ack_and_differs_per_call():
    invite = parse(INVITE)
    ack = parse(INVITE.replace(b"INVITE sip", b"ACK sip", 1).replace(b"CSeq: 314159 INVITE", b"CSeq: 314159 ACK"))
    assert derive_to_tag(invite, SECRET) == derive_to_tag(ack, SECRET)
    other = parse(INVITE.replace(b"a84b4c76e66710", b"b84b4c76e66710"))
    assert derive_to_tag(other, SECRET) != derive_to_tag(invite, SECRET)
    assert derive_to_tag(invite, b"other") != derive_to_tag(invite, SECRET)


def test_branch_rules():
    invite = parse(INVITE)
    cancel = parse(INVITE.replace(b"INVITE sip", b"CANCEL sip", 1).replace(b"314159 INVITE", b"314159 CANCEL"))
    b = compute_branch(invite, SECRET)
    assert b.startswith("z9hG4bK")
    assert compute_branch(parse(INVITE), SECRET) == b  # retransmission
    assert compute_branch(cancel, SECRET) == b  # CANCEL matches its INVITE (§9.1)
    other = parse(INVITE.replace(b"z9hG4bK776asdhds", b"z9hG4bK776other"))
    assert compute_branch(other, SECRET) != b
    legacy = parse(INVITE.replace(b"branch=z9hG4bK776asdhds", b"branch=1"))
    lb = compute_branch(legacy, SECRET)
    assert lb.startswith("z9hG4bK") and lb != b


def test_relay_request_transforms():
    req = parse(INVITE)
    out = parse(relay_request(req, via=OUR_VIA, source=("198.51.100.7", 40000),
                              record_route="<sip:192.0.2.1:5060;lr;sgt=TK1>"))
    assert out.headers[0][0] == "via" and out.vias[0].branch == "z9hG4bKsg1"
    theirs = out.vias[1]
    assert theirs.received == "198.51.100.7" and theirs.rport == "40000"  # RFC 3581
    assert out.max_forwards == 68
    assert out.values("record-route") == ["<sip:192.0.2.1:5060;lr;sgt=TK1>"]
    assert out.body == req.body and out.content_length == len(req.body)
    assert out.first("user-agent") == req.first("user-agent")


def test_relay_request_received_only_when_host_differs_and_route_pop():
    data = INVITE.replace(b";rport", b"").replace(
        b"Max-Forwards: 69\r\n", b"Route: <sip:192.0.2.1;lr>, <sip:10.0.0.9;lr>\r\n")
    req = parse(data)
    same = parse(relay_request(req, via=OUR_VIA, source=("203.0.113.10", 5060), pop_route=True))
    assert same.vias[1].received is None and same.vias[1].rport is None
    assert same.values("route") == ["<sip:10.0.0.9;lr>"]
    assert same.max_forwards == 70  # absent: inserted as 70 (§16.6 step 3)
    diff = parse(relay_request(req, via=OUR_VIA, source=("198.51.100.1", 5060)))
    assert diff.vias[1].received == "198.51.100.1"


def test_relay_response_pops_our_via_and_finds_next_hop():
    data, dest = relay_response(parse(RESPONSE_180))
    out = parse(data)
    assert len(out.vias) == 1 and out.top_via.branch == "z9hG4bK776asdhds"
    assert dest == ("203.0.113.99", 5062)  # received + rport
    assert relay_response(parse(data)) is None  # no Via left: drop
    v6 = RESPONSE_180.replace(b"SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK776asdhds;rport=5062;received=203.0.113.99",
                              b"SIP/2.0/UDP [2001:db8::5];branch=z9hG4bK776asdhds")
    assert relay_response(parse(v6))[1] == ("2001:db8::5", 5060)
