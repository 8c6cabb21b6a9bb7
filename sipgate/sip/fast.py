"""One pass over the bytes of a common-shaped INVITE or ACK: the hot path's scanner.

A scanner flood is INVITE -> 403 -> ACK, thousands per second, from sources
no trunk admits.  ``scan`` reads, straight from the datagram's bytes and
without building a Request, exactly what judging and answering such a
request needs: method, Request-URI host, the To and From tags, the top
Via's branch / rport / port, Call-ID, CSeq number, and the raw values a
stateless response copies.  ``forbidden`` then writes that response.

It accepts only a strict subset of RFC 3261 syntax, the shape real carriers
and scanners send: one request line with single spaces and SIP/2.0, CRLF
line ends, no folding, no NUL, header names that are tokens, single
``SIP/2.0/UDP`` Via elements per line (no commas), From/To as
``[display] <URI>;params`` with token parameters, sip:/sips: Request-URIs
with a DNS name host.  Anything else (and anything it is not sure of)
returns None and the caller takes the full parser, which is the reference:
for every input ``scan`` accepts, the full path reaches the same verdict and
the same bytes (a differential Hypothesis test holds it to that).
"""

from __future__ import annotations

import re
from hashlib import blake2b
from ipaddress import IPv6Address
from typing import Any, Final

from sipgate._ints import i64
from sipgate.sip.headers import _KEY_CACHE, COMPACT_FORMS
from sipgate.sip.limits import DEFAULT_LIMITS, SipLimits
from sipgate.sip import tag as _tags

__all__ = ["Scanned", "branch_matches", "forbidden_response", "relay_request_bytes", "relay_response_bytes",
           "scan", "sipgate_route", "to_tag_for", "OWN_TAG_LENGTH"]
# (the field indexes METHOD ... MAX_FORWARDS are public too)

_TOKEN: Final = rb"[A-Za-z0-9\-.!%*_+`'~]+"
_PARAMS: Final = rb"((?:;" + _TOKEN + rb"(?:=" + _TOKEN + rb")?)*)"
# Request-Line with the common sip:/sips: URI: userinfo without escapes or
# password, a DNS-name or IPv4 host, URI parameters without escapes.
_REQUEST_LINE: Final = re.compile(
    rb"(INVITE|ACK|BYE|CANCEL) sips?:(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]+@)?"
    rb"([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*)(?::([0-9]{1,5}))?"
    rb"(?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$]*)?)* SIP/2\.0")
_VIA: Final = re.compile(rb"SIP/2\.0/UDP ([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*)(?::([0-9]{1,5}))?" + _PARAMS)
_NAME_ADDR: Final = re.compile(
    rb'(?:"[^"\\]*"[ \t]*|' + _TOKEN + rb"(?:[ \t]+" + _TOKEN + rb")*[ \t]*)?"
    rb'<[A-Za-z][A-Za-z0-9+\-.]*:[^<>"\s]*>' + _PARAMS)
_CSEQ: Final = re.compile(rb"([0-9]{1,10})[ \t]+(INVITE|ACK|BYE|CANCEL)")
_CSEQ_ANY: Final = re.compile(rb"([0-9]{1,10})[ \t]+" + _TOKEN)
_STATUS_LINE: Final = re.compile(rb"SIP/2\.0 [1-6][0-9][0-9] [^ \t](?:[^\r\n]*[^ \t])?")
# A Route element sipgate wrote: <sip:host[:port];lr;sgt=TK...>.
_ROUTE: Final = re.compile(rb"<sips?:([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*)(?::([0-9]{1,5}))?" + _PARAMS + rb">")
_SGT: Final = re.compile(rb";sgt(?:=([^;]*))?(?=;|\Z)", re.IGNORECASE)
_RECEIVED: Final = re.compile(rb";received(?:=([^;]*))?(?=;|\Z)", re.IGNORECASE)
_RPORT_VALUE: Final = re.compile(rb";rport(?:=([^;]*))?(?=;|\Z)", re.IGNORECASE)
_COOKIE: Final = b"z9hG4bK"
# Header lines exactly as the full path renders them back ("Name: value":
# a token name, one space, a value without leading or trailing blanks);
# matched from the end of the start line to the end of the head.
_NORMAL_LINES: Final = re.compile(rb"(?:\r\n" + _TOKEN + rb": [^ \t\r\n](?:[^\r\n]*[^ \t\r\n])?)*")
_HEADER_NAME: Final = re.compile(_TOKEN)
_MAX_CSEQ: Final = 2**31 - 1
_MAX_LINES: Final = 200

# A request with a Proxy-Require header is the full path's business: it
# answers 420 Bad Extension (RFC 3261 §16.3 step 5) where it would relay.
PROXY_REQUIRE: Final = -3
# Header name bytes -> what the scan does with it: an index into its value
# slots, -1 for Via, -2 for a valid name it does not read, PROXY_REQUIRE.  Bounded like
# the full parser's cache.
_SLOTS: Final = {"from": 0, "to": 1, "call-id": 2, "cseq": 3, "max-forwards": 4, "content-length": 5, "route": 6,
          "record-route": 7, "via": -1, "proxy-require": PROXY_REQUIRE}
_NAMES: Final[dict[bytes, int]] = {}
_NAMES_LIMIT: Final = 2048
for _name, _key in _KEY_CACHE.items():
    _NAMES[_name.encode()] = _SLOTS.get(_key, -2)
# The same for the compiled build's _name_slot: a single-letter (compact)
# name's slot + 2 by byte, and the long names.
_COMPACT_SLOTS: Final = bytes(_SLOTS.get(COMPACT_FORMS.get(chr(c).lower(), ""), -2) + 2 for c in range(256))
# The long names by length and first letter (its low five bits, the same
# for both cases): _LONG_SLOTS[length << 5 | letter & 31] is (name, slot) or
# None, so a name is compared with one candidate at most.


def _long_slots() -> tuple[tuple[bytes, int] | None, ...]:
    table: list[tuple[bytes, int] | None] = [None] * (16 << 5)
    for name, slot in _SLOTS.items():
        key = len(name) << 5 | ord(name[0]) & 31
        assert len(name) < 16 and table[key] is None, name  # (one candidate per key)
        table[key] = (name.encode(), slot)
    return tuple(table)


_LONG_SLOTS: Final = _long_slots()
_TAG: Final = re.compile(rb";tag(?:=([^;]*))?(?=;|\Z)", re.IGNORECASE)
_BRANCH: Final = re.compile(rb";branch(?:=([^;]*))?(?=;|\Z)", re.IGNORECASE)


# -- The value grammars above as byte loops ----------------------------------
# Compiled by mypyc, a loop over the bytes is C: a few ns per byte, where each
# regular expression call above costs about 0.7 µs (the call, the match
# object, its groups) and was half of a scan.  Interpreted, the same loops
# are slower than the expressions, so the pure build keeps calling these
# (see _COMPILED).  Each function returns what the expression's fullmatch
# groups (or search) would; tests/sip/test_fast_grammar.py holds them to it
# on generated input.

def _char_class(chars: bytes) -> bytes:
    """A 256-byte table: 1 at every byte value in ``chars``."""
    table = bytearray(256)
    for c in chars:
        table[c] = 1
    return bytes(table)


_ALNUM: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_T_TOKEN: Final = _char_class(_ALNUM + b"-.!%*_+`'~")
_T_LABEL: Final = _char_class(_ALNUM + b"-")
_T_USER: Final = _char_class(_ALNUM + b"-_.!~*'()&=+$,;?/")
_T_URI_PARAM: Final = _char_class(_ALNUM + b"-_.!~*'()[]/:&+$")
_T_SCHEME: Final = _char_class(_ALNUM + b"+-.")
_T_DIGIT: Final = _char_class(b"0123456789")
# Inside an IPv6 reference's brackets (which characters, not the grammar:
# see _via_ipv6).
_T_IPV6: Final = _char_class(b"0123456789abcdefABCDEF:.")
# A parameter value in a response's Via elements as _hops reads them: a
# token, or colons and brackets too (received=<IPv6 address>, as sipgate's
# own stamp writes it for an IPv6 caller who asked for rport).
_T_HOP_VALUE: Final = _char_class(_ALNUM + b"-.!%*_+`'~:[]")
# [^<>"\s] (\s of a bytes pattern: space, \t, \n, \r, \f, \v)
_T_ADDR_SPEC: Final = bytes(0 if c in b'<>" \t\n\r\x0c\x0b' else 1 for c in range(256))
_METHODS: Final = (b"INVITE", b"ACK", b"BYE", b"CANCEL")


def _host_end(text: bytes, i: i64, n: i64) -> i64:
    """End of the host ([A-Za-z0-9-]+ labels joined by single dots: a DNS
    name or IPv4 address) that starts at ``i``; -1 when none starts there."""
    table = _T_LABEL
    start = i
    while i < n and table[text[i]]:
        i += 1
    if i == start:
        return -1
    while i + 1 < n and text[i] == 46 and table[text[i + 1]]:
        i += 1
        while i < n and table[text[i]]:
            i += 1
    return i


def _port_end(text: bytes, i: i64, n: i64) -> i64:
    """After ":" + 1-5 digits at ``i``: its end; ``i`` when there is no ":"
    there; -1 for a ":" without 1-5 digits that end there."""
    if i >= n or text[i] != 58:
        return i
    j = i + 1
    while j < n and _T_DIGIT[text[j]]:
        j += 1
    if j == i + 1 or j - i - 1 > 5:
        return -1
    return j


def _token_params_end(text: bytes, i: i64, n: i64, values: bytes = _T_TOKEN) -> i64:
    """End of (;token[=token])* from ``i`` (``i`` itself for none); with
    ``values``, a value is made of those characters instead."""
    table = _T_TOKEN
    while i < n and text[i] == 59:
        j = i + 1
        while j < n and table[text[j]]:
            j += 1
        if j == i + 1:
            return i
        if j < n and text[j] == 61:
            k = j + 1
            while k < n and values[text[k]]:
                k += 1
            if k == j + 1:
                return i
            j = k
        i = j
    return i


def _request_line_loop(line: bytes) -> tuple[bytes, bytes, bytes | None] | None:
    """_REQUEST_LINE.fullmatch(line).groups(), or None."""
    n: i64 = len(line)
    if n < 16 or line[n - 8:] != b" SIP/2.0":
        return None
    n -= 8
    space: i64 = -1
    k: i64 = 0
    while k < 7 and k < n:
        if line[k] == 32:
            space = k
            break
        k += 1
    if space < 0:
        return None
    method = line[:space]
    if method not in _METHODS:
        return None
    i = space + 1
    if line[i:i + 4] == b"sip:":
        i += 4
    elif line[i:i + 5] == b"sips:":
        i += 5
    else:
        return None
    j = i
    while j < n and _T_USER[line[j]]:
        j += 1
    if j > i and j < n and line[j] == 64:
        i = j + 1
    host_end = _host_end(line, i, n)
    if host_end < 0:
        return None
    port_end = _port_end(line, host_end, n)
    if port_end < 0:
        return None
    table = _T_URI_PARAM
    k = port_end
    while k < n:
        if line[k] != 59:
            return None
        j = k + 1
        while j < n and table[line[j]]:
            j += 1
        if j == k + 1:
            return None
        if j < n and line[j] == 61:
            j += 1
            while j < n and table[line[j]]:
                j += 1
        k = j
    return method, line[i:host_end], line[host_end + 1:port_end] if port_end > host_end else None


def _via_loop(value: bytes) -> tuple[bytes, bytes | None, bytes] | None:
    """_VIA.fullmatch(value).groups(), or None."""
    n: i64 = len(value)
    if value[:12] != b"SIP/2.0/UDP ":
        return None
    host_end = _host_end(value, 12, n)
    if host_end < 0:
        return None
    return _via_sent_by(value, 12, host_end, host_end, n)


def _via_sent_by(value: bytes, host_start: i64, host_end: i64, after: i64, n: i64, values: bytes = _T_TOKEN
                 ) -> tuple[bytes, bytes | None, bytes] | None:
    """A Via's (host, port, parameters) once its host is read (``after``:
    where the optional ":" port starts), or None: the port and parameters
    (their values made of ``values``) must run to the end."""
    port_end = _port_end(value, after, n)
    if port_end < 0 or _token_params_end(value, port_end, n, values) != n:
        return None
    return value[host_start:host_end], value[after + 1:port_end] if port_end > after else None, value[port_end:]


def _via_ipv6(value: bytes, values: bytes = _T_TOKEN) -> tuple[bytes, bytes | None, bytes] | None:
    """A Via value whose sent-by host is an IPv6 reference ("[" hex digits,
    colons and dots "]"): (the host without its brackets, port, parameters),
    or None.  Only the characters are checked here: EdgeProtocol._fast
    leaves a request to the full parser (which checks the literal as
    uri._host does) unless the host is its source address's text."""
    n: i64 = len(value)
    if value[:13] != b"SIP/2.0/UDP [":
        return None
    close: i64 = 13
    while close < n and _T_IPV6[value[close]]:
        close += 1
    if close == 13 or close >= n or value[close] != 93:  # ("]")
        return None
    return _via_sent_by(value, 13, close, close + 1, n, values)


def _hop_via(value: bytes) -> tuple[bytes, bytes | None, bytes] | None:
    """A Via element of a response as _hops reads it when _via does not:
    the host a DNS name, an IPv4 address or an IPv6 reference (its brackets
    dropped, the literal checked as uri._host checks it: the full path
    would not relay past a malformed one), parameter values also with
    colons and brackets (_T_HOP_VALUE); None otherwise."""
    n: i64 = len(value)
    if value[:12] != b"SIP/2.0/UDP ":
        return None
    host_end = _host_end(value, 12, n)
    if host_end >= 0:
        return _via_sent_by(value, 12, host_end, host_end, n, _T_HOP_VALUE)
    v = _via_ipv6(value, _T_HOP_VALUE)
    if v is None or not _ipv6_literal(v[0]):
        return None
    return v


def _ipv6_literal(text: bytes) -> bool:
    """``text`` (hex digits, colons and dots) is an IPv6 address as
    uri._host accepts one."""
    try:
        IPv6Address(text.decode("ascii"))
    except ValueError:
        return False
    return True


def _name_addr_loop(value: bytes) -> bytes | None:
    """_NAME_ADDR.fullmatch(value).group(1), or None."""
    n: i64 = len(value)
    i: i64 = 0
    if n and value[0] == 34:  # "display name"
        i = 1
        while i < n and value[i] != 34:
            if value[i] == 92:
                return None
            i += 1
        if i == n:
            return None
        i += 1
        while i < n and (value[i] == 32 or value[i] == 9):
            i += 1
    elif n and _T_TOKEN[value[0]]:  # display name of tokens
        while True:
            while i < n and _T_TOKEN[value[i]]:
                i += 1
            blank = i
            while i < n and (value[i] == 32 or value[i] == 9):
                i += 1
            if i == blank or i == n or not _T_TOKEN[value[i]]:
                break
    if i + 1 >= n or value[i] != 60 or not 97 <= value[i + 1] | 32 <= 122:
        return None  # (<, then a scheme's first letter)
    i += 2
    while i < n and _T_SCHEME[value[i]]:
        i += 1
    if i >= n or value[i] != 58:
        return None
    i += 1
    while i < n and _T_ADDR_SPEC[value[i]]:
        i += 1
    if i >= n or value[i] != 62:
        return None
    i += 1
    if _token_params_end(value, i, n) != n:
        return None
    return value[i:]


def _cseq_number(value: bytes, n: i64) -> tuple[i64, i64]:
    """(end of the 1-10 digits a CSeq value starts with, start of what
    follows the blanks after them), or (-1, -1)."""
    i: i64 = 0
    while i < n and _T_DIGIT[value[i]]:
        i += 1
    if i == 0 or i > 10:
        return -1, -1
    j = i
    while j < n and (value[j] == 32 or value[j] == 9):
        j += 1
    if j == i:
        return -1, -1
    return i, j


def _cseq_loop(value: bytes) -> tuple[bytes, bytes] | None:
    """_CSEQ.fullmatch(value).groups(), or None."""
    i, j = _cseq_number(value, len(value))
    if i < 0:
        return None
    method = value[j:]
    if method not in _METHODS:
        return None
    return value[:i], method


def _cseq_any_loop(value: bytes) -> bytes | None:
    """_CSEQ_ANY.fullmatch(value).group(1), or None."""
    n: i64 = len(value)
    i, j = _cseq_number(value, n)
    if i < 0 or j == n:
        return None
    k = j
    while k < n and _T_TOKEN[value[k]]:
        k += 1
    if k != n:
        return None
    return value[:i]


def _uint(digits: bytes) -> int:
    """The value of 1-10 ASCII digits, or -1 for anything else (a loop
    over them compiled; isdigit() and int() interpreted)."""
    n: i64 = len(digits)
    if not _COMPILED:
        return int(digits) if n <= 10 and digits.isdigit() else -1
    if n == 0 or n > 10:
        return -1
    value: i64 = 0
    i: i64 = 0
    while i < n:
        c = digits[i]
        if c < 48 or c > 57:
            return -1
        value = value * 10 + (c - 48)
        i += 1
    return value


def _param_loop(params: bytes, name: bytes) -> tuple[bool, bytes | None]:
    """(found, value) of the first parameter ``name`` (lower case) in
    ``params`` (";token[=token]..." as _PARAMS matched it), as the
    _TAG/_BRANCH/_RPORT_VALUE search would say: value None without "="."""
    n: i64 = len(params)
    m: i64 = len(name)
    i: i64 = 0
    while i < n:
        j = i + 1  # params[i] is ";"
        k = j
        while k < n and params[k] != 59 and params[k] != 61:
            k += 1
        if k - j == m:
            same = True
            x: i64 = 0
            while x < m:
                c = params[j + x]
                if (c | 32 if 65 <= c <= 90 else c) != name[x]:
                    same = False
                    break
                x += 1
            if same:
                if k < n and params[k] == 61:
                    e = k + 1
                    while e < n and params[e] != 59:
                        e += 1
                    return True, params[k + 1:e]
                return True, None
        while k < n and params[k] != 59:
            k += 1
        i = k
    return False, None



def _route_loop(value: bytes) -> tuple[bytes, bytes | None, bytes] | None:
    """_ROUTE.fullmatch(value).groups(), or None."""
    n: i64 = len(value)
    i: i64
    if value[:5] == b"<sip:":
        i = 5
    elif value[:6] == b"<sips:":
        i = 6
    else:
        return None
    host_end = _host_end(value, i, n)
    if host_end < 0:
        return None
    port_end = _port_end(value, host_end, n)
    if port_end < 0:
        return None
    params_end = _token_params_end(value, port_end, n)
    if params_end != n - 1 or value[n - 1] != 62:
        return None
    return value[i:host_end], value[host_end + 1:port_end] if port_end > host_end else None, value[port_end:n - 1]


def _probe() -> None:
    """(mypyc's compiled functions have no __code__: see _COMPILED.)"""


# Whether this module runs compiled: the byte loops are used then, the
# regular expressions otherwise.
_COMPILED: Final = not hasattr(_probe, "__code__")


def configure_walks(walk: Any) -> Any:
    """Hand sipgate/sip/_walk.c this module's tables (header names and the
    value grammars' character classes): one definition of both."""
    walk.configure(_T_TOKEN, _COMPACT_SLOTS, _LONG_SLOTS, _T_LABEL, _T_USER, _T_URI_PARAM, _T_SCHEME, _T_ADDR_SPEC,
                   _T_HOP_VALUE)
    return walk


def _c_walks() -> tuple[Any, Any, Any, Any]:
    """(scan, relay_response, splice, forbidden) of sipgate/sip/_walk.c,
    configured, or Nones: the compiled build has them (built and guarded
    with it, see sipgate.native), a build from before them and the
    interpreted build do not."""
    if not _COMPILED:
        return None, None, None, None
    try:
        from sipgate.sip import _walk  # type: ignore[attr-defined]
    except ImportError:
        return None, None, None, None
    configure_walks(_walk)
    return _walk.scan, _walk.relay_response, _walk.splice, _walk.forbidden


# scan, relay_response_bytes, _splice and forbidden_response's join in C
# where the compiled build has them: _scan, _relay_response_loop, _splice
# and _forbidden_join, value for value, at a fraction of the cost
# (tests/sip/test_fast_grammar.py holds them to each other).
_C_WALKS: Final = _c_walks()
_C_SCAN: Final = _C_WALKS[0]
_C_RELAY_RESPONSE: Final = _C_WALKS[1]
_C_SPLICE: Final = _C_WALKS[2]
_C_FORBIDDEN: Final = _C_WALKS[3]


def _request_line(line: bytes) -> tuple[bytes, bytes, bytes | None] | None:
    """(method, host, port) of _REQUEST_LINE, or None."""
    if _COMPILED:
        return _request_line_loop(line)
    m = _REQUEST_LINE.fullmatch(line)
    return None if m is None else m.groups()  # type: ignore[return-value]


def _via(value: bytes) -> tuple[bytes, bytes | None, bytes] | None:
    """(host, port, parameters) of a _VIA, or None."""
    if _COMPILED:
        return _via_loop(value)
    m = _VIA.fullmatch(value)
    return None if m is None else m.groups()  # type: ignore[return-value]


def _name_addr(value: bytes) -> bytes | None:
    """The parameters after a _NAME_ADDR's address, or None."""
    if _COMPILED:
        return _name_addr_loop(value)
    m = _NAME_ADDR.fullmatch(value)
    return None if m is None else m.group(1)


def _cseq_any(value: bytes) -> bytes | None:
    """The number of a _CSEQ_ANY (any method), or None."""
    if _COMPILED:
        return _cseq_any_loop(value)
    m = _CSEQ_ANY.fullmatch(value)
    return None if m is None else m.group(1)


def _cseq(value: bytes) -> tuple[bytes, bytes] | None:
    """(number, method) of a _CSEQ, or None."""
    if _COMPILED:
        return _cseq_loop(value)
    m = _CSEQ.fullmatch(value)
    return None if m is None else m.groups()  # type: ignore[return-value]


_SEARCHES: Final = {b"tag": _TAG, b"branch": _BRANCH, b"rport": _RPORT_VALUE, b"received": _RECEIVED, b"sgt": _SGT}


def _param(params: bytes, name: bytes) -> tuple[bool, bytes | None]:
    """(found, value) of the first ``name`` parameter (a key of _SEARCHES)
    in matched _PARAMS, as its expression's search says: the value is None
    when it has no "="."""
    if _COMPILED:
        return _param_loop(params, name)
    m = _SEARCHES[name].search(params)
    return (False, None) if m is None else (True, m.group(1))


def _route(value: bytes) -> tuple[bytes, bytes | None, bytes] | None:
    """(host, port, parameters) of a _ROUTE, or None."""
    if _COMPILED:
        return _route_loop(value)
    m = _ROUTE.fullmatch(value)
    return None if m is None else m.groups()  # type: ignore[return-value]


def _normal(data: bytes, start: int, end: int) -> bool:
    """The lines from ``start`` to ``end`` are all _NORMAL_LINES (the
    interpreted build's test; the compiled walks test each line as they
    go, see _rendered)."""
    return _NORMAL_LINES.fullmatch(data, start, end) is not None


def _classify(name: bytes) -> int | None:
    """Slot of a header name not seen before; None when it is not a token."""
    if _HEADER_NAME.fullmatch(name) is None:
        return None
    lower = name.decode("ascii").lower()
    slot = _SLOTS.get(COMPACT_FORMS.get(lower, lower), -2)
    if len(_NAMES) < _NAMES_LIMIT:
        _NAMES[name] = slot
    return slot


# What scan() returns: a plain tuple, the cheapest thing to build per datagram.
Scanned = tuple
# (method, host, to_tag, from_tag, branch, via_port, rport, call_id,
#  cseq_number, vias, from_, to, cseq, max_forwards, end, via_host,
#  via_params, route, record_route, content_length, at); rport is None when the
#  top Via has no rport parameter, b"" when it has one without a value; end
#  is the offset of the empty line.
# (Final: mypyc puts the literal in place of each name.)
METHOD: Final = 0
HOST: Final = 1
TO_TAG: Final = 2
FROM_TAG: Final = 3
BRANCH: Final = 4
VIA_PORT: Final = 5
RPORT: Final = 6
CALL_ID: Final = 7
CSEQ_NUMBER: Final = 8
VIAS: Final = 9
FROM_: Final = 10
TO: Final = 11
CSEQ: Final = 12
MAX_FORWARDS: Final = 13
END: Final = 14
VIA_HOST: Final = 15
VIA_PARAMS: Final = 16
ROUTE: Final = 17
RECORD_ROUTE: Final = 18
CONTENT_LENGTH: Final = 19
AT: Final = 20
# AT: the line index of each value slot's header (From, To, Call-ID, CSeq,
# Max-Forwards, Content-Length, Route, Record-Route, then the first Via; 0
# when absent; a tenth item is scan's own), or None when one of them
# appears twice (or, in the compiled build, when the head is not in
# rendered form): where the lines relay_request_bytes rewrites are.


def _head_lines(data: bytes, limits: SipLimits) -> tuple[int, list[bytes]] | None:
    """(offset of the empty line, header section split into lines), or None
    unless every line break is a CRLF and there is no other CR, LF or NUL,
    and the section is within ``limits`` (header lines, line length: over
    a limit, the full parser says what happens)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end]
    lines = head.split(b"\r\n")
    n = len(lines)
    # The split consumed n - 1 CRLFs: any other CR, LF or NUL is refused.
    if n > _MAX_LINES or n > limits.max_headers + 1 or \
            len(head) - len(head.translate(None, b"\r\n\0")) != 2 * (n - 1):
        return None
    limit = limits.max_header_line
    if len(head) > limit and max(map(len, lines)) > limit:
        return None
    return end, lines


def _take(slot: int, value: bytes, i: int, vias: list[bytes], values: list[bytes | None], at: list[int]) -> bool:
    """Keep the value of a header scan reads (``slot`` as in _SLOTS, on
    line ``i``); False: refuse the message."""
    if slot < 0:
        if value.find(b",") >= 0:  # (not "in": bytes.__contains__ tries an int first, raising inside)
            return False
        if not vias:
            at[8] = i
        vias.append(value)
        return True
    old = values[slot]
    if old is None:
        if slot >= 6 and value.find(b",") >= 0:
            return False  # (a Route or Record-Route list: the full path's business)
        values[slot] = value
        at[slot] = i
    elif old != value and slot < 6:
        return False  # conflicting single-valued headers: the full parser says 400
    else:
        at[9] = 1  # a header twice: no line indexes (see AT)
    return True


# What _fields returns: (offset of the empty line, the request line, the Via
# values, the values of the other slots, line indexes as AT plus [9] = 1
# when a header it reads appears twice).
_Fields = tuple[int, bytes, list[bytes], list["bytes | None"], list[int]]


def _fields_split(data: bytes, limits: SipLimits) -> _Fields | None:
    """The head's framing checked (_head_lines) and the headers scan reads
    collected, with C string methods: the interpreted build's _fields."""
    framed = _head_lines(data, limits)
    if framed is None:
        return None
    end, lines = framed
    vias: list[bytes] = []
    values: list[bytes | None] = [None, None, None, None, None, None, None, None]
    at = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    names = _NAMES
    for i in range(1, len(lines)):
        name, colon, value = lines[i].partition(b":")
        if not colon:
            return None
        slot = names.get(name)
        if slot is None:
            slot = _classify(name)
            if slot is None:
                return None
        if slot == -2:
            continue
        if slot == PROXY_REQUIRE:
            return None
        value = value.strip(b" \t")
        if not value or not _take(slot, value, i, vias, values, at):
            return None
    return end, lines[0], vias, values, at


def _name_slot(data: bytes, start: i64, stop: i64) -> int:
    """_NAMES / _classify's slot of the token data[start:stop]."""
    length = stop - start
    if length == 1:
        return _COMPACT_SLOTS[data[start]] - 2
    if length >= 16:
        return -2
    entry = _LONG_SLOTS[length << 5 | data[start] & 31]
    if entry is None:
        return -2
    name, slot = entry
    x: i64 = 0
    while x < length:
        c = data[start + x]
        if (c | 32 if 65 <= c <= 90 else c) != name[x]:
            return -2
        x += 1
    return slot


def _line_end(data: bytes, i: i64, n: i64) -> i64:
    """Offset of the CRLF that ends the line containing ``i``, or -1 for a
    bare CR, an LF or a NUL before it, or no CRLF before ``n``."""
    while i < n:
        c = data[i]
        if c <= 13:
            if c == 13:
                return i if i + 1 < n and data[i + 1] == 10 else -1
            if c == 10 or c == 0:
                return -1
        i += 1
    return -1


def _trimmed(text: bytes, a: i64, b: i64) -> bytes:
    """text[a:b] without spaces and tabs at either end."""
    while a < b and (text[a] == 32 or text[a] == 9):
        a += 1
    while b > a and (text[b - 1] == 32 or text[b - 1] == 9):
        b -= 1
    return text[a:b]


def _colon(data: bytes, pos: i64, n: i64) -> i64:
    """Offset of the colon after the header name at ``pos``, or -1 when
    the name is not a token followed by a colon before ``n``."""
    k = pos
    while k < n and _T_TOKEN[data[k]]:
        k += 1
    return k if k > pos and k < n and data[k] == 58 else -1


def _rendered(text: bytes, colon: i64, end: i64) -> bool:
    """The header line whose colon and end are at ``colon`` and ``end`` is
    as the full path renders it: ": ", then a value with no blank at either
    end (see _norm)."""
    if colon + 2 >= end or text[colon + 1] != 32:
        return False
    c = text[colon + 2]
    return c != 32 and c != 9 and text[end - 1] != 32 and text[end - 1] != 9


def _fields_loop(data: bytes, limits: SipLimits) -> _Fields | None:
    """_fields_split in one walk over the head's bytes, slicing only the
    values it keeps: the compiled build's _fields where sipgate/sip/_walk.c
    is not built (each byte is a few ns there; interpreted, this is the
    slower one), and the reference of that C walk.  It also tells whether the
    lines relay_request_bytes keeps as they are (all but Max-Forwards,
    Content-Length and the first Via) are in rendered form (see _normal),
    which saves it a second walk: when one is not, at[9] is set, as for a
    header named twice."""
    n: i64 = len(data)
    max_lines: i64 = min(_MAX_LINES, limits.max_headers + 1)
    max_line: i64 = limits.max_header_line
    # Every line ends at a CR that must be followed by LF; an LF or NUL
    # anywhere else refuses the message.  The head ends at the first empty
    # line (the first CRLF CRLF); none before the datagram ends: None.
    i = _line_end(data, 0, n)
    if i < 0 or i > max_line:
        return None
    line0 = data[:i]
    vias: list[bytes] = []
    values: list[bytes | None] = [None, None, None, None, None, None, None, None]
    at = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    pos = i + 2
    lineno: i64 = 0
    normal = True  # (every line so far _rendered)
    while pos + 1 >= n or data[pos] != 13 or data[pos + 1] != 10:
        lineno += 1
        if lineno >= max_lines:
            return None
        k = _colon(data, pos, n)
        if k < 0:
            return None
        e = _line_end(data, k + 1, n)
        if e < 0 or e - pos > max_line:
            return None
        slot = _name_slot(data, pos, k)
        if slot == PROXY_REQUIRE:
            return None
        # (The lines _splice rewrites do not count: Max-Forwards,
        # Content-Length, the first Via.  SIPp pads Content-Length.)
        if normal and slot != 4 and slot != 5 and (slot != -1 or vias):
            normal = _rendered(data, k, e)
        if slot != -2:
            value = _trimmed(data, k + 1, e)
            if not value or not _take(slot, value, lineno, vias, values, at):
                return None
        pos = e + 2
    if not normal:
        at[9] = 1  # (no line indexes: relay_request_bytes renders each line, see _splice)
    return pos - 2, line0, vias, values, at


def scan_limits(limits: SipLimits) -> tuple[object, object, object, object]:
    """``limits`` as scan hands them to sipgate/sip/_walk.c, made once: the
    edge keeps them, so a datagram does not look up four attributes of an
    interpreted object and box the sum (benchmarks/README.md, "Latency at
    low rates")."""
    return min(_MAX_LINES, limits.max_headers + 1), limits.max_header_line, limits.max_uri, limits.max_vias


def scan(data: bytes, limits: SipLimits = DEFAULT_LIMITS,
         packed: tuple[object, object, object, object] | None = None) -> Scanned | None:
    """The fields of a common-shaped INVITE or ACK (see the index names
    above), or None: use the full parser (also for anything over one of
    ``limits``; ``packed``, when given, is ``scan_limits(limits)``)."""
    if _C_SCAN is not None:
        if packed is None:
            packed = scan_limits(limits)
        return _C_SCAN(data, packed[0], packed[1], packed[2], packed[3])  # type: ignore[no-any-return]
    return _scan(data, limits)


def _scan(data: bytes, limits: SipLimits) -> Scanned | None:
    """scan in Python (sipgate/sip/_walk.c's scan is this, value for value)."""
    fields = _fields_loop(data, limits) if _COMPILED else _fields_split(data, limits)
    if fields is None:
        return None
    end, line0, vias, values, at = fields
    r = _request_line(line0)
    if r is None:
        return None
    method, host, port = r
    if len(line0) - len(method) - 9 > limits.max_uri:
        return None  # (the full parser answers 414)
    if port is not None and _uint(port) > 65535:
        return None
    from_, to, call_id, cseq, max_forwards, length, route, record_route = values
    if not vias or from_ is None or to is None or call_id is None or cseq is None or len(vias) > limits.max_vias:
        return None
    c = _cseq(cseq)
    if c is None or c[1] != method:
        return None
    number = _uint(c[0])
    if number > _MAX_CSEQ:
        return None
    if max_forwards is not None:
        max_forwards = _uint(max_forwards)  # type: ignore[assignment]
        if max_forwards < 0:  # type: ignore[operator]
            return None
    if length is not None:
        length = _uint(length)  # type: ignore[assignment]
        if length < 0 or len(data) - end - 4 < length:  # type: ignore[operator]
            return None
    v = _via(vias[0]) or _via_ipv6(vias[0])
    to_params = _name_addr(to)
    from_params = _name_addr(from_)
    if v is None or to_params is None or from_params is None:
        return None
    via_host, via_port, via_params = v
    if via_port is not None:
        via_port = _uint(via_port)  # type: ignore[assignment]
        if via_port > 65535:  # type: ignore[operator]
            return None
    # The first parameter of a name wins, as in parse_params; a tag or
    # branch without "=" (or an empty tag) counts as none.
    to_tag = _param(to_params, b"tag")[1] or None
    from_tag = _param(from_params, b"tag")[1] or None
    branch = _param(via_params, b"branch")[1]
    has_rport, rport = _param(via_params, b"rport")
    return (method, host.decode("ascii").lower(), to_tag, from_tag, branch, via_port,
            (rport or b"") if has_rport else None, call_id, number, vias, from_, to, cseq, max_forwards,
            end, via_host.decode("ascii").lower(), via_params, route, record_route is not None, length,
            None if at[9] else at)


# Keyed BLAKE2b states by (digest size, key), ready to copy: a copy skips
# the key block's compression and the keyword parsing of a new hash
# (0.45 µs instead of 0.8).  Bounded: sipgate has a key or two.
_KEYED: Final[dict[tuple[int, bytes], Any]] = {}


# The C version where the compiled build has it (sipgate/sip/_tag.c).
_C_KEYED_HEX: Final[Any] = _tags.keyed_hex


def _keyed_hex(key: bytes, size: int, material: bytes) -> bytes:
    """blake2b(material, digest_size=size, key=key).hexdigest(), encoded."""
    if _C_KEYED_HEX is not None:
        return _C_KEYED_HEX(key, size, material)  # type: ignore[no-any-return]
    state = _KEYED.get((size, key))
    if state is None:
        state = blake2b(digest_size=size, key=key)
        if len(_KEYED) < 8:
            _KEYED[(size, key)] = state
    h = state.copy()
    h.update(material)
    return h.hexdigest().encode()


# (Final: the compiled build keeps it in a C static, not a lookup by name
# in this module's globals per call.)
_to_tag: Final = _tags.to_tag

# The length of every To-tag to_tag_for makes: b"sg" and 16 hex digits.
OWN_TAG_LENGTH: Final = 18


def to_tag_for(s: Scanned, key: bytes) -> bytes:
    """The To-tag of sipgate's stateless response (as ``derive_to_tag``).

    ``key`` is ``sipgate.sip.build.hash_key(secret)``.
    """
    return _to_tag(key, s[CALL_ID], s[FROM_TAG] or b"", s[BRANCH] or b"", s[CSEQ_NUMBER])


def branch_matches(branch: bytes | None, material: bytes | None, key: bytes) -> bool:
    """``branch`` is the one sipgate gave the request whose top Via the
    ``material`` describes (as ``proxy.via_branch``)."""
    if branch is None or material is None:
        return False
    return branch == _COOKIE + _keyed_hex(key, 12, material)


def forbidden_response(s: Scanned, key: bytes, extra: bytes) -> bytes:
    """403 Forbidden to the scanned request (as ``build_response``).

    ``extra`` is the already encoded "Name: value\\r\\n" lines after CSeq
    (Warning, Server).
    """
    tag = to_tag_for(s, key)
    if _C_FORBIDDEN is not None:
        return _C_FORBIDDEN(s, tag, extra)  # type: ignore[no-any-return]
    return _forbidden_join(s, tag, extra)


def _forbidden_join(s: Scanned, tag: bytes, extra: bytes) -> bytes:
    """forbidden_response given the To-tag (sipgate/sip/_walk.c's
    forbidden is this, byte for byte)."""
    return b"".join((
        b"SIP/2.0 403 Forbidden\r\nVia: ", b"\r\nVia: ".join(s[VIAS]),
        b"\r\nFrom: ", s[FROM_],
        b"\r\nTo: ", s[TO], b";tag=", tag,
        b"\r\nCall-ID: ", s[CALL_ID],
        b"\r\nCSeq: ", s[CSEQ], b"\r\n",
        extra,
        b"Content-Length: 0\r\n\r\n",
    ))


def _norm(line: bytes) -> bytes:
    """``line`` as the full path renders it back: "Name: value", one space
    after the colon, the value stripped (the name is a token: scanned)."""
    colon = line.find(b":")
    if _rendered(line, colon, len(line)):
        return line
    return line[:colon] + b": " + line[colon + 1:].strip(b" \t")


# Route values already read: value -> (host, lowered; its sgt= trunk SID)
# or () when it is not of the common shape.  Every in-dialog request of a
# call carries the same Route (sipgate's own Record-Route, sgt= and all),
# so a call reads it once; bounded, and emptied when full.
_ROUTES: Final[dict[bytes, tuple[str, bytes | None] | tuple[()]]] = {}
_ROUTES_MAX: Final = 4096


def _route_parts(route: bytes) -> tuple[str, bytes | None] | tuple[()]:
    """(host lowered, sgt= trunk SID) of a Route value, or () when it is
    not of the common shape."""
    r = _route(route)
    if r is None:
        return ()
    host, port, params = r
    if port is not None and _uint(port) > 65535:
        return ()
    return host.decode("ascii").lower(), _param(params, b"sgt")[1] or None


def sipgate_route(s: Scanned, own_hosts: frozenset[str]) -> tuple[bool, bytes | None] | None:
    """(top Route is sipgate's, its sgt= trunk SID) as ``_dialog_route``
    would say, or None when the Route is not of the common shape."""
    route = s[ROUTE]
    if route is None:
        return False, None
    parts = _ROUTES.get(route)
    if parts is None:
        parts = _route_parts(route)
        if len(_ROUTES) >= _ROUTES_MAX:
            _ROUTES.clear()
        _ROUTES[route] = parts
    if not parts:
        return None
    host, sgt = parts  # type: ignore[misc]
    if host not in own_hosts:
        return False, None
    return True, sgt


def relay_request_bytes(s: Scanned, data: bytes, secret_key: bytes, via_prefix: bytes, source: str, port: int,
                        record_route: bytes | None, pop_route: bool) -> bytes | None:
    """The relayed request, as ``relay_request`` would write it, or None.

    ``via_prefix`` is "SIP/2.0/UDP host:port;branch=" of the listener; the
    branch is computed here as ``compute_branch`` does (RFC 3261 clients
    only: a top branch with the magic cookie).
    """
    branch = s[BRANCH]
    if not branch or not branch.startswith(_COOKIE):
        return None
    via_port = s[VIA_PORT]
    material = b"\0".join((b"3261", branch, s[VIA_HOST].encode(), str(via_port).encode() if via_port else b""))
    ours = via_prefix + _COOKIE + _keyed_hex(secret_key, 12, material)
    # The sender's Via: received/rport (see proxy._stamp_via).
    host = source.partition("%")[0]
    params = s[VIA_PARAMS]
    fill_rport = s[RPORT] == b""  # rport without a value: the client asks for it (RFC 3581)
    if not fill_rport and s[VIA_HOST] == host.lower() and not _param(params, b"received")[0]:
        stamped = s[VIAS][0]  # (nothing to add or drop: the loop below would give the value back as it is)
    else:
        top = [s[VIAS][0].partition(b";")[0]]
        for param in params.split(b";")[1:]:
            name = param.partition(b"=")[0].lower()
            if name == b"received":
                continue
            if name == b"rport" and fill_rport and param.find(b"=") < 0:
                param = b"rport=" + str(port).encode()
            top.append(param)
        if fill_rport or s[VIA_HOST] != host.lower():
            top.append(b"received=" + host.encode())
        stamped = b";".join(top)
    at = s[AT]
    if at is not None and _C_SPLICE is not None:
        return _C_SPLICE(data, s, ours, stamped, record_route, pop_route)  # type: ignore[no-any-return]
    lines = data[:s[END]].split(b"\r\n")
    body = data[s[END] + 4:]
    if s[CONTENT_LENGTH] is not None:
        body = body[:s[CONTENT_LENGTH]]
    # (The compiled walk gives line indexes only when the lines _splice
    # keeps are in rendered form.)
    if at is not None and (_COMPILED or _normal(data, len(lines[0]), s[END])):
        return _splice(s, lines, at, body, ours, stamped, record_route, pop_route)
    out = [lines[0], b"Via: " + ours]
    rr_pending = record_route is not None and s[RECORD_ROUTE]
    if record_route is not None and not rr_pending:
        out.append(b"Record-Route: " + record_route)
    via_done = False
    route_done = not pop_route
    mf = s[MAX_FORWARDS]
    names = _NAMES
    for i in range(1, len(lines)):
        line = lines[i]
        name = line[:line.find(b":")]
        slot = names.get(name)
        if slot is None:
            slot = _classify(name)
        if slot == -1:
            if not via_done:
                out.append(name + b": " + stamped)
                via_done = True
                continue
        elif slot == 4:
            out.append(name + b": " + str(max(mf - 1, 0)).encode())
            continue
        elif slot == 5:
            out.append(name + b": " + str(len(body)).encode())
            continue
        elif slot == 6:
            if not route_done:
                route_done = True
                continue  # the one element of sipgate's own Route line goes
        elif slot == 7 and rr_pending:
            out.append(b"Record-Route: " + record_route)  # type: ignore[operator]
            rr_pending = False
        out.append(_norm(line))
    if mf is None:
        out.append(b"Max-Forwards: 70")
    if s[CONTENT_LENGTH] is None:
        out.append(b"Content-Length: " + str(len(body)).encode())
    out.append(b"")
    out.append(b"")
    return b"\r\n".join(out) + body


def _splice(s: Scanned, lines: list[bytes], at: list[int], body: bytes, ours: bytes, stamped: bytes,
            record_route: bytes | None, pop_route: bool) -> bytes:
    """relay_request_bytes for a head already in the form the full path
    renders (every line "Name: value", see _NORMAL_LINES) with each header
    it rewrites present at most once: the same bytes, by replacing the few
    lines that change at the indexes scan recorded instead of visiting
    every line."""
    out = lines[:]
    out[at[8]] = _revalued(lines[at[8]], stamped)
    mf = s[MAX_FORWARDS]
    if mf is not None:
        out[at[4]] = _revalued(lines[at[4]], str(max(mf - 1, 0)).encode())
    else:
        out.append(b"Max-Forwards: 70")
    length = str(len(body)).encode()
    if s[CONTENT_LENGTH] is not None:
        out[at[5]] = _revalued(lines[at[5]], length)
    else:
        out.append(b"Content-Length: " + length)
    # Deletions and insertions from the last line up, so that the
    # indexes still to be used stay valid.
    rr_at = at[7] if record_route is not None and s[RECORD_ROUTE] else 0
    route_at = at[6] if pop_route else 0
    if rr_at > route_at:
        out.insert(rr_at, b"Record-Route: " + record_route)  # type: ignore[operator]
        if route_at:
            del out[route_at]
    else:
        if route_at:
            del out[route_at]
        if rr_at:
            out.insert(rr_at, b"Record-Route: " + record_route)  # type: ignore[operator]
    if record_route is not None and not rr_at:
        out.insert(1, b"Record-Route: " + record_route)
    out.insert(1, b"Via: " + ours)
    out.append(b"")
    out.append(b"")
    return b"\r\n".join(out) + body


def _revalued(line: bytes, value: bytes) -> bytes:
    """A header line with its name as written and a new value."""
    return line[:_colon(line, 0, len(line)) if _COMPILED else line.find(b":")] + b": " + value


def _header_split(line: bytes) -> tuple[int, bytes] | None:
    """(slot as in _SLOTS, value without blanks around it) of a header line
    of a response, for _relay_response_split; the value is b"" for a header
    the response relay does not read (slot -2, or Route / Record-Route);
    None when the line is not a token, a colon and a value (the full path's
    business)."""
    name, colon, value = line.partition(b":")
    if not colon:
        return None
    found = _NAMES.get(name)
    slot = _classify(name) if found is None else found
    if slot is None:
        return None
    if slot <= -2 or slot >= 6:  # (Proxy-Require in a response means nothing)
        return slot, b""
    return slot, value.strip(b" \t")


# What relay_response_bytes returns: (the response without sipgate's Via,
# popped Via host, popped Via port, next hop host, next hop port, popped Via
# branch, the branch material of the next Via or None for an RFC 2543 one).
_Relayed = tuple[bytes, str, "int | None", str, int, "bytes | None", "bytes | None"]
# (the same without the bytes, as _hops works it out)
_Hops = tuple[str, "int | None", str, int, "bytes | None", "bytes | None"]


def relay_response_bytes(data: bytes, limits: SipLimits = DEFAULT_LIMITS) -> _Relayed | None:
    """A response with its top Via popped, as ``relay_response`` would
    write it: (bytes, popped Via host, popped Via port, next hop host, next
    hop port, popped Via branch, the branch material of the next Via or
    None for an RFC 2543 one), or None (the full path decides, also over
    ``limits``)."""
    if _C_RELAY_RESPONSE is not None:
        return _C_RELAY_RESPONSE(data, min(_MAX_LINES, limits.max_headers + 1),  # type: ignore[no-any-return]
                                 limits.max_header_line, limits.max_vias)
    return _relay_response_loop(data, limits) if _COMPILED else _relay_response_split(data, limits)


def _status_line_loop(data: bytes, n: i64) -> bool:
    """_STATUS_LINE.fullmatch(data[:n]) as a byte loop."""
    if n < 13 or not data.startswith(b"SIP/2.0 "):
        return False
    if not 49 <= data[8] <= 54 or not _T_DIGIT[data[9]] or not _T_DIGIT[data[10]] or data[11] != 32:
        return False
    # The reason phrase: [^ \t] first, [^ \t] last, [^\r\n] between.
    c = data[12]
    if c == 32 or c == 9 or data[n - 1] == 32 or data[n - 1] == 9:
        return False
    x: i64 = 13
    while x < n - 1:
        c = data[x]
        if c == 13 or c == 10:
            return False
        x += 1
    return True


def _response_body(data: bytes, end: int, cseq: bytes, max_forwards: bytes | None, length: bytes | None
                   ) -> bytes | None:
    """The body of a response whose CSeq, Max-Forwards and Content-Length
    values pass (the full path's business otherwise), or None."""
    number = _cseq_any(cseq)
    if number is None or _uint(number) > _MAX_CSEQ:
        return None
    if max_forwards is not None and _uint(max_forwards) < 0:
        return None
    body = data[end + 4:]
    if length is not None:
        size = _uint(length)
        if size < 0 or len(body) < size:
            return None
        body = body[:size]
    return body


def _next_hop(first: bytes, second: bytes | None) -> tuple[bytes, bytes, bytes | None] | None:
    """From the values of the first Via line and the next one (if any):
    (sipgate's Via element, the next hop's, and what stays of the first
    line: its value after the first element, or None when the line goes).
    Our Via is the first element of the first Via line; the next hop's is
    the second element of that line, or the first of the next line."""
    elements = [e.strip(b" \t") for e in first.split(b",")]
    if len(elements) > 1:
        rest = first[first.find(b",") + 1:].lstrip(b" \t,")
        if not all(elements) or not rest:
            return None
        return elements[0], elements[1], rest
    if second is None:
        return None  # no Via left: the full path drops it
    following = [e.strip(b" \t") for e in second.split(b",")]
    if not all(following):
        return None
    return elements[0], following[0], None


def _hops(top_text: bytes, next_text: bytes) -> _Hops | None:
    """relay_response_bytes's answer but the bytes, from the popped Via
    element and the next hop's, or None."""
    top = _via(top_text) or _hop_via(top_text)
    nxt = _via(next_text) or _hop_via(next_text)
    if top is None or nxt is None:
        return None
    top_host, top_port, top_params = top
    next_host, next_port, next_params = nxt
    top_number = _uint(top_port) if top_port is not None else -1
    next_number = _uint(next_port) if next_port is not None else 0
    if top_number > 65535 or next_number > 65535:
        return None
    has_received, received = _param(next_params, b"received")
    if received is not None and len(received) > 1 and received[0] == 91 and received[-1] == 93:
        received = received[1:-1]  # (Via.received drops an IPv6 reference's brackets)
    if has_received and not received:
        return None  # (an empty received: the full path's business)
    # The received host as written (relay_response does not lower it).
    host = received.decode("ascii") if received else next_host.decode("ascii").lower()
    rvalue = _param(next_params, b"rport")[1]
    rport = _uint(rvalue) if rvalue is not None and len(rvalue) <= 5 else 0
    if 0 < rport < 65536:
        port = rport
    else:
        port = next_number or 5060
    # What the branch check needs (see proxy.via_branch): the top branch
    # and, when the next Via is an RFC 3261 one, the material of the branch
    # sipgate would have given it.
    top_branch = _param(top_params, b"branch")[1]
    next_branch = _param(next_params, b"branch")[1]
    material = None
    if next_branch is not None and next_branch.startswith(_COOKIE):
        material = b"\0".join((b"3261", next_branch, next_host.lower(),
                               str(next_number).encode() if next_number else b""))
    return (top_host.decode("ascii").lower(), top_number if top_port is not None else None, host, port,
            top_branch, material)


# What a response walk returns: (offset of the empty line, the values of
# From, To, Call-ID, CSeq, Max-Forwards and Content-Length, Via lines, commas
# in them, (start, colon, end) of each line not in rendered form, the first
# Via line's start, colon and end, the second's colon and end).
_Walked = tuple[int, list["bytes | None"], int, int, list[int], int, int, int, int, int]


def _relay_response_loop(data: bytes, limits: SipLimits) -> _Relayed | None:
    """relay_response_bytes in one walk over the head's bytes (the compiled
    build's without sipgate/sip/_walk.c, and the reference its
    relay_response is tested against): the framing, the limits and the header names checked as
    _fields_loop does, the values the relay reads sliced, and the output
    made of slices of ``data`` around the Via element that goes and the
    lines it renders (those not in rendered form, see _norm), as
    _relay_response_split renders every line."""
    walked = _response_walk_loop(data, limits)
    return None if walked is None else _response_out(data, limits, walked)


def _response_walk_loop(data: bytes, limits: SipLimits) -> _Walked | None:
    """The walk of _relay_response_loop (sipgate/sip/_walk.c's
    response_walk in the compiled build): None when the response is the
    full path's business."""
    n: i64 = len(data)
    max_lines: i64 = min(_MAX_LINES, limits.max_headers + 1)
    max_line: i64 = limits.max_header_line
    i = _line_end(data, 0, n)
    if i < 0 or i > max_line or not _status_line_loop(data, i):
        return None
    values: list[bytes | None] = [None, None, None, None, None, None]
    vias = 0
    commas = 0
    rendered: list[int] = []  # (start, colon, end) of each line not in rendered form
    first_at: i64 = 0
    first_colon: i64 = 0
    first_end: i64 = 0
    second_colon: i64 = 0
    second_end: i64 = 0
    pos = i + 2
    lineno: i64 = 0
    while pos + 1 >= n or data[pos] != 13 or data[pos + 1] != 10:  # (up to the empty line, see _fields_loop)
        lineno += 1
        if lineno >= max_lines:
            return None
        k = _colon(data, pos, n)
        if k < 0:
            return None
        e = _line_end(data, k + 1, n)
        if e < 0 or e - pos > max_line:
            return None
        if not _rendered(data, k, e):
            rendered.append(pos)  # (a line the output renders, see _norm)
            rendered.append(k)
            rendered.append(e)
        slot = _name_slot(data, pos, k)
        if slot == -1:
            blank = True
            x = k + 1
            while x < e:
                c = data[x]
                if c == 44:
                    commas += 1
                    blank = False
                elif c != 32 and c != 9:
                    blank = False
                x += 1
            if blank:
                return None
            vias += 1
            if vias == 1:
                first_at, first_colon, first_end = pos, k, e
            elif vias == 2:
                second_colon, second_end = k, e
        elif 0 <= slot < 6:
            value = _trimmed(data, k + 1, e)
            if not value:
                return None
            old = values[slot]
            if old is None:
                values[slot] = value
            elif old != value:
                return None
        pos = e + 2
    return pos, values, vias, commas, rendered, first_at, first_colon, first_end, second_colon, second_end


def _response_out(data: bytes, limits: SipLimits, walked: _Walked) -> _Relayed | None:
    """The rest of _relay_response_loop after its walk: the values checked,
    the next hop found, and the output put together."""
    stop, values, vias, commas, rendered, first_at, first_colon, first_end, second_colon, second_end = walked
    end = stop - 2  # (stop: the empty line)
    from_, to, call_id, cseq, max_forwards, length = values
    if not vias or from_ is None or to is None or call_id is None or cseq is None:
        return None
    if vias > limits.max_vias or commas + vias > limits.max_vias:
        return None  # (commas may be inside quotes: declining is always safe)
    body = _response_body(data, end, cseq, max_forwards, length)
    if body is None:
        return None
    popped = _next_hop(_trimmed(data, first_colon + 1, first_end),
                       data[second_colon + 1:second_end] if vias > 1 else None)
    if popped is None:
        return None
    top_text, next_text, rest = popped
    hops = _hops(top_text, next_text)
    if hops is None:
        return None
    # The output: the datagram's bytes, with the first Via line cut or
    # rewritten and each line not in rendered form rendered, in order.
    pieces: list[bytes] = []
    last = 0
    via_done = False
    for x in range(0, len(rendered) + 3, 3):
        if x < len(rendered):
            start, colon, stop_at = rendered[x], rendered[x + 1], rendered[x + 2]
        else:
            start = colon = stop_at = stop  # (past every line: only the Via may be left)
        if not via_done and first_at <= start:
            via_done = True
            pieces.append(data[last:first_at])
            if rest is None:
                last = first_end + 2
            else:
                pieces.append(data[first_at:first_colon])
                pieces.append(b": ")
                pieces.append(rest)
                last = first_end
        if start == first_at or start == stop:
            continue  # (the first Via line is done above)
        pieces.append(data[last:colon])
        pieces.append(b": ")
        pieces.append(_trimmed(data, colon + 1, stop_at))
        last = stop_at
    pieces.append(data[last:end + 4])
    pieces.append(body)
    return b"".join(pieces), hops[0], hops[1], hops[2], hops[3], hops[4], hops[5]


def _relay_response_split(data: bytes, limits: SipLimits) -> _Relayed | None:
    """relay_response_bytes with string methods (the interpreted build's)."""
    framed = _head_lines(data, limits)
    if framed is None:
        return None
    end, lines = framed
    n = len(lines)
    if _STATUS_LINE.fullmatch(lines[0]) is None:
        return None
    vias: list[int] = []
    values: list[bytes | None] = [None, None, None, None, None, None, None, None]
    normal = _normal(data, len(lines[0]), end)  # (then _norm would return every line as it is)
    for i in range(1, n):
        line = lines[i]
        header = _header_split(line)
        if header is None:
            return None
        slot, value = header
        if not normal:
            lines[i] = _norm(line)
        if slot <= -2 or slot >= 6:
            continue
        if not value:
            return None
        if slot < 0:
            vias.append(i)
            continue
        old = values[slot]
        if old is None:
            values[slot] = value
        elif old != value:
            return None
    from_, to, call_id, cseq, max_forwards, length, _, _ = values
    if not vias or from_ is None or to is None or call_id is None or cseq is None:
        return None
    if len(vias) > limits.max_vias or sum(lines[i].count(b",") for i in vias) + len(vias) > limits.max_vias:
        return None  # (commas may be inside quotes: declining is always safe)
    body = _response_body(data, end, cseq, max_forwards, length)
    if body is None:
        return None
    name, _, value = lines[vias[0]].partition(b":")
    popped = _next_hop(value, lines[vias[1]].partition(b":")[2] if len(vias) > 1 else None)
    if popped is None:
        return None
    top_text, next_text, rest = popped
    hops = _hops(top_text, next_text)
    if hops is None:
        return None
    if rest is None:
        del lines[vias[0]]
    else:
        lines[vias[0]] = name + b": " + rest
    lines.append(b"")
    lines.append(b"")
    return b"\r\n".join(lines) + body, hops[0], hops[1], hops[2], hops[3], hops[4], hops[5]
