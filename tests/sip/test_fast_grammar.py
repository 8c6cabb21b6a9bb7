"""The fast path's byte loops against the regular expressions they replace.

``sipgate/sip/fast.py`` states each value grammar it reads (Request-Line,
Via, name-addr, CSeq, the tag / branch / rport parameters) as a regular
expression, and, for the mypyc build, as a loop over the bytes.  Here each
loop must return what the expression's match returns, on generated input
made of the pieces those grammars are built from.  tests/test_native.py
runs this module again as pure Python, so both the compiled and the
interpreted loops are held to it.  The two header walks are held, in
addition, to their C versions (sipgate/sip/_walk.c) wherever those are
built.
"""

from __future__ import annotations

import ipaddress
import re

import pytest

from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from helpers import examples
from sipgate import native
from sipgate.sip import SipParseError, fast, parse_via

PIECES = [
    b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"invite", b" ", b"  ", b"\t", b"sip:", b"sips:", b"SIP:",
    b"tel:", b" SIP/2.0", b" SIP/2.1", b"SIP/2.0/UDP ", b"SIP/2.0/TCP ", b"alice@", b"a;b=c?d@", b"@", b"host",
    b"example.com", b"a-b.c", b".", b"..", b"-", b"192.0.2.1", b":", b":5060", b":65535", b":123456", b":0",
    b";lr", b";transport=udp", b";maddr=[::1]", b";x=", b";=", b"=", b";tag=", b";tag=abc", b";TAG=Z", b";tag",
    b";tagx=1", b";branch=z9hG4bK-1", b";BRANCH=z", b";rport", b";rport=5060", b";received=1.2.3.4", b"<", b">",
    b"<sip:a@b>", b"<sips:x>", b"<1x:y>", b"<sip:a b>", b'"', b'"Bob"', b'"B\\o"', b"Bob", b"Bob Smith ", b"\\",
    b"1", b"42", b"4294967295", b"12345678901", b"0x", b"%", b"!", b"~", b"*", b"'", b"(", b")", b"[", b"]", b"/",
    b"&", b"+", b"$", b",", b"?", b"`", b"\r", b"\n", b"\x0b", b"\x0c", b"\x00", b"\xe9", b"Z", b"z", b"9",
]
TEXT = st.lists(st.sampled_from(PIECES), max_size=14).map(b"".join)


def _groups(pattern, text):
    m = pattern.fullmatch(text)
    return None if m is None else m.groups()


def _group1(pattern, text):
    m = pattern.fullmatch(text)
    return None if m is None else m.group(1)


# Each byte loop beside what its expression's match returns.
LOOPS = [
    (fast._request_line_loop, lambda text: _groups(fast._REQUEST_LINE, text)),
    (fast._via_loop, lambda text: _groups(fast._VIA, text)),
    (fast._name_addr_loop, lambda text: _group1(fast._NAME_ADDR, text)),
    (fast._cseq_loop, lambda text: _groups(fast._CSEQ, text)),
    (fast._cseq_any_loop, lambda text: _group1(fast._CSEQ_ANY, text)),
    (fast._route_loop, lambda text: _groups(fast._ROUTE, text)),
    (lambda text: fast._status_line_loop(text, len(text)), lambda text: fast._STATUS_LINE.fullmatch(text) is not None),
]


@given(TEXT)
# Request-Line
@example(b"INVITE sip:+4930123@trunk.example.com:5060;user=phone SIP/2.0")
@example(b"ACK sips:a@b SIP/2.0")
@example(b"BYE sip:127.0.0.1:5070;transport=UDP SIP/2.0")
@example(b"INVITE sip:a.@b SIP/2.0")
@example(b"INVITE sip:host. SIP/2.0")
@example(b"CANCEL sip:u@h:123456 SIP/2.0")
# Via
@example(b"SIP/2.0/UDP 127.0.0.2:5080;branch=z9hG4bK-1;rport")
@example(b"SIP/2.0/UDP host")
@example(b"SIP/2.0/UDP host.")
@example(b"SIP/2.0/UDP h:;branch=1")
@example(b"SIP/2.0/UDP h;branch=")
# name-addr
@example(b'"sipp" <sip:sipp@127.0.0.2:5080>;tag=1234SIPpTag001')
@example(b"<sip:service@demo.example>")
@example(b"Bob Smith <sip:b@h>;tag=x;foo")
@example(b"Bob\t<sip:b@h>")
@example(b'"a\\b" <sip:x>')
@example(b"<1x:y>")
@example(b"<sip:a>;tag=")
# CSeq
@example(b"1 INVITE")
@example(b"4294967295\tACK")
@example(b"12345678901 BYE")
@example(b"1INVITE")
@example(b"42 OPTIONS")
@example(b"42 ")
@example(b"42 A B")
# Status-Line
@example(b"SIP/2.0 200 OK")
@example(b"SIP/2.0 180 Ringing ")
@example(b"SIP/2.0 100 \t")
@example(b"SIP/2.0 699 x")
@example(b"SIP/2.0 700 x")
@example(b"SIP/2.0 200 a\rb")
@example(b"SIP/2.0 200 \n")
@example(b"SIP/2.0 200")
# Route
@example(b"<sip:127.0.0.1:5060;lr;sgt=TK11111111111111111111111111111111>")
@example(b"<sips:edge.example.com;lr>")
@example(b"<sip:a@edge;lr>")
@example(b"<sip:edge;lr")
@example(b"<sip:edge:99999;lr>")
@settings(max_examples=examples(1500))
def test_each_loop_matches_its_expression(text):
    for loop, expected in LOOPS:
        assert loop(text) == expected(text), (loop.__name__, text)


NAMES = st.sampled_from([b"tag", b"TAG", b"Tag", b"tagx", b"ta", b"branch", b"BRANCH", b"branc", b"rport",
                         b"rPort", b"received", b"Received", b"sgt", b"SGT", b"sg", b"x", b"lr"])
VALUES = st.sampled_from([b"1", b"abc", b"z9hG4bK-1", b"5060", b"tag", b"1.2.3.4", b"a~b"])
PARAMS = st.lists(st.tuples(NAMES, st.none() | VALUES), max_size=5).map(
    lambda pairs: b"".join(b";" + name + (b"" if value is None else b"=" + value) for name, value in pairs))


@given(PARAMS)
@example(b";tag;tag=2")
@example(b";tagx=1;TAG=2")
@example(b"")
def test_parameter_loop_matches_the_searches(params):
    assert re.fullmatch(fast._PARAMS, params) is not None
    for name, pattern in fast._SEARCHES.items():
        m = pattern.search(params)
        assert fast._param_loop(params, name) == ((False, None) if m is None else (True, m.group(1)))


# What fast._hop_via reads (a response's Via element, when _via does not):
# the expression, and the IPv6 literal checked as uri._host checks it.
_HOP_VIA = re.compile(rb"SIP/2\.0/UDP (?:([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*)|\[([0-9A-Fa-f:.]+)\])(?::([0-9]{1,5}))?"
                      rb"((?:;" + fast._TOKEN + rb"(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*)")


def hop_via_reference(text):
    m = _HOP_VIA.fullmatch(text)
    if m is None:
        return None
    name, literal, port, params = m.groups()
    if literal is not None:
        try:
            ipaddress.IPv6Address(literal.decode())
        except ValueError:
            return None
    return name if literal is None else literal, port, params


HOP_PIECES = [b"SIP/2.0/UDP ", b"SIP/2.0/UDP [", b"[", b"]", b"::", b":", b"1", b"db8", b"2001:", b"ffff:", b"FE80",
              b"1.2.3.4", b".", b"0", b"g", b"host", b":5060", b":99999", b";branch=z9hG4bK-1", b";rport",
              b";rport=5081", b";received=", b";received=::1", b";received=[::1]", b"=", b";", b" ", b"%", b"<"]


HOP_VIAS = st.tuples(
    st.sampled_from([b"SIP/2.0/UDP "] * 6 + [b"SIP/2.0/TCP ", b""]),
    st.sampled_from([b"[::1]", b"[2001:DB8::1]", b"[::ffff:1.2.3.4]", b"[1::2::3]", b"[1.2.3.4]", b"[]", b"[::1",
                     b"host.example", b"127.0.0.1", b"a..b", b"[::g]"]) | st.ip_addresses(v=6).map(
        lambda a: b"[" + str(a).encode() + b"]"),
    st.sampled_from([b"", b"", b":5080", b":", b":123456"]),
    st.lists(st.sampled_from([b";branch=z9hG4bK-1", b";rport", b";rport=5081", b";received=::1", b";received=[::1]",
                              b";received=1.2.3.4", b";x=a:b]"] * 4 + [b";received=", b";=", b" ", b";a b"]),
             max_size=4).map(b"".join),
).map(b"".join)


@given(HOP_VIAS | HOP_VIAS | st.lists(st.sampled_from(HOP_PIECES), max_size=12).map(b"".join))
@example(b"SIP/2.0/UDP [::1]:5080;branch=z9hG4bK-1;rport=5081;received=::1")
@example(b"SIP/2.0/UDP [2001:db8::1.2.3.4]")
@example(b"SIP/2.0/UDP [1.2.3.4]")
@example(b"SIP/2.0/UDP [::1]:")
@example(b"SIP/2.0/UDP host;received=[::1]")
@example(b"SIP/2.0/UDP [1::2::3];x")
@settings(max_examples=examples(1500))
def test_the_hop_via_loop_matches_its_expression(text):
    expected = hop_via_reference(text)
    assert fast._hop_via(text) == expected
    event("read" if expected else "refused")


@given(st.ip_addresses(v=6).map(str) | st.text("0123456789abcdefABCDEF:.", max_size=48),
       st.sampled_from(["", ":5080"]), st.sampled_from(["", ";rport=5081;received=::1", ";received=[2001:db8::2]"]))
@example("1:2:3:4:5:6:1.2.3.4", "", "")
@example("::ffff:1.2.3.04", "", "")
@example("0000:0000:0000:0000:0000:ffff:255.255.255.255", "", "")
@example("0000:0000:0000:0000:0000:ffff:255.255.255.2551", "", "")
@settings(max_examples=examples(1500))
def test_the_relays_take_the_ipv6_literals_the_full_parser_takes(literal, port, params):
    """The next hop's literal, checked by inet_pton in C and by
    ipaddress.IPv6Address in Python: the relays agree, and relay exactly
    when the full parser reads that Via."""
    head = (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP [::1]:5060;branch=z9hG4bK1\r\n"
            f"Via: SIP/2.0/UDP [{literal}]{port};branch=z9hG4bK2{params}\r\n"
            "From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n\r\n").encode()
    try:
        parse_via(f"SIP/2.0/UDP [{literal}]{port};branch=z9hG4bK2{params}")
        readable = True
    except SipParseError:
        readable = False
    results = [relay(head, fast.DEFAULT_LIMITS) for relay in RELAYS]
    assert all(r == results[0] for r in results)
    assert (results[0] is not None) == readable, literal
    event("relayed" if readable else "declined")


CASES = [
    (fast._request_line_loop, b"INVITE sip:+4930123@trunk.example.com:5060;user=phone SIP/2.0",
     (b"INVITE", b"trunk.example.com", b"5060")),
    (fast._request_line_loop, b"ACK sip:h SIP/2.0", (b"ACK", b"h", None)),
    (fast._request_line_loop, b"OPTIONS sip:h SIP/2.0", None),
    (fast._request_line_loop, b"INVITE sip:[::1] SIP/2.0", None),
    (fast._via_loop, b"SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1;rport",
     (b"10.0.0.1", b"5060", b";branch=z9hG4bK1;rport")),
    (fast._via_loop, b"SIP/2.0/UDP h", (b"h", None, b"")),
    (fast._via_loop, b"SIP/2.0/TCP h", None),
    (fast._name_addr_loop, b'"A" <sip:a@b>;tag=1', b";tag=1"),
    (fast._name_addr_loop, b"<sip:a@b>", b""),
    (fast._name_addr_loop, b"sip:a@b", None),
    (fast._cseq_loop, b"7 CANCEL", (b"7", b"CANCEL")),
    (fast._cseq_loop, b"7 REGISTER", None),
    (fast._cseq_any_loop, b"7 REGISTER", b"7"),
    (fast._cseq_any_loop, b"7\t INFO", b"7"),
    (fast._cseq_any_loop, b"7 ", None),
    (fast._param_loop, b";branch=z9hG4bK1;rport", None),  # (checked below with names)
]


def test_the_loops_accept_and_refuse_the_usual_cases():
    """The differential tests above would pass for two functions that
    refuse everything: these fixed cases pin real answers."""
    for fn, text, expected in CASES[:-1]:
        assert fn(text) == expected, (fn.__name__, text)
    assert fast._param_loop(b";branch=z9hG4bK1;rport", b"rport") == (True, None)
    assert fast._param_loop(b";branch=z9hG4bK1;rport", b"branch") == (True, b"z9hG4bK1")
    assert fast._param_loop(b";branch=z9hG4bK1;rport", b"tag") == (False, None)


@given(st.text("0123456789", max_size=12) | st.binary(max_size=12))
@example("0000000000")
@example("9999999999")
@example("12345678901")
@example("")
@example(b"1/")
@example(b"1:")
@example("\u0661")  # (an Arabic-Indic one: str.isdigit says yes, bytes.isdigit no)
def test_the_number_loop_reads_digits_as_int_does(text):
    digits = text.encode() if isinstance(text, str) else text
    expected = int(digits) if digits.isdigit() and len(digits) <= 10 else -1
    assert fast._uint(digits) == expected


# -- The two header walks ----------------------------------------------------

from tests.sip.test_fast import message  # noqa: E402  (the generated requests of the differential tests)



def _c_walk():
    """sipgate/sip/_walk.c configured as fast.py configures it, or None
    where it is not built (it is imported directly, so that the pure
    Python run of this module holds it to the interpreted walks too)."""
    try:
        from sipgate.sip import _walk
    except ImportError:
        return None
    return fast.configure_walks(_walk)


WALK = _c_walk()


def c_fields(text, limits):
    return WALK.fields(text, min(fast._MAX_LINES, limits.max_headers + 1), limits.max_header_line)


def c_scan(text, limits):
    return WALK.scan(text, min(fast._MAX_LINES, limits.max_headers + 1), limits.max_header_line, limits.max_uri,
                     limits.max_vias)


def python_scan(text, limits):
    """fast._scan as the compiled build's walk reads it: the interpreted
    walk leaves the line indexes in place when a line relay_request_bytes
    keeps is not in rendered form (that relay checks it itself), the
    compiled one (and the C one) drops them."""
    expected = fast._scan(text, limits)
    if expected is not None and expected[fast.AT] is not None and not _kept_lines_rendered(text, expected[fast.END]):
        expected = expected[:fast.AT] + (None,)
    return expected


def c_walk_relay(text, limits):
    """The C response walk, the rest in Python."""
    walked = WALK.response_walk(text, min(fast._MAX_LINES, limits.max_headers + 1), limits.max_header_line)
    return None if walked is None else fast._response_out(text, limits, walked)


def c_relay(text, limits):
    """The whole response relay in C."""
    return WALK.relay_response(text, min(fast._MAX_LINES, limits.max_headers + 1), limits.max_header_line,
                               limits.max_vias)


def test_the_compiled_build_walks_in_c():
    """The C walks are in use exactly when the compiled build is."""
    compiled = native.status()[0]
    assert (fast._C_SCAN is not None) == compiled and (fast._C_RELAY_RESPONSE is not None) == compiled
    if compiled:
        assert WALK is not None


FRAMING = st.sampled_from([b"", b"\r", b"\n", b"\x00", b" ", b"\t", b":", b"\r\n", b"\r\n\r\n", b"X: y\r\n"])


@given(message(), st.integers(0, 600), FRAMING, st.sampled_from([None, 3, 12, 40]))
@settings(max_examples=examples(500), deadline=None)
def test_the_two_header_walks_agree(data, position, chunk, limit):
    """_fields_loop (the compiled build's walk) returns what _fields_split
    (the interpreted build's) does: also on framing damage and at limits."""
    from sipgate.sip.limits import SipLimits
    damaged = data[:position] + chunk + data[position:]
    limits = fast.DEFAULT_LIMITS if limit is None else SipLimits(max_headers=limit, max_header_line=limit * 4)
    for text in (data, damaged):
        expected = fast._fields_split(text, limits)
        if expected is not None and not _kept_lines_rendered(text, expected[0]):
            expected[4][9] = 1  # (the loop flags them, see _fields_loop)
        assert fast._fields_loop(text, limits) == expected
        if WALK is not None:
            assert c_fields(text, limits) == expected
            assert c_scan(text, limits) == python_scan(text, limits)


def _kept_lines_rendered(text, end):
    """Every header line relay_request_bytes keeps as it is (all but
    Max-Forwards, Content-Length and the first Via) is "Name: value" with
    no blank at either end of a non-empty value."""
    first_via = True
    for line in text[:end].split(b"\r\n")[1:]:
        slot = fast._header_split(line)[0]
        if slot in (4, 5) or (slot == -1 and first_via):
            first_via = first_via and slot != -1
            continue
        colon = line.find(b":")
        if not (colon + 2 < len(line) and line[colon + 1] == 32 and line[colon + 2] not in b" \t"
                and line[-1] not in b" \t"):
            return False
    return True


def test_the_header_walks_read_a_request():
    text = (b"INVITE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP g\r\n"
            b"f: <sip:x@y>;tag=1\r\nTO: <sip:a@b>\r\ni: c1\r\nCSeq: 1 INVITE\r\nX-Other: 1\r\n\r\n")
    fields = fast._fields_loop(text, fast.DEFAULT_LIMITS)
    assert fields == fast._fields_split(text, fast.DEFAULT_LIMITS)
    if WALK is not None:
        assert c_fields(text, fast.DEFAULT_LIMITS) == fields
    end, line0, vias, values, at = fields
    assert (line0, vias) == (b"INVITE sip:a@b SIP/2.0", [b"SIP/2.0/UDP h;branch=z9hG4bK1", b"SIP/2.0/UDP g"])
    assert values[:4] == [b"<sip:x@y>;tag=1", b"<sip:a@b>", b"c1", b"1 INVITE"]
    assert at[:4] == [3, 4, 5, 6] and at[8] == 1 and text[end:] == b"\r\n\r\n"


# -- The two response relays -------------------------------------------------

from tests.sip.test_fast import response  # noqa: E402  (the generated responses of the differential tests)

RELAYS = [fast._relay_response_loop, fast._relay_response_split] + ([c_walk_relay, c_relay] if WALK is not None else [])
RESPONSE_DAMAGE = st.sampled_from([b"", b"\r", b"\n", b"\x00", b" ", b"\t", b":", b",", b"\r\n", b"\r\n\r\n",
                                   b"X: y\r\n", b"Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-9\r\n", b"v:  x \r\n"])


@given(response() | response("[::1]", ipv6=True), st.integers(0, 600), RESPONSE_DAMAGE,
       st.sampled_from([None, 2, 3, 12, 40]))
@example(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\n"
         b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: x\r\nCSeq: 1 BYE\r\n\r\n", 0, b"", None)
@example(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n"
         b"Call-ID: x\r\nCSeq: 1 BYE\r\nVia: SIP/2.0/UDP b;branch=z9hG4bK2\r\n\r\n", 0, b"", None)
@settings(max_examples=examples(600), deadline=None)
def test_the_two_response_relays_agree(data, position, chunk, limit):
    """_relay_response_loop (the compiled build's) returns what
    _relay_response_split (the interpreted build's) does: on generated
    responses, damaged ones and at limits."""
    from sipgate.sip.limits import SipLimits
    damaged = data[:position] + chunk + data[position:]
    limits = fast.DEFAULT_LIMITS if limit is None else SipLimits(max_headers=limit, max_header_line=limit * 4,
                                                                   max_vias=limit)
    for text in (data, damaged):
        relayed = fast._relay_response_loop(text, limits)
        assert relayed == fast._relay_response_split(text, limits)
        if WALK is not None:
            assert WALK.response_walk(text, min(fast._MAX_LINES, limits.max_headers + 1),
                                      limits.max_header_line) == fast._response_walk_loop(text, limits)
            assert c_walk_relay(text, limits) == relayed
            assert c_relay(text, limits) == relayed
    event("the undamaged response relayed" if fast._relay_response_split(data, limits) else "declined")


def test_the_response_relays_pop_our_via():
    head = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP edge:5060;branch=z9hG4bK1, SIP/2.0/UDP b:5080;branch=z9hG4bK2;rport=7\r\n"
            b"From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 BYE\r\nContent-Length: 2\r\n\r\nokEXTRA")
    for relay in RELAYS:
        out, top_host, top_port, host, port, branch, material = relay(head, fast.DEFAULT_LIMITS)
        assert out == head.replace(b"SIP/2.0/UDP edge:5060;branch=z9hG4bK1, ", b"")[:-5]
        assert (top_host, top_port, host, port, branch) == ("edge", 5060, "b", 7, b"z9hG4bK1")
        assert material == b"3261\x00z9hG4bK2\x00b\x005080"
    two_lines = head.replace(b", SIP/2.0/UDP b", b"\r\nVia: SIP/2.0/UDP b")
    for relay in RELAYS:
        out = relay(two_lines, fast.DEFAULT_LIMITS)[0]
        assert out == two_lines.replace(b"Via: SIP/2.0/UDP edge:5060;branch=z9hG4bK1\r\n", b"")[:-5]


def test_the_response_relays_render_padded_lines():
    """SIPp pads Content-Length ("Content-Length:   129"): the loop renders
    that line (and any other not in rendered form) as the split relay
    does, around the Via it cuts."""
    head = (b"SIP/2.0 200 OK\r\nX-Before:  1 \r\nVia:  SIP/2.0/UDP edge:5060;branch=z9hG4bK1 \r\n"
            b"Via: SIP/2.0/UDP b:5080;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\n"
            b"Call-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length:   2\r\nX-Empty:\r\n\r\nok")
    expected = (b"SIP/2.0 200 OK\r\nX-Before: 1\r\nVia: SIP/2.0/UDP b:5080;branch=z9hG4bK2\r\nFrom: <sip:a@b>;tag=1\r\n"
                b"To: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 2\r\nX-Empty: \r\n\r\nok")
    for relay in RELAYS:
        assert relay(head, fast.DEFAULT_LIMITS)[0] == expected, relay.__name__
    joined = head.replace(b"branch=z9hG4bK1 \r\nVia: ", b"branch=z9hG4bK1 ,  ")
    for relay in RELAYS:
        assert relay(joined, fast.DEFAULT_LIMITS)[0] == expected, relay.__name__


# -- Header names in the C walks ------------------------------------------

KNOWN_NAMES = [n for n in (*fast._SLOTS, *(c for c, long in fast.COMPACT_FORMS.items() if long in fast._SLOTS))]


@st.composite
def header_name(draw) -> bytes:
    """A name the scan reads, in any case, or one a letter away from one."""
    name = bytearray(draw(st.sampled_from(KNOWN_NAMES)).encode())
    name = bytearray(c ^ 32 if 97 <= c <= 122 and draw(st.booleans()) else c for c in name)
    how = draw(st.integers(0, 3))
    if how == 1 and name:
        name[draw(st.integers(0, len(name) - 1))] = draw(st.sampled_from(b"aZ-.!%*_+`'~09x"))
    elif how == 2:
        name += draw(st.sampled_from([b"s", b"-", b"x"]))
    elif how == 3 and len(name) > 1:
        del name[-1]
    return bytes(name)


@given(st.lists(header_name(), min_size=1, max_size=4))
@settings(max_examples=examples(300), deadline=None)
def test_the_c_walks_read_header_names_as_the_python_ones(names):
    """Each header name classified as _NAMES / _classify do (the slot
    decides which value is read, refused, or ignored), in requests and in
    responses."""
    if WALK is None:
        pytest.skip("sipgate/sip/_walk.c is not built")
    extra = b"".join(name + b": <sip:p.example;lr>\r\n" for name in names)
    request = (b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=1\r\n"
               b"To: <sip:a@b>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n" + extra + b"\r\n")
    expected = fast._fields_split(request, fast.DEFAULT_LIMITS)
    if expected is not None and not _kept_lines_rendered(request, expected[0]):
        expected[4][9] = 1
    assert c_fields(request, fast.DEFAULT_LIMITS) == expected
    assert c_scan(request, fast.DEFAULT_LIMITS) == python_scan(request, fast.DEFAULT_LIMITS)
    reply = (b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP edge:5060;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP b;branch=z9hG4bK2\r\n"
             b"From: <sip:x@y>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n" + extra + b"\r\n")
    assert c_relay(reply, fast.DEFAULT_LIMITS) == fast._relay_response_split(reply, fast.DEFAULT_LIMITS)


def test_the_c_walks_refuse_bad_arguments_without_crashing():
    if WALK is None:
        pytest.skip("sipgate/sip/_walk.c is not built")
    with pytest.raises(TypeError):
        WALK.fields("text", 10, 10)
    with pytest.raises(TypeError):
        WALK.configure(b"x", b"y", ())
    assert WALK.fields(b"", 10, 10) is None and WALK.response_walk(b"", 10, 10) is None
    assert WALK.fields(b"INVITE sip:a@b SIP/2.0\r\n", 10, 10) is None  # (over max_line at once)


SCAN_DAMAGE = st.sampled_from([b"", b"\r", b"\n", b"\x00", b" ", b"\t", b":", b";", b"=", b",", b"<", b">", b'"',
                               b"\\", b"@", b".", b"9", b"Z", b"\xe9", b"\r\n", b"X: y\r\n", b";tag=q", b";rport",
                               b"Via: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK-9\r\n", b"Route: <sip:a;lr>\r\n",
                               b"Max-Forwards: 99999999999\r\n", b"CSeq: 1 ACK\r\n"])


@given(message(), st.integers(0, 600), SCAN_DAMAGE, st.sampled_from([None, 1, 2, 3, 12, 40]))
@example(b"INVITE sip:a@b:65536 SIP/2.0\r\nVia: SIP/2.0/UDP h:65535;rport;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=\r\n"
         b"To: \"A\" <sip:a@b>;TAG=t\r\nCall-ID: c\r\nCSeq: 2147483648 INVITE\r\n\r\n", 0, b"", None)
@example(b"ACK sips:A.B.c SIP/2.0\r\nv: SIP/2.0/UDP H.Example:5;received=1.2.3.4;rport=7;branch=z9hG4bKx\r\n"
         b"f: a b <sip:x@y>;tag=f\r\nt: <sip:a@b>;tag=t\r\ni: c\r\nCSeq: 2147483647\tACK\r\nl: 3\r\n\r\nabc", 0, b"", None)
@settings(max_examples=examples(500), deadline=None)
def test_the_c_scan_reads_what_the_python_scan_reads(data, position, chunk, limit):
    """sipgate/sip/_walk.c's scan returns fast._scan's tuple, field for
    field (the compiled build's receive path runs the C one): on generated
    requests, damaged ones and at every limit it checks."""
    if WALK is None:
        pytest.skip("sipgate/sip/_walk.c is not built")
    from sipgate.sip.limits import SipLimits
    damaged = data[:position] + chunk + data[position:]
    limits = fast.DEFAULT_LIMITS if limit is None else SipLimits(max_headers=limit, max_header_line=limit * 4,
                                                                   max_uri=limit * 2, max_vias=limit)
    for text in (data, damaged):
        assert c_scan(text, limits) == python_scan(text, limits)
    event("scanned" if fast._scan(data, limits) is not None else "declined")


FIELD = st.binary(max_size=40)


@given(st.lists(FIELD, min_size=1, max_size=5), FIELD, FIELD, FIELD, FIELD, FIELD,
       st.sampled_from([b"", b'Warning: 399 sipgate "x"\r\n', b'Warning: 399 a "b"\r\nServer: s\r\n']))
@settings(max_examples=examples(300), deadline=None)
def test_the_c_403_is_the_joined_one(vias, from_, to, call_id, cseq, tag, extra):
    """sipgate/sip/_walk.c's forbidden writes fast._forbidden_join's bytes
    (the compiled build's 403): whatever the fields it reads hold, one Via
    or several."""
    if WALK is None:
        pytest.skip("sipgate/sip/_walk.c is not built")
    s = [None] * 21
    s[fast.VIAS], s[fast.FROM_], s[fast.TO], s[fast.CALL_ID], s[fast.CSEQ] = vias, from_, to, call_id, cseq
    assert WALK.forbidden(tuple(s), tag, extra) == fast._forbidden_join(tuple(s), tag, extra)


def test_the_c_403_answers_a_scanned_invite_as_the_join():
    if WALK is None:
        pytest.skip("sipgate/sip/_walk.c is not built")
    s = c_scan(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=f\r\n"
               b"v: SIP/2.0/UDP 10.0.0.9;branch=z9hG4bK2\r\nTo: <sip:a@b>\r\ni: c\r\nCSeq: 1 INVITE\r\n\r\n",
               fast.DEFAULT_LIMITS)
    assert s is not None and len(s[fast.VIAS]) == 2
    assert WALK.forbidden(s, b"sg1", b"Server: s\r\n") == fast._forbidden_join(s, b"sg1", b"Server: s\r\n") == (
        b"SIP/2.0 403 Forbidden\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bK1\r\nVia: SIP/2.0/UDP 10.0.0.9;"
        b"branch=z9hG4bK2\r\nFrom: <sip:x@y>;tag=f\r\nTo: <sip:a@b>;tag=sg1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
        b"Server: s\r\nContent-Length: 0\r\n\r\n")


def test_the_c_403_refuses_bad_arguments_without_crashing():
    if WALK is None:
        pytest.skip("sipgate/sip/_walk.c is not built")
    s = c_scan(b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h:5060;branch=z9hG4bK1\r\nFrom: <sip:x@y>;tag=f\r\n"
               b"To: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n\r\n", fast.DEFAULT_LIMITS)
    assert s is not None and WALK.forbidden(s, b"sg1", b"").startswith(b"SIP/2.0 403 Forbidden\r\nVia: ")
    for args in ((s, "sg1", b""), (s, b"sg1", None), (s[:-1], b"sg1", b""), (list(s), b"sg1", b""),
                 (s[:fast.VIAS] + ([],) + s[fast.VIAS + 1:], b"sg1", b""),
                 (s[:fast.VIAS] + ([b"v", "w"],) + s[fast.VIAS + 1:], b"sg1", b""),
                 (s[:fast.CALL_ID] + (None,) + s[fast.CALL_ID + 1:], b"sg1", b"")):
        with pytest.raises(TypeError):
            WALK.forbidden(*args)
    with pytest.raises(TypeError):
        WALK.forbidden(s, b"sg1")
