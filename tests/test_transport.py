"""The UDP edge on real loopback sockets: replies, relays, dialogs, garbage."""

from __future__ import annotations

from helpers import DEMO_DOMAIN, TRUNK_SID, UdpPeer, request, table
from sipgate.config import Listener
from sipgate.sip import Request, Response, build_response, parse


def via_of(peer: UdpPeer) -> str:
    return f"{peer.address[0]}:{peer.address[1]}"


def pbx_answer(pbx: UdpPeer, relayed: bytes, status: int = 200, reason: str = "OK",
               to_tag: str = "pbx-tag") -> bytes:
    """What a PBX sends back: a response built from the relayed request."""
    req = parse(relayed)
    extra = [("Contact", f"<sip:pbx@{pbx.address[0]}:{pbx.address[1]}>")]
    if req.values("record-route"):
        extra.append(("Record-Route", ", ".join(req.values("record-route"))))
    return build_response(req, status, reason, to_tag=to_tag, headers=extra)


def test_denied_invite_gets_403_copying_every_header(edge, denied, pbx):
    data = request(via_host=via_of(denied), extra=["Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK-second"])
    # The extra Via comes after the first: two Vias, both must be copied in order.
    denied.send(data, edge.address)
    reply, addr = denied.recv()
    assert addr == edge.address
    resp = parse(reply)
    assert isinstance(resp, Response)
    assert (resp.status, resp.reason) == (403, "Forbidden")
    req = parse(data)
    assert resp.values("via") == req.values("via")
    assert resp.first("from") == req.first("from")
    assert resp.first("to").startswith(req.first("to") + ";tag=")
    assert resp.to_tag
    assert resp.call_id == req.call_id
    assert resp.first("cseq") == req.first("cseq")
    assert resp.first("content-length") == "0"
    assert resp.body == b""
    assert "not in any IP access control list" in resp.first("warning")
    assert pbx.nothing()


def test_retransmitted_invite_gets_byte_identical_reply(edge, denied):
    data = request(via_host=via_of(denied))
    denied.send(data, edge.address)
    first, _ = denied.recv()
    denied.send(data, edge.address)
    second, _ = denied.recv()
    assert first == second


def test_ack_for_403_is_absorbed(edge, denied, allowed, pbx):
    data = request(via_host=via_of(denied))
    denied.send(data, edge.address)
    reply = parse(denied.recv()[0])
    ack = request("ACK", via_host=via_of(denied), to_tag=reply.to_tag)
    denied.send(ack, edge.address)
    assert denied.nothing() and pbx.nothing()
    # From a source no trunk admits, an ACK is dropped before it is parsed,
    # and counted as what it is: a request from a source not admitted.
    assert edge.stats.decisions[("drop", "forbidden")] == 1
    # An admitted caller's ACK of a 403 sipgate sent (Max-Forwards 0 -> 483
    # here) is recognised by its To-tag and absorbed.
    data = request(via_host=via_of(allowed), max_forwards=0, call_id="hops")
    allowed.send(data, edge.address)
    reply = parse(allowed.recv()[0])
    assert reply.status == 483
    allowed.send(request("ACK", via_host=via_of(allowed), to_tag=reply.to_tag, call_id="hops"), edge.address)
    assert allowed.nothing() and pbx.nothing()
    assert edge.stats.decisions[("drop", "ack_absorbed")] == 1


def test_cancel_and_retransmission_from_denied_never_reach_pbx(edge, denied, pbx):
    data = request(via_host=via_of(denied))
    for _ in range(3):
        denied.send(data, edge.address)
        assert parse(denied.recv()[0]).status == 403
    denied.send(request("CANCEL", via_host=via_of(denied)), edge.address)
    assert parse(denied.recv()[0]).status == 403
    assert pbx.nothing()


def test_admitted_invite_is_relayed_and_responses_come_back(edge, allowed, pbx):
    data = request(via_host=via_of(allowed), body=b"v=0\r\n")
    allowed.send(data, edge.address)
    relayed, addr = pbx.recv()
    assert addr == edge.address
    fwd = parse(relayed)
    assert isinstance(fwd, Request) and fwd.method == "INVITE"
    vias = fwd.vias
    assert len(vias) == 2
    assert (vias[0].host, vias[0].port) == edge.address
    assert vias[0].branch.startswith("z9hG4bK")
    assert vias[1].branch == "z9hG4bK-test-1"
    assert fwd.max_forwards == 69
    rr = fwd.values("record-route")
    assert rr == [f"<sip:127.0.0.1:{edge.address[1]};lr;sgt={TRUNK_SID}>"]
    assert fwd.body == b"v=0\r\n"
    assert fwd.call_id == parse(data).call_id

    # Retransmission: the same branch, so the PBX matches its transaction.
    allowed.send(data, edge.address)
    again = parse(pbx.recv()[0])
    assert again.top_via.branch == vias[0].branch

    for status, reason in ((100, "Trying"), (200, "OK")):
        pbx.send(pbx_answer(pbx, relayed, status, reason), edge.address)
        back, addr = allowed.recv()
        resp = parse(back)
        assert addr == edge.address
        assert resp.status == status
        assert len(resp.vias) == 1 and resp.top_via.branch == "z9hG4bK-test-1"
    stats = edge.stats
    assert stats.relayed_requests["to_pbx"] == 2
    assert stats.relayed_responses["from_pbx"] == 2


def test_rport_and_received_added_to_callers_via(edge, pbx):
    with UdpPeer("127.0.0.2") as caller:
        # sent-by claims another host and port: the reply must still reach the
        # real source (RFC 3581 rport), and the PBX sees received/rport.
        caller.send(request(via_host="192.0.2.1:5999", rport=True), edge.address)
        fwd = parse(pbx.recv()[0])
        theirs = fwd.vias[1]
        assert theirs.received == "127.0.0.2"
        assert theirs.rport == str(caller.address[1])
        pbx.send(build_response(fwd, 180, "Ringing", to_tag="t"), edge.address)
        resp, _ = caller.recv()
        assert parse(resp).status == 180


def test_max_forwards_zero_gets_483(edge, allowed, pbx):
    allowed.send(request(via_host=via_of(allowed), max_forwards=0), edge.address)
    assert parse(allowed.recv()[0]).status == 483
    assert pbx.nothing()


def test_proxy_require_gets_420_with_unsupported(edge, allowed, pbx):
    # (a lower-case name: the fast path's scan must hand it to the full path too)
    allowed.send(request(via_host=via_of(allowed), extra=["proxy-require: 100rel, timer"]), edge.address)
    resp = parse(allowed.recv()[0])
    assert (resp.status, resp.reason) == (420, "Bad Extension")
    assert resp.values("unsupported") == ["100rel", "timer"]
    assert pbx.nothing()
    allowed.send(request(via_host=via_of(allowed), call_id="plain@127.0.0.2"), edge.address)
    assert parse(pbx.recv()[0]).method == "INVITE"


def test_missing_max_forwards_gets_70(edge, allowed, pbx):
    allowed.send(request(via_host=via_of(allowed), max_forwards=None), edge.address)
    assert parse(pbx.recv()[0]).max_forwards == 70


def test_in_dialog_requests_checked_by_record_route_trunk(edge, allowed, denied, pbx):
    route = f"<sip:127.0.0.1:{edge.address[1]};lr;sgt={TRUNK_SID}>"
    pbx_uri = f"sip:pbx@{pbx.address[0]}:{pbx.address[1]}"
    bye = request("BYE", pbx_uri, via_host=via_of(allowed), to_tag="pbx-tag", cseq=2, routes=[route])
    allowed.send(bye, edge.address)
    fwd = parse(pbx.recv()[0])
    assert fwd.method == "BYE" and fwd.values("route") == []  # our Route popped
    assert fwd.values("record-route") == []  # no Record-Route in-dialog

    denied.send(request("BYE", pbx_uri, via_host=via_of(denied), to_tag="pbx-tag", cseq=2, routes=[route]),
                edge.address)
    assert parse(denied.recv()[0]).status == 403
    # An ACK from a denied source gets nothing at all.
    denied.send(request("ACK", pbx_uri, via_host=via_of(denied), to_tag="pbx-tag", routes=[route]), edge.address)
    assert denied.nothing() and pbx.nothing()


def test_request_from_pbx_routed_to_caller_and_response_back(edge, allowed, pbx):
    route = f"<sip:127.0.0.1:{edge.address[1]};lr;sgt={TRUNK_SID}>"
    caller_uri = f"sip:+15557654321@{allowed.address[0]}:{allowed.address[1]}"
    bye = request("BYE", caller_uri, via_host=via_of(pbx), to_tag="caller-tag", routes=[route])
    pbx.send(bye, edge.address)
    got, addr = allowed.recv()
    fwd = parse(got)
    assert addr == edge.address and fwd.method == "BYE"
    assert fwd.values("route") == [] and len(fwd.vias) == 2
    allowed.send(build_response(fwd, 200, "OK"), edge.address)
    back = parse(pbx.recv()[0])
    assert back.status == 200 and len(back.vias) == 1
    assert edge.stats.relayed_requests["from_pbx"] == 1
    assert edge.stats.relayed_responses["to_pbx"] == 1


def test_response_from_outside_never_reflected_elsewhere(edge, denied, allowed, pbx):
    # A forged response with our Via on top and a victim's below it.
    ours = f"SIP/2.0/UDP 127.0.0.1:{edge.address[1]};branch=z9hG4bKforged"
    forged = (f"SIP/2.0 200 OK\r\nVia: {ours}\r\nVia: SIP/2.0/UDP {via_of(allowed)};branch=z9hG4bKv\r\n"
              "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\n"
              "Content-Length: 0\r\n\r\n").encode()
    denied.send(forged, edge.address)
    assert allowed.nothing() and pbx.nothing()
    # A response whose top Via is not ours is dropped too.
    denied.send(forged.replace(ours.encode(), b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx"), edge.address)
    assert allowed.nothing() and pbx.nothing()


def test_options_keepalive(edge, allowed, denied, pbx):
    allowed.send(request("OPTIONS", "sip:127.0.0.1", via_host=via_of(allowed)), edge.address)
    assert parse(allowed.recv()[0]).status == 200
    denied.send(request("OPTIONS", "sip:127.0.0.1", via_host=via_of(denied)), edge.address)
    assert parse(denied.recv()[0]).status == 403
    assert pbx.nothing()


def test_unknown_domain_gets_404_or_nothing(make_edge, allowed):
    edge = make_edge()
    allowed.send(request(ruri="sip:x@nobody.example", via_host=via_of(allowed)), edge.address)
    assert parse(allowed.recv()[0]).status == 404
    quiet = make_edge(unknown_host="drop")
    allowed.send(request(ruri="sip:x@nobody.example", via_host=via_of(allowed)), quiet.address)
    assert allowed.nothing()


def test_garbage_then_good_datagram_still_served(edge, denied, pbx):
    good = request(via_host=via_of(denied))
    junk = [
        b"\x00\xff" * 50,
        b"HELLO WORLD\r\n\r\n",
        good[:40],  # truncated inside the headers
        good.replace(b"Content-Length: 0", b"Content-Length: 999"),  # body shorter than declared
        good.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1),
        b"INVITE sip:x@y SIP/2.0\r\nVia: garbage\r\n\r\n",
        b"\r\n\r\n",
        bytes(range(256)) * 200,  # ~51 KB of noise
    ]
    answered = 0
    for data in junk:
        denied.send(data, edge.address)
        if not denied.nothing(0.2):
            answered += 1
    denied.send(good, edge.address)
    assert parse(denied.recv()[0]).status == 403
    stats = edge.stats
    assert stats.internal_errors == 0
    assert stats.parse_errors >= 6
    assert answered >= 2  # the short body and the 505 can be answered
    assert pbx.nothing()


def test_bad_request_answered_with_400_when_possible(edge, denied):
    bad = request(via_host=via_of(denied)).replace(b"Content-Length: 0", b"Content-Length: 10")
    denied.send(bad, edge.address)
    resp = parse(denied.recv()[0])
    assert resp.status == 400
    assert resp.call_id == "call-1@127.0.0.2"
    assert "Content-Length" in resp.first("warning") or "body" in resp.first("warning").lower()


def test_oversized_datagram_gets_513(make_edge, denied, pbx):
    edge = make_edge(max_datagram=1024)
    big = request(via_host=via_of(denied), extra=["X-Pad: " + "a" * 2000])
    denied.send(big, edge.address)
    resp = parse(denied.recv()[0])
    assert (resp.status, resp.reason) == (513, "Message Too Large")
    assert pbx.nothing()
    denied.send(request(via_host=via_of(denied)), edge.address)
    assert parse(denied.recv()[0]).status == 403
    assert edge.stats.internal_errors == 0


def test_ipv6_source_and_via(make_edge, pbx):
    # ::1 is the only IPv6 loopback address, so the caller gets it and the
    # PBX stays on 127.0.0.1, reached through the dual-stack socket.
    edge = make_edge(listen=(Listener(host="::", port=0, advertise="::1", default_trunk=DEMO_DOMAIN),))
    target = ("::1", edge.address[1])
    with UdpPeer("::1") as caller:
        edge.call(edge.edge.install, table([(TRUNK_SID, DEMO_DOMAIN, [("AL" + "6" * 32, ["::1/128"])])], 3))
        caller.send(request(via_host=f"[::1]:{caller.address[1]}"), target)
        fwd = parse(pbx.recv()[0])
        assert fwd.vias[0].host == "::1"
        assert fwd.values("record-route")[0].startswith(f"<sip:[::1]:{edge.address[1]};lr;sgt=")
        pbx.send(build_response(fwd, 200, "OK", to_tag="t"), ("127.0.0.1", edge.address[1]))
        assert parse(caller.recv()[0]).status == 200
        edge.call(edge.edge.install, table([(TRUNK_SID, DEMO_DOMAIN, [("AL" + "6" * 32, ["2001:db8::/32"])])], 4))
        caller.send(request(via_host=f"[::1]:{caller.address[1]}", call_id="v6-2"), target)
        assert parse(caller.recv()[0]).status == 403


def test_dual_stack_listener_serves_ipv4_peers(make_edge, allowed, denied, pbx):
    edge = make_edge(listen=(Listener(host="::", port=0, advertise="127.0.0.1", default_trunk=DEMO_DOMAIN),))
    target = ("127.0.0.1", edge.address[1])
    denied.send(request(via_host=via_of(denied)), target)
    assert parse(denied.recv()[0]).status == 403
    allowed.send(request(via_host=via_of(allowed)), target)
    relayed, _ = pbx.recv()  # IPv4 PBX reached through the IPv6 socket
    pbx.send(build_response(parse(relayed), 200, "OK", to_tag="t"), target)
    assert parse(allowed.recv()[0]).status == 200  # from the PBX: trusted despite the ::ffff: form


def test_decision_metrics_and_latency_recorded(edge, allowed, denied, pbx):
    allowed.send(request(via_host=via_of(allowed)), edge.address)
    pbx.recv()
    denied.send(request(via_host=via_of(denied)), edge.address)
    denied.recv()
    stats = edge.stats
    assert stats.decisions[("admit", "admitted")] == 1
    assert stats.decisions[("reject", "forbidden")] == 1
    assert stats.latency.count == 2
    assert stats.datagrams_received == 2 and stats.datagrams_sent == 2


def test_table_swap_applies_to_next_datagram(edge, allowed):
    allowed.send(request(via_host=via_of(allowed), call_id="swap-1"), edge.address)
    edge.call(edge.edge.install, table([(TRUNK_SID, DEMO_DOMAIN, [("AL" + "5" * 32, ["10.0.0.0/8"])])], 2))
    allowed.send(request(via_host=via_of(allowed), call_id="swap-2"), edge.address)
    assert parse(allowed.recv()[0]).status == 403
    assert edge.stats.table_generation == 2


def test_the_fast_path_judge_per_host_follows_the_table_in_force():
    """The fast path keeps, per listener, what each Request-URI host names
    (udp._Judge) for the table in force: the compiled build calls the
    trunk matcher's compiled Probes directly; a new table or new settings
    start over, so a change is enforced from the next datagram."""
    from helpers import demo_table

    from sipgate import native
    from sipgate.config import SipConfig
    from sipgate.transport import Edge, EdgeProtocol

    edge = Edge(SipConfig(listen=(Listener("127.0.0.1", 5060),), pbx=("127.0.0.1", 5070)))
    edge.install(demo_table())
    protocol = EdgeProtocol(edge, edge.config.listen[0])
    judge = protocol._judge(DEMO_DOMAIN, edge.table)
    assert (judge.probes is not None) == native.status()[0]
    assert judge.trunk.sid == TRUNK_SID and judge.listed
    assert judge.admits("127.0.0.2") and not judge.admits("127.0.0.3") and not judge.admits("not an address")
    assert protocol._judge(DEMO_DOMAIN, edge.table) is judge  # (kept)
    assert protocol._judge("nobody.example", edge.table) is None
    # A new table: the 127.0.0.3 list in force from the next lookup.
    from helpers import ACL_SID, table
    edge.install(table([(TRUNK_SID, DEMO_DOMAIN, [(ACL_SID, ["127.0.0.3/32"])])], generation=2))
    fresh = protocol._judge(DEMO_DOMAIN, edge.table)
    assert fresh is not judge and fresh.admits("127.0.0.3") and not fresh.admits("127.0.0.2")
    # New settings (SIGHUP) start over too: the default trunk may differ.
    protocol.reconfigure()
    assert protocol._judge(DEMO_DOMAIN, edge.table) is not fresh
