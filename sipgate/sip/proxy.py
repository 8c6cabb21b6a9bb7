"""RFC 3261 §16 stateless-proxy transforms: branch, request and response relay."""

from __future__ import annotations

from hashlib import blake2b

from sipgate.sip.build import hash_key
from sipgate.sip.headers import first_comma, split_list
from sipgate.sip.message import Request, Response, render
from sipgate.sip.uri import Via, parse_params, parse_via

__all__ = ["compute_branch", "relay_request", "relay_response"]

MAGIC_COOKIE = "z9hG4bK"  # §8.1.1.7
DEFAULT_MAX_FORWARDS = 70  # §16.6 step 3
DEFAULT_PORT = 5060
_SURROGATE = "surrogateescape"


def compute_branch(request: Request, secret: bytes) -> str:
    """The branch of the Via sipgate pushes onto ``request`` (§16.11).

    A stateless proxy must give a retransmission the same branch, and the
    CANCEL of an INVITE (and the ACK for a non-2xx answer, which share the
    INVITE's branch) the same branch as that INVITE.  With an RFC 3261
    client (magic cookie in the top branch) the top Via branch and sent-by
    identify the transaction; for an RFC 2543 client, To tag, From tag,
    Call-ID, Request-URI, top Via and CSeq number are hashed instead.
    """
    top = request.top_via
    ours = via_branch(top, secret)
    if ours is not None:
        return ours
    material = "\0".join((
        "2543",
        request.to_tag or "",
        request.from_tag or "",
        request.call_id,
        request.uri,
        request.first("via") or "",
        str(request.cseq[0]),
    ))
    digest = blake2b(material.encode("utf-8", _SURROGATE), digest_size=12, key=hash_key(secret))
    return MAGIC_COOKIE + digest.hexdigest()


def via_branch(via: Via, secret: bytes) -> str | None:
    """The branch sipgate gives a request whose top Via is ``via``, when
    that is an RFC 3261 Via (magic cookie); None otherwise.

    A response carries that Via right below sipgate's own, so a response
    from outside can be checked statelessly: its top branch must be this
    one, which nobody without ``secret`` can compute (a forged response is
    never relayed to the PBX).
    """
    branch = via.branch
    if not branch or not branch.startswith(MAGIC_COOKIE):
        return None
    material = "\0".join(("3261", branch, via.host, str(via.port or "")))
    digest = blake2b(material.encode("utf-8", _SURROGATE), digest_size=12, key=hash_key(secret))
    return MAGIC_COOKIE + digest.hexdigest()


def _stamp_via(value: str, top: Via, host: str, port: int) -> str:
    """The sender's Via line with received/rport set on its first element.

    §18.2.1: add received=<source> when sent-by's host is not the source
    address.  RFC 3581 §4: fill an empty rport with the source port, and
    then always add received.  A received the sender wrote itself is
    dropped: it would otherwise steer responses to an address of its
    choosing.
    """
    value = value.lstrip(" \t,")
    end = first_comma(value)
    element, rest = value[:end], value[end:]
    semi = element.find(";")
    if semi < 0:
        head, params = element.rstrip(" \t"), []
    else:
        head = element[:semi].rstrip(" \t")
        params = [p.strip(" \t") for p in _param_texts(element[semi:])]
    fill_rport = top.rport == ""
    out = [head]
    for param in params:
        name = param.partition("=")[0].rstrip(" \t").lower()
        if name == "received":
            continue
        if name == "rport" and fill_rport and "=" not in param:
            param = f"rport={port}"
        out.append(param)
    if fill_rport or top.host != host.lower():
        out.append(f"received={host}")
    return ";".join(out) + rest


def _drop_first(value: str) -> str:
    """``value`` without its first list element ("" when none is left)."""
    value = value.lstrip(" \t,")
    rest = value[first_comma(value) + 1:].lstrip(" \t,")
    return rest if split_list(rest) else ""


def _param_texts(text: str) -> list[str]:
    """The ";"-separated parameter texts of ``text`` (quotes respected)."""
    if '"' not in text:
        return text.split(";")[1:]
    # parse_params has already validated the quoting of this Via.
    parse_params(text, "Via")
    parts: list[str] = []
    start, i, quoted = 1, 1, False
    while i < len(text):
        ch = text[i]
        if quoted:
            if ch == "\\":
                i += 1
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == ";":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def relay_request(request: Request, *, via: str, source: tuple[str, int],
                  record_route: str | None = None, pop_route: bool = False) -> bytes:
    """The bytes to send to the next hop for ``request`` (§16.6).

    The sender's Via gets received/rport (§18.2.1, RFC 3581); Max-Forwards
    is decremented (70 inserted when absent); with ``pop_route`` the first
    Route element is removed; ``Via: <via>`` becomes the first header and
    ``Record-Route: <record_route>`` goes before any existing Record-Route
    (else right after the new Via).  Every other header keeps its received
    name and order; Content-Length is the body's length.  The caller has
    answered 483 for Max-Forwards 0.
    """
    host, port = source[0].partition("%")[0], source[1]
    top = request.top_via
    body = request.body
    headers = request.headers
    out = [request.start_line(), "Via: " + via]
    rr_pending = False
    if record_route is not None:
        rr_pending = any(k == "record-route" for k, _, _ in headers)
        if not rr_pending:
            out.append("Record-Route: " + record_route)
    via_done = False
    route_done = not pop_route
    max_forwards = request.max_forwards
    mf_value = str(max(max_forwards - 1, 0)) if max_forwards is not None else None
    length = str(len(body))
    cl_seen = False
    for key, name, value in headers:
        if key == "via":
            if not via_done and split_list(value):
                value = _stamp_via(value, top, host, port)
                via_done = True
        elif key == "max-forwards":
            value = mf_value  # type: ignore[assignment]
        elif key == "content-length":
            value = length
            cl_seen = True
        elif key == "route":
            if not route_done and split_list(value):
                route_done = True
                value = _drop_first(value)
                if not value:
                    continue
        elif key == "record-route" and rr_pending:
            out.append("Record-Route: " + record_route)  # type: ignore[operator]
            rr_pending = False
        out.append(f"{name}: {value}")
    if mf_value is None:
        out.append(f"Max-Forwards: {DEFAULT_MAX_FORWARDS}")
    if not cl_seen:
        out.append("Content-Length: " + length)
    out.append("")
    out.append("")
    return "\r\n".join(out).encode("utf-8", _SURROGATE) + body


def relay_response(response: Response) -> tuple[bytes, tuple[str, int]] | None:
    """Pop the first Via element and say where the response goes (§16.7 step 9).

    The caller has checked that the popped Via is its own.  The destination
    is the new top Via's ``received`` host, else its sent-by host; its port
    the numeric ``rport``, else the sent-by port, else 5060 (§18.2.2,
    RFC 3581 §4).  None when no Via remains: the response was for the proxy
    itself, and is dropped.  Raises SipParseError when the next Via is
    malformed.
    """
    headers = list(response.headers)
    next_via: str | None = None
    popped = False
    for i, (key, name, value) in enumerate(headers):
        if key != "via":
            continue
        if not popped:
            elements = split_list(value)
            if not elements:
                continue
            popped = True
            if len(elements) == 1:
                del headers[i]
                # Look at the following lines for the next Via.
                for key2, _, value2 in headers[i:]:
                    if key2 == "via":
                        rest = split_list(value2)
                        if rest:
                            next_via = rest[0]
                            break
            else:
                headers[i] = (key, name, _drop_first(value))
                next_via = elements[1]
            break
    if next_via is None:
        return None
    via = parse_via(next_via)
    host = via.received or via.host
    rport = via.params.get("rport")
    if rport and len(rport) <= 5 and rport.isascii() and rport.isdigit() and 0 < int(rport) < 65536:
        port = int(rport)
    else:
        port = via.port or DEFAULT_PORT
    return render(response.start_line(), headers, response.body), (host, port)
