"""The SIP parser: what admission and replies need, and every error status."""

from __future__ import annotations

import pytest

from sip_samples import INVITE, INVITE_HEAD, RESPONSE_180, SDP, lines_to_bytes
from sipgate.sip import (
    Request,
    Response,
    SipParseError,
    parse,
    parse_name_addr,
    parse_uri,
    parse_via,
)


def with_headers(*replace: tuple[str, str | None], body: bytes = SDP, extra: tuple[str, ...] = ()) -> bytes:
    """INVITE_HEAD with headers (by name prefix) replaced or removed."""
    lines = []
    for line in INVITE_HEAD:
        for prefix, new in replace:
            if line.lower().startswith(prefix.lower() + ":") or line.startswith(prefix + " "):
                line = new
                break
        if line is not None:
            lines.append(line)
    lines[1:1] = extra
    return lines_to_bytes(lines, body)


def test_realistic_invite():
    msg = parse(INVITE)
    assert isinstance(msg, Request)
    assert (msg.method, msg.uri, msg.version) == ("INVITE", "sip:+15551234567@demo.sipgate.test", "SIP/2.0")
    assert msg.request_uri.host == "demo.sipgate.test" and msg.request_uri.user == "+15551234567"
    assert msg.call_id == "a84b4c76e66710@pc33.carrier.example"
    assert msg.cseq == (314159, "INVITE")
    assert msg.from_tag == "1928301774" and msg.to_tag is None
    assert msg.max_forwards == 69 and msg.content_length == len(SDP)
    assert msg.top_via.branch == "z9hG4bK776asdhds" and msg.top_via.rport == ""
    assert msg.body == SDP
    assert msg.values("allow") == ["INVITE", "ACK", "CANCEL", "OPTIONS", "BYE", "REFER", "NOTIFY"]


def test_response_and_comma_separated_vias():
    msg = parse(RESPONSE_180)
    assert isinstance(msg, Response) and (msg.status, msg.reason) == (180, "Ringing")
    assert [v.branch for v in msg.vias] == ["z9hG4bKsgate1", "z9hG4bK776asdhds"]
    assert msg.vias[1].received == "203.0.113.99" and msg.vias[1].rport == "5062"
    assert msg.to_tag == "pbx1"


def test_vias_on_separate_lines_and_mixed():
    data = with_headers(extra=("v: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2:5070;branch=z9hG4bKb",
                               "VIA: SIP/2.0/UDP [2001:db8::1]:5080;branch=z9hG4bKc"))
    msg = parse(data)
    hosts = [(v.host, v.port) for v in msg.vias]
    assert hosts == [("10.0.0.1", None), ("10.0.0.2", 5070), ("2001:db8::1", 5080), ("203.0.113.10", 5060)]


def test_compact_forms_and_case_insensitive_names():
    data = lines_to_bytes([
        "INVITE sip:bob@demo.sipgate.test SIP/2.0",
        "v: SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKnashds7",
        "f: <sip:alice@example.com>;tag=88",
        "t: <sip:bob@demo.sipgate.test>",
        "i: compact@example.com",
        "CSEQ: 7 INVITE",
        "m: <sip:alice@192.0.2.4>",
        "mAx-FoRwArDs: 5",
        "l: 0",
    ])
    msg = parse(data)
    assert msg.call_id == "compact@example.com" and msg.from_tag == "88"
    assert msg.cseq == (7, "INVITE") and msg.max_forwards == 5 and msg.content_length == 0
    assert msg.first("contact") == "<sip:alice@192.0.2.4>"
    assert [h[0] for h in msg.headers][:4] == ["via", "from", "to", "call-id"]
    assert msg.headers[0][1] == "v"  # the received name is kept for rendering


def test_line_folding_and_bare_lf():
    data = with_headers(("Subject", None), extra=("Subject: a long", "  folded\tsubject",), body=SDP)
    msg = parse(data)
    assert msg.first("subject") == "a long folded\tsubject"  # the fold is one SP
    lf = lines_to_bytes(INVITE_HEAD, SDP, eol="\n")
    assert parse(lf).call_id == parse(INVITE).call_id
    assert parse(b"\r\n\r\n" + INVITE).call_id == parse(INVITE).call_id  # leading CRLFs skipped


def test_body_longer_than_content_length_is_truncated():
    data = INVITE + b"trailing junk"
    assert parse(data).body == SDP


def test_body_shorter_than_content_length_is_400_with_partial():
    data = with_headers(("Content-Length", f"Content-Length: {len(SDP) + 10}"))
    with pytest.raises(SipParseError) as err:
        parse(data)
    assert err.value.status == 400
    assert err.value.partial is not None and err.value.partial.call_id == parse(INVITE).call_id


@pytest.mark.parametrize("data, status", [
    (with_headers(("Call-ID", None)), 400),
    (with_headers(("Via", None)), 400),
    (with_headers(("From", None)), 400),
    (with_headers(("To", None)), 400),
    (with_headers(("CSeq", None)), 400),
    (with_headers(("CSeq", "CSeq: 1 BYE")), 400),
    (with_headers(("CSeq", "CSeq: abc INVITE")), 400),
    (with_headers(("CSeq", "CSeq: 99999999999 INVITE")), 400),
    (with_headers(("Max-Forwards", "Max-Forwards: many")), 400),
    (with_headers(("Content-Length", "Content-Length: -1")), 400),
    (with_headers(extra=("Call-ID: another@example.com",)), 400),
    (INVITE.replace(b"SIP/2.0\r\n", b"SIP/7.0\r\n", 1), 505),
    (INVITE.replace(b"INVITE sip:+15551234567@demo.sipgate.test", b"INVITE tel:+15551234567", 1), 416),
    (INVITE.replace(b"INVITE sip:+15551234567@demo.sipgate.test", b"INVITE sip:", 1), 400),
    (b"INVITE\r\n\r\n", 400),
    (b"\r\n\r\n", 400),
    (b"", 400),
])
def test_errors_carry_status(data, status):
    with pytest.raises(SipParseError) as err:
        parse(data)
    assert err.value.status == status, err.value


def test_too_large_is_513():
    with pytest.raises(SipParseError) as err:
        parse(INVITE, max_size=100)
    assert err.value.status == 513


def test_too_many_headers():
    with pytest.raises(SipParseError) as err:
        parse(with_headers(extra=tuple(f"X-H{i}: {i}" for i in range(40))), max_headers=20)
    assert err.value.status in (400, 513)


def test_partial_absent_for_unsplittable_input():
    with pytest.raises(SipParseError) as err:
        parse(b"\x00\x01garbage")
    assert err.value.partial is None


def test_render_round_trip():
    msg = parse(INVITE)
    assert parse(msg.render()) == msg
    assert parse(RESPONSE_180).render() == RESPONSE_180


def test_uri_forms():
    u = parse_uri("sip:user:pw@[2001:db8::1]:5060;transport=udp;lr?subject=x")
    assert (u.scheme, u.user, u.host, u.port) == ("sip", "user", "2001:db8::1", 5060)
    assert u.params == {"transport": "udp", "lr": None}
    assert parse_uri("SIPS:Host.Example").host == "host.example"
    with pytest.raises(SipParseError) as err:
        parse_uri("tel:+1555")
    assert err.value.status == 416
    for bad in ("sip:", "sip:host:99999", "sip:[::1", "nonsense"):
        with pytest.raises(SipParseError):
            parse_uri(bad)


def test_name_addr_forms():
    assert parse_name_addr('"A, B" <sip:a@b;x=1>;tag=9').tag == "9"
    na = parse_name_addr("sip:a@b;tag=5")  # addr-spec: params belong to the header (RFC 3261 §20)
    assert na.tag == "5" and na.uri == "sip:a@b"
    assert parse_name_addr("Bob <sip:bob@b>").display_name == "Bob"


def test_via_forms():
    v = parse_via("SIP/2.0/udp host.example;branch=z9hG4bKx;RPORT;received=1.2.3.4")
    assert (v.protocol, v.transport, v.host, v.port) == ("SIP/2.0/UDP", "UDP", "host.example", None)
    assert v.rport == "" and v.received == "1.2.3.4" and v.branch == "z9hG4bKx"
    with pytest.raises(SipParseError):
        parse_via("garbage")
