"""Stateless responses (RFC 3261 §8.2.6) and the To-tag they carry."""

from __future__ import annotations

from collections.abc import Sequence

from sipgate.sip.errors import SipParseError, bad_request
from sipgate.sip.message import Request
from sipgate.sip.tag import hash_key, to_tag

__all__ = ["build_response", "derive_to_tag", "hash_key"]

_SURROGATE = "surrogateescape"


def derive_to_tag(request: Request, secret: bytes) -> str:
    """The To-tag sipgate puts in its stateless response to ``request``.

    Keyed BLAKE2b (sipgate.sip.tag) over Call-ID, From tag, top Via branch
    and the CSeq *number*: the ACK for a non-2xx final response repeats the
    INVITE's branch and CSeq number (§17.1.1.3) while its method differs,
    so it derives the same tag and can be recognised without any state.
    Nodes answering for one address must share ``secret``.  Raises
    SipParseError when the request lacks those fields.
    """
    try:
        number: int | bytes = request.cseq[0]
    except SipParseError:
        # A CSeq that does not parse (an overlarge number, RFC 4475
        # §3.1.2.4) still gets its 400: the tag uses its first word.
        number = (request.first("cseq") or "").partition(" ")[0].encode("utf-8", _SURROGATE)
    try:
        from_tag = request.from_tag or ""
    except SipParseError:
        from_tag = ""  # (a From that does not parse: the 400 still gets a tag)
    return to_tag(hash_key(secret), request.call_id.encode("utf-8", _SURROGATE), from_tag.encode("utf-8", _SURROGATE),
                  (request.top_via.branch or "").encode("utf-8", _SURROGATE), number).decode("ascii")


def build_response(request: Request, status: int, reason: str, *, to_tag: str | None = None,
                   headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A stateless response to ``request`` (§8.2.6.2), as bytes to send.

    Status line; every Via element of the request in order, one per line;
    From as received; To as received plus ";tag=<to_tag>" when the request's
    To has no tag and ``to_tag`` is given; Call-ID; CSeq; then ``headers``
    in order; "Content-Length: 0" and the empty line.  Identical input gives
    byte-identical output (retransmissions get the same answer).  Raises
    SipParseError(400) when a header a response must copy is missing.
    """
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} out of range")
    vias = request.values("via")
    from_ = request.first("from")
    to = request.first("to")
    call_id = request.first("call-id")
    cseq = request.first("cseq")
    if not (vias and from_ and to and call_id and cseq):
        missing = [n for n, v in (("Via", vias), ("From", from_), ("To", to), ("Call-ID", call_id),
                                  ("CSeq", cseq)) if not v]
        raise bad_request(f"cannot build a response: missing {', '.join(missing)}")
    try:
        untagged = request.to_tag is None
    except SipParseError:
        # A To that does not parse (RFC 4475 §3.1.2.6, §3.1.2.15) is
        # copied as received: the 400 answering it gets no tag.
        untagged = False
    if to_tag and untagged:
        # §8.2.6.2: a response that may create a dialog gets a To tag.
        to = f"{to};tag={to_tag}"
    lines = [f"SIP/2.0 {status} {reason}"]
    lines += ["Via: " + via for via in vias]
    lines.append("From: " + from_)
    lines.append("To: " + to)
    lines.append("Call-ID: " + call_id)
    lines.append("CSeq: " + cseq)
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append("Content-Length: 0\r\n\r\n")
    return "\r\n".join(lines).encode("utf-8", _SURROGATE)
