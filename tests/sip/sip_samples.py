"""Realistic SIP messages shared by the sip tests (importable by @given tests)."""

from __future__ import annotations

SDP = (
    b"v=0\r\n"
    b"o=- 3912345678 3912345678 IN IP4 203.0.113.10\r\n"
    b"s=carrier\r\n"
    b"c=IN IP4 203.0.113.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=sendrecv\r\n"
)

INVITE_HEAD = (
    "INVITE sip:+15551234567@demo.sipgate.test SIP/2.0",
    "Via: SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK776asdhds;rport",
    "Max-Forwards: 69",
    'From: "Carrier" <sip:+15557654321@carrier.example>;tag=1928301774',
    "To: <sip:+15551234567@demo.sipgate.test>",
    "Call-ID: a84b4c76e66710@pc33.carrier.example",
    "CSeq: 314159 INVITE",
    "Contact: <sip:+15557654321@203.0.113.10:5060>",
    "Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY",
    "Supported: replaces, timer",
    "User-Agent: carrier-sbc/4.2",
    "Content-Type: application/sdp",
    f"Content-Length: {len(SDP)}",
)

INVITE = ("\r\n".join(INVITE_HEAD) + "\r\n\r\n").encode() + SDP

RESPONSE_180 = (
    b"SIP/2.0 180 Ringing\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKsgate1, "
    b"SIP/2.0/UDP 203.0.113.10:5060;branch=z9hG4bK776asdhds;rport=5062;received=203.0.113.99\r\n"
    b'From: "Carrier" <sip:+15557654321@carrier.example>;tag=1928301774\r\n'
    b"To: <sip:+15551234567@demo.sipgate.test>;tag=pbx1\r\n"
    b"Call-ID: a84b4c76e66710@pc33.carrier.example\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:pbx@192.0.2.50:5070>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def lines_to_bytes(lines: list[str] | tuple[str, ...], body: bytes = b"", eol: str = "\r\n") -> bytes:
    """Join header lines (start line first), add the empty line and body."""
    return (eol.join(lines) + eol + eol).encode() + body
