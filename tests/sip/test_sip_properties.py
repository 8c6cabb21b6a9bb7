"""Hypothesis: the parser returns a message or raises SipParseError, nothing else."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sip_samples import INVITE, INVITE_HEAD, RESPONSE_180, SDP, lines_to_bytes
from sipgate.sip import Request, Response, SipParseError, build_response, parse, parse_uri, relay_request


def parse_or_error(data: bytes):
    try:
        msg = parse(data)
    except SipParseError as exc:
        assert 400 <= exc.status < 600
        return exc
    assert isinstance(msg, (Request, Response))
    # Lazily parsed fields obey the same contract.
    for field in ("call_id", "cseq", "vias", "from_tag", "to_tag", "max_forwards", "content_length"):
        try:
            getattr(msg, field)
        except SipParseError:
            pass
    if isinstance(msg, Request):
        msg.request_uri
    return msg


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes(data):
    parse_or_error(data)


NASTY = st.sampled_from([
    "", " ", "\x00", "\xff", "é", ";", ",", "<", ">", '"', "[", "]", "[::1]", "[2001:db8::1]:5060",
    ":", "@", "sip:", "9" * 30, "-1", "\r", "\n", "\t", "a" * 3000, "z9hG4bK", "=", "%00",
])


@st.composite
def mutated_invite(draw):
    lines = list(INVITE_HEAD)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        kind = draw(st.sampled_from(["delete", "duplicate", "insert", "truncate", "replace_value"]))
        if kind == "delete" and len(lines) > 1:
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, lines[i])
        elif kind == "insert":
            pos = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:pos] + draw(NASTY) + lines[i][pos:]
        elif kind == "truncate":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif kind == "replace_value" and ":" in lines[i]:
            lines[i] = lines[i].split(":", 1)[0] + ": " + draw(NASTY)
    eol = draw(st.sampled_from(["\r\n", "\n"]))
    body = draw(st.sampled_from([SDP, b"", SDP[:10], SDP + b"extra"]))
    data = (eol.join(lines) + eol + eol).encode("utf-8", "surrogateescape") + body
    if draw(st.booleans()):
        data = data.replace(b"\r\n", b"\n", draw(st.integers(0, 5)))
    return data


@settings(max_examples=500, deadline=None)
@given(mutated_invite())
def test_mutated_invites(data):
    result = parse_or_error(data)
    if isinstance(result, Request):
        # Whatever parsed can be relayed and answered without any other exception.
        try:
            relay_request(result, via="SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx", source=("198.51.100.1", 5060))
            build_response(result, 403, "Forbidden", to_tag="t")
        except SipParseError:
            pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40), st.integers(0, len(INVITE)))
def test_bytes_spliced_into_a_real_invite(junk, pos):
    parse_or_error(INVITE[:pos] + junk + INVITE[pos:])
    parse_or_error(RESPONSE_180[: pos % len(RESPONSE_180)] + junk)


# RFC 3261 §25.1 unreserved = alphanum / mark: valid in user parts, params and tokens alike.
TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.!~*'", min_size=1, max_size=12)
HEADER_NAME = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-", min_size=2, max_size=12)
VALUE = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30)


@st.composite
def valid_request(draw):
    method = draw(st.sampled_from(["INVITE", "OPTIONS", "BYE", "REGISTER", "MESSAGE"]))
    host = draw(st.sampled_from(["demo.sipgate.test", "192.0.2.1", "[2001:db8::1]"]))
    lines = [
        f"{method} sip:{draw(TOKEN)}@{host} SIP/2.0",
        f"Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK{draw(TOKEN)}",
        f"From: <sip:a@example.com>;tag={draw(TOKEN)}",
        "To: <sip:b@example.com>",
        f"Call-ID: {draw(TOKEN)}",
        f"CSeq: {draw(st.integers(0, 2**31 - 1))} {method}",
        f"Max-Forwards: {draw(st.integers(0, 255))}",
    ]
    for _ in range(draw(st.integers(0, 5))):
        name = draw(HEADER_NAME)
        if name.lower() in ("v", "f", "t", "i", "l", "m", "content-length"):
            continue
        lines.append(f"X-{name}: {draw(VALUE)}")
    body = draw(st.binary(max_size=50))
    lines.append(f"Content-Length: {len(body)}")
    return lines_to_bytes(lines, body)


@settings(max_examples=300, deadline=None)
@given(valid_request())
def test_valid_requests_parse_and_round_trip(data):
    msg = parse(data)
    assert parse(msg.render()) == msg


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["sip", "sips"]), st.one_of(st.none(), TOKEN),
       st.one_of(st.ip_addresses().map(str), st.from_regex(r"[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,2}", fullmatch=True)),
       st.one_of(st.none(), st.integers(1, 65535)),
       st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), st.one_of(st.none(), TOKEN), max_size=3))
def test_uri_components_round_trip(scheme, user, host, port, params):
    text = f"{scheme}:" + (f"{user}@" if user else "")
    text += f"[{host}]" if ":" in host else host
    text += f":{port}" if port else ""
    text += "".join(f";{k}" + (f"={v}" if v is not None else "") for k, v in params.items())
    uri = parse_uri(text)
    assert (uri.scheme, uri.user, uri.host, uri.port) == (scheme, user, host.lower(), port)
    assert uri.params == params
