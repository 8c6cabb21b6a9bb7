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

from sipgate.sip.headers import _KEY_CACHE, COMPACT_FORMS


__all__ = ["Scanned", "forbidden_response", "scan", "to_tag_for"]
# (the field indexes METHOD ... MAX_FORWARDS are public too)

_TOKEN = rb"[A-Za-z0-9\-.!%*_+`'~]+"
_PARAMS = rb"((?:;" + _TOKEN + rb"(?:=" + _TOKEN + rb")?)*)"
# Request-Line with the common sip:/sips: URI: userinfo without escapes or
# password, a DNS-name or IPv4 host, URI parameters without escapes.
_REQUEST_LINE = re.compile(
    rb"(INVITE|ACK) sips?:(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]+@)?"
    rb"([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*)(?::([0-9]{1,5}))?"
    rb"(?:;[A-Za-z0-9\-_.!~*'()\[\]/:&+$]+(?:=[A-Za-z0-9\-_.!~*'()\[\]/:&+$]*)?)* SIP/2\.0")
_VIA = re.compile(rb"SIP/2\.0/UDP ([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*)(?::([0-9]{1,5}))?" + _PARAMS)
_NAME_ADDR = re.compile(
    rb'(?:"[^"\\]*"[ \t]*|' + _TOKEN + rb"(?:[ \t]+" + _TOKEN + rb")*[ \t]*)?"
    rb'<[A-Za-z][A-Za-z0-9+\-.]*:[^<>"\s]*>' + _PARAMS)
_CSEQ = re.compile(rb"([0-9]{1,10})[ \t]+(INVITE|ACK)")
_HEADER_NAME = re.compile(_TOKEN)
_MAX_CSEQ = 2**31 - 1
_MAX_LINES = 200
_SURROGATE = "surrogateescape"

# Header name bytes -> what the scan does with it: an index into its value
# slots, -1 for Via, -2 for a valid name it does not read.  Bounded like
# the full parser's cache.
_SLOTS = {"from": 0, "to": 1, "call-id": 2, "cseq": 3, "max-forwards": 4, "content-length": 5, "via": -1}
_NAMES: dict[bytes, int] = {}
_NAMES_LIMIT = 2048
for _name, _key in _KEY_CACHE.items():
    _NAMES[_name.encode()] = _SLOTS.get(_key, -2)
_TAG = re.compile(rb";tag(?:=([^;]*))?(?=;|\Z)", re.IGNORECASE)
_BRANCH = re.compile(rb";branch(?:=([^;]*))?(?=;|\Z)", re.IGNORECASE)
_RPORT = re.compile(rb";rport(?==|;|\Z)", re.IGNORECASE)


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
#  cseq_number, vias, from_, to, cseq, max_forwards)
METHOD, HOST, TO_TAG, FROM_TAG, BRANCH, VIA_PORT, RPORT, CALL_ID, CSEQ_NUMBER, VIAS, FROM_, TO, CSEQ, \
    MAX_FORWARDS = range(14)


def scan(data: bytes) -> Scanned | None:
    """The fields of a common-shaped INVITE or ACK (see the index names
    above), or None: use the full parser."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = data[:end]
    lines = head.split(b"\r\n")
    n = len(lines)
    # The split consumed n - 1 CRLFs: any other CR, LF or NUL is refused.
    if n > _MAX_LINES or len(head) - len(head.translate(None, b"\r\n\0")) != 2 * (n - 1):
        return None
    m = _REQUEST_LINE.fullmatch(lines[0])
    if m is None:
        return None
    method, host, port = m.groups()
    if port is not None and int(port) > 65535:
        return None
    vias: list[bytes] = []
    values: list[bytes | None] = [None, None, None, None, None, None]
    names = _NAMES
    for i in range(1, n):
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
        value = value.strip(b" \t")
        if not value:
            return None
        if slot < 0:
            if b"," in value:
                return None
            vias.append(value)
            continue
        old = values[slot]
        if old is None:
            values[slot] = value
        elif old != value:
            return None  # conflicting single-valued headers: the full parser says 400
    from_, to, call_id, cseq, max_forwards, length = values
    if not vias or from_ is None or to is None or call_id is None or cseq is None:
        return None
    c = _CSEQ.fullmatch(cseq)
    if c is None or c.group(2) != method:
        return None
    number = int(c.group(1))
    if number > _MAX_CSEQ:
        return None
    if max_forwards is not None:
        if not max_forwards.isdigit() or len(max_forwards) > 10:
            return None
        max_forwards = int(max_forwards)  # type: ignore[assignment]
    if length is not None:
        if not length.isdigit() or len(length) > 10 or len(data) - end - 4 < int(length):
            return None
    v = _VIA.fullmatch(vias[0])
    t = _NAME_ADDR.fullmatch(to)
    f = _NAME_ADDR.fullmatch(from_)
    if v is None or t is None or f is None:
        return None
    _, via_port, via_params = v.groups()
    if via_port is not None:
        via_port = int(via_port)  # type: ignore[assignment]
        if via_port > 65535:  # type: ignore[operator]
            return None
    # The first parameter of a name wins, as in parse_params; a tag or
    # branch without "=" (or an empty tag) counts as none.
    to_tag = _TAG.search(t.group(1))
    from_tag = _TAG.search(f.group(1))
    branch = _BRANCH.search(via_params)
    return (method, host.decode("ascii").lower(), to_tag and to_tag.group(1) or None,
            from_tag and from_tag.group(1) or None, branch and branch.group(1), via_port,
            _RPORT.search(via_params) is not None, call_id, number, vias, from_, to, cseq, max_forwards)


def to_tag_for(s: Scanned, key: bytes) -> bytes:
    """The To-tag of sipgate's stateless response (as ``derive_to_tag``).

    ``key`` is ``sipgate.sip.build.hash_key(secret)``.
    """
    material = b"\0".join((s[CALL_ID], s[FROM_TAG] or b"", s[BRANCH] or b"", str(s[CSEQ_NUMBER]).encode()))
    return b"sg" + blake2b(material, digest_size=8, key=key).hexdigest().encode()


def forbidden_response(s: Scanned, key: bytes, extra: bytes) -> bytes:
    """403 Forbidden to the scanned request (as ``build_response``).

    ``extra`` is the already encoded "Name: value\\r\\n" lines after CSeq
    (Warning, Server).
    """
    return b"".join((
        b"SIP/2.0 403 Forbidden\r\nVia: ", b"\r\nVia: ".join(s[VIAS]),
        b"\r\nFrom: ", s[FROM_],
        b"\r\nTo: ", s[TO], b";tag=", to_tag_for(s, key),
        b"\r\nCall-ID: ", s[CALL_ID],
        b"\r\nCSeq: ", s[CSEQ], b"\r\n",
        extra,
        b"Content-Length: 0\r\n\r\n",
    ))

