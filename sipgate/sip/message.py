"""SIP messages: parse() bytes into a Request or Response, render() them back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sipgate.sip import _abnf
from sipgate.sip.errors import SipParseError, bad_request
from sipgate.sip.headers import (
    _KEY_CACHE,
    DISPLAY_NAMES,
    LIST_KEYS,
    canonical_key,
    lookup_key,
    split_list,
)
from sipgate.sip.limits import DEFAULT_LIMITS, SipLimits
from sipgate.sip.uri import SipUri, Via, parse_name_addr, parse_uri, parse_via

__all__ = ["Request", "Response", "SipMessage", "parse"]

_T = TypeVar("_T")


class _lazy(Generic[_T]):
    """functools.cached_property without its per-access lock (Python 3.11).

    A non-data descriptor: the first access stores the value in the
    instance __dict__, which shadows the descriptor from then on.
    """

    def __init__(self, func: Callable[[Any], _T]) -> None:
        self.func = func
        self.name = func.__name__
        self.__doc__ = func.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, cls: type | None = None) -> _T:
        if obj is None:
            return self  # type: ignore[return-value]
        value = obj.__dict__[self.name] = self.func(obj)
        return value


_MAX_CSEQ = 2**31 - 1  # §8.1.1.5: the sequence number MUST be less than 2**31
# Headers a request (and, for a stateless proxy, a response) must carry
# (§8.1.1), in the order their absence is reported.
_REQUIRED = ("via", "from", "to", "call-id", "cseq")
# Single-valued headers: two lines with different values are ambiguous, and
# parsers behind us may pick either, so such a message is refused.
_SINGLE = frozenset({"call-id", "cseq", "from", "to", "content-length", "max-forwards"})
_WATCHED = _SINGLE | {"via"}
_SURROGATE = "surrogateescape"


class SipMessage:
    """What requests and responses share: headers, body, field accessors.

    ``headers`` is a list of (key, name, value): key is the canonical lower
    case long form ("via" also for a compact "v"), name is as received, and
    value is unfolded and stripped.  Keys passed to first()/values() are
    such canonical keys.
    """

    headers: list[tuple[str, str, str]]
    body: bytes

    def start_line(self) -> str:
        """The start line, without its CRLF."""
        raise NotImplementedError

    def first(self, key: str) -> str | None:
        """The first element of header ``key`` (for list headers the first
        comma-separated element), or None when absent."""
        key = lookup_key(key)
        if key in LIST_KEYS:
            for k, _, v in self.headers:
                if k == key:
                    if "," not in v:
                        if v:
                            return v
                    else:
                        elements = split_list(v)
                        if elements:
                            return elements[0]
            return None
        for k, _, v in self.headers:
            if k == key:
                return v
        return None

    def values(self, key: str) -> list[str]:
        """Every element of header ``key`` in order, across all its lines.

        List headers (Via, Route, Record-Route, Contact unless "*", Allow,
        Supported, ...) are split on commas outside quotes and <>; any other
        header gives one element per line.
        """
        key = lookup_key(key)
        if key in LIST_KEYS:
            out: list[str] = []
            for k, _, v in self.headers:
                if k == key:
                    out.extend(split_list(v))
            return out
        return [v for k, _, v in self.headers if k == key]

    def render(self) -> bytes:
        """Serialize: start line, headers as received names, CRLF, body."""
        return render(self.start_line(), self.headers, self.body)

    def _required(self, key: str) -> str:
        value = self.first(key)
        if not value:
            raise bad_request(f"missing {DISPLAY_NAMES.get(key, key)} header")
        return value

    # -- lazily parsed fields ---------------------------------------------
    @_lazy
    def call_id(self) -> str:
        """The Call-ID (SipParseError 400 if missing)."""
        return self._required("call-id")

    @_lazy
    def cseq(self) -> tuple[int, str]:
        """(sequence number, method) from CSeq (§20.16)."""
        return _parse_cseq(self._required("cseq"))

    @_lazy
    def vias(self) -> list[Via]:
        """Every Via element, parsed, top first."""
        vias = [parse_via(v) for v in self.values("via")]
        if not vias:
            raise bad_request("missing Via header")
        return vias

    @_lazy
    def top_via(self) -> Via:
        """The first Via element, parsed."""
        cached = self.__dict__.get("vias")
        if cached:
            return cached[0]  # type: ignore[no-any-return]
        return parse_via(self._required("via"))

    @_lazy
    def from_tag(self) -> str | None:
        """The From tag, or None."""
        return parse_name_addr(self._required("from")).tag

    @_lazy
    def to_tag(self) -> str | None:
        """The To tag, or None (an initial request)."""
        return parse_name_addr(self._required("to")).tag

    @_lazy
    def max_forwards(self) -> int | None:
        """Max-Forwards as an int, None when absent."""
        return _parse_int(self.first("max-forwards"), "Max-Forwards")

    @_lazy
    def content_length(self) -> int | None:
        """Content-Length as the header says, None when absent."""
        return _parse_int(self.first("content-length"), "Content-Length")

    def _fields(self) -> tuple[object, ...]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, SipMessage)
        return (self._fields() == other._fields() and self.headers == other.headers
                and self.body == other.body)

    __hash__ = None  # type: ignore[assignment]


class Request(SipMessage):
    """A SIP request; ``uri`` is the Request-URI as received."""

    def __init__(self, method: str, uri: str, version: str,
                 headers: list[tuple[str, str, str]], body: bytes = b"") -> None:
        self.method = method
        self.uri = uri
        self.version = version
        self.headers = headers
        self.body = body

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {self.version}"

    def _fields(self) -> tuple[object, ...]:
        return (self.method, self.uri, self.version)

    @_lazy
    def request_uri(self) -> SipUri:
        """The Request-URI, parsed (parse() has already checked it)."""
        return parse_uri(self.uri)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} ({len(self.headers)} headers, {len(self.body)} bytes body)>"


class Response(SipMessage):
    """A SIP response."""

    def __init__(self, status: int, reason: str, version: str,
                 headers: list[tuple[str, str, str]], body: bytes = b"") -> None:
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers
        self.body = body

    def start_line(self) -> str:
        return f"{self.version} {self.status} {self.reason}"

    def _fields(self) -> tuple[object, ...]:
        return (self.status, self.reason, self.version)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} ({len(self.headers)} headers, {len(self.body)} bytes body)>"


def render(start_line: str, headers: list[tuple[str, str, str]], body: bytes) -> bytes:
    """Start line, ``name: value`` lines, blank line (CRLF endings), body."""
    lines = [start_line]
    lines += [f"{name}: {value}" for _, name, value in headers]
    lines.append("")
    lines.append("")
    return "\r\n".join(lines).encode("utf-8", _SURROGATE) + body


def _parse_int(value: str | None, name: str) -> int | None:
    # 1*DIGIT: isdigit() alone also accepts non-ASCII digits.
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or len(value) > 10:
        raise bad_request(f"bad {name} value {value[:20]!r}")
    return int(value)


def _parse_cseq(value: str) -> tuple[int, str]:
    m = _abnf.CSEQ.fullmatch(value)
    if m is None:
        raise bad_request(f"malformed CSeq {value[:40]!r}")
    number = int(m.group(1))
    if number > _MAX_CSEQ:
        raise bad_request(f"CSeq number {number} out of range")
    return number, m.group(2)


def _split_simple(lines: list[str]) -> list[tuple[str, str, str]]:
    """The common case: no folding, only header names seen before.

    Raises KeyError or ValueError for anything else, and the caller falls
    back to _split_headers, which also reports errors.
    """
    cache = _KEY_CACHE
    headers: list[tuple[str, str, str]] = []
    append = headers.append
    for i in range(1, len(lines)):
        name, value = lines[i].split(":", 1)
        append((cache[name], name, value.strip(" \t")))
    return headers


def _split_headers(lines: list[str]) -> list[tuple[str, str, str]]:
    """Header lines -> (key, name, value), unfolding continuation lines."""
    headers: list[tuple[str, str, str]] = []
    append = headers.append
    cache = _KEY_CACHE
    for i in range(1, len(lines)):
        line = lines[i]
        first = line[:1]
        if first == " " or first == "\t":
            # §7.3.1: a line starting with whitespace continues the previous
            # header; the fold is equivalent to a single SP.
            if not headers:
                raise bad_request("continuation line before the first header")
            more = line.strip(" \t")
            if more:
                key, name, value = headers[-1]
                headers[-1] = (key, name, f"{value} {more}" if value else more)
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise bad_request(f"header line without a colon: {line[:40]!r}")
        cached = cache.get(name)
        if cached is None:
            name, cached = canonical_key(name)
        append((cached, name, value.strip(" \t")))
    return headers


def parse(data: bytes, *, max_size: int = 65535, max_headers: int | None = None,
          limits: SipLimits | None = None) -> Request | Response:
    """Parse one SIP message (a UDP datagram) into a Request or a Response.

    Raises only SipParseError:

    - 513 Message Too Large: ``data`` is longer than ``max_size``, or a
      header line (or the start line) is longer than
      ``limits.max_header_line`` bytes;
    - 513 with partial None (dropped): more than ``limits.max_headers``
      header lines (physical lines, counted before unfolding, so the work
      done on a hostile datagram is bounded before any header is looked
      at), or more than ``limits.max_vias`` Via values (a response would
      have to copy them all);
    - 414 Request-URI Too Long: a Request-URI over ``limits.max_uri`` bytes;
    - 505 Version Not Supported: a SIP version other than SIP/2.0;
    - 416 Unsupported URI Scheme: a Request-URI that is not sip:/sips:;
    - 400 for everything else malformed: start line, header syntax, a NUL
      byte anywhere but in a quoted-pair of a quoted string, a bare CR in
      the header section, a missing Via/From/To/Call-ID/CSeq, a bad CSeq
      (or one whose method is not the request's), conflicting duplicates
      of a single-valued header, a bad Content-Length or Max-Forwards, a
      body shorter than Content-Length (§18.3), a Request-URI with a
      headers component (§19.1.1: not allowed there).

    ``max_headers`` (older spelling) overrides ``limits.max_headers``.  A
    body longer than Content-Length is truncated to it; without
    Content-Length the body is the rest of the datagram.  Leading CRLFs
    are skipped; header bytes that are not UTF-8 survive as surrogate
    escapes and are written back unchanged by render().
    """
    if limits is None:
        limits = DEFAULT_LIMITS
    if max_headers is not None and max_headers != limits.max_headers:
        limits = SipLimits(max_headers, limits.max_vias, limits.max_header_line, limits.max_uri)
    if len(data) > max_size:
        raise SipParseError(513, "Message Too Large",
                            f"message of {len(data)} bytes exceeds {max_size}", _partial(data, limits))
    return _parse(data, limits)


def _partial(data: bytes, limits: SipLimits) -> Request | None:
    """The request in an over-long datagram, as far as it parses."""
    try:
        msg = _parse(data, limits)
    except SipParseError as exc:
        return exc.partial
    return msg if type(msg) is Request else None


def _too_many_headers(limits: SipLimits) -> SipParseError:
    exc = SipParseError(513, "Message Too Large", f"more than {limits.max_headers} header lines")
    exc.unanswerable = True
    return exc


def _nul_quoted(lines: list[str]) -> bool:
    """Every NUL is a quoted-pair ("\\" NUL) inside a quoted string
    (RFC 3261 §25.1 allows %x00 there and nowhere else in the header
    section; RFC 4475 §3.1.1.2)."""
    for line in lines:
        if "\0" not in line:
            continue
        quoted = False
        i = 0
        n = len(line)
        while i < n:
            ch = line[i]
            if quoted and ch == "\\":
                i += 2
                continue
            if ch == '"':
                quoted = not quoted
            elif ch == "\0":
                return False
            i += 1
    return True


def _long_line(head: bytes, limit: int) -> int:
    """Index of the first line of ``head`` longer than ``limit`` bytes
    (without its line ending), or -1.  A header folded over several lines
    counts as those lines together (index: its first line): unfolded, as
    a relay or a reply writes it, it is one line of about that length,
    which the next hop would refuse as sipgate does."""
    if len(head) <= limit:
        return -1
    first = length = 0
    for i, line in enumerate(head.split(b"\n")):
        n = len(line) - (line[-1:] == b"\r")
        if i > 0 and line[:1] in (b" ", b"\t"):
            length += n
        else:
            first, length = i, n
        if length > limit:
            return first
    return -1


def _parse(data: bytes, limits: SipLimits) -> Request | Response:
    max_headers = limits.max_headers
    if data[:1] == b"\r" or data[:1] == b"\n":
        # §7.5: CRLFs before the start line are ignored.
        data = data.lstrip(b"\r\n")
    lines: list[str] | None = None
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        # Fast path: every line break in the header section is a CRLF.
        head = data[:end]
        breaks = head.count(b"\n")
        if breaks > max_headers:
            raise _too_many_headers(limits)
        text = head.decode("utf-8", _SURROGATE)
        lines = text.split("\r\n")
        if len(lines) != breaks + 1 or head.count(b"\r") != breaks:
            lines = None
        body_start = end + 4
    if lines is None:
        head, body_start = _frame(data)
        if head.count(b"\n") > max_headers:
            raise _too_many_headers(limits)
        # Bare LF line endings, tolerated as most stacks do.
        lines = head.decode("utf-8", _SURROGATE).replace("\r\n", "\n").split("\n")
    if b"\0" in head and not _nul_quoted(lines):
        raise bad_request("NUL byte in the header section")
    try:
        headers = _split_simple(lines)
    except (KeyError, ValueError):
        # A folded line, a name never seen before, or an error: go slowly.
        headers = _split_headers(lines)
    start = lines[0]
    long_line = _long_line(head, limits.max_header_line)
    if start[:4].upper() == "SIP/":
        return _response(start, headers, data[body_start:], limits, long_line)
    return _request(start, headers, data[body_start:], limits, long_line)


def _frame(data: bytes) -> tuple[bytes, int]:
    """(header section without its last line break, start of the body).

    The header section ends at the first empty line, whatever mix of CRLF
    and bare LF the sender used.  A lone CR is refused: it is a line break
    to some parsers and not to others.
    """
    if not data:
        raise bad_request("empty message")
    crlf = data.find(b"\n\r\n")
    lf = data.find(b"\n\n", 0, crlf if crlf >= 0 else len(data))
    if lf >= 0:
        end, body_start = lf, lf + 2
    elif crlf >= 0:
        end, body_start = crlf, crlf + 3
    else:
        raise bad_request("no empty line after the header section")
    head = data[:end]
    if head[-1:] == b"\r":
        head = head[:-1]
    if head.count(b"\r") != head.count(b"\r\n"):
        raise bad_request("bare CR in the header section")
    return head, body_start


def _request(start: str, headers: list[tuple[str, str, str]], body: bytes, limits: SipLimits = DEFAULT_LIMITS,
             long_line: int = -1) -> Request:
    m = _abnf.REQUEST_LINE.fullmatch(start)
    if m is None:
        raise bad_request(f"malformed request line {start[:60]!r}", _loose_request(start, headers, body))
    method, uri, version = m.groups()
    req = Request(method, uri, version, headers, body)
    try:
        if version != "SIP/2.0" and version.upper() != "SIP/2.0":
            if _abnf.VERSION.fullmatch(version):
                raise SipParseError(505, "Version Not Supported", f"unsupported SIP version {version!r}")
            raise bad_request(f"malformed SIP version {version[:20]!r}")
        max_uri = limits.max_uri
        if len(uri) > max_uri or (not uri.isascii() and len(uri.encode("utf-8", _SURROGATE)) > max_uri):
            raise SipParseError(414, "Request-URI Too Long", f"Request-URI longer than {max_uri} bytes")
        if long_line >= 0:
            raise SipParseError(513, "Message Too Large",
                                f"{'start' if long_line == 0 else 'header'} line longer than "
                                f"{limits.max_header_line} bytes")
        try:
            ruri = parse_uri(uri)
        except SipParseError as exc:
            exc.detail = f"Request-URI: {exc.detail}"
            raise
        if ruri.headers is not None:
            # §19.1.1: a headers component is not allowed in a Request-URI;
            # relaying it would let the sender smuggle headers (RFC 4475
            # §3.1.2.11), so the request is refused.
            raise bad_request("Request-URI with a headers component")
        d = req.__dict__
        d["request_uri"] = ruri
        _check_headers(req, headers, body, limits)
        if req.cseq[1] != method:
            raise bad_request(f"CSeq method {req.cseq[1]!r} does not match the request method {method!r}")
    except SipParseError as exc:
        if not exc.unanswerable:
            exc.partial = req
        raise
    return req


def _loose_request(start: str, headers: list[tuple[str, str, str]], body: bytes) -> Request | None:
    """A request line that is not one (embedded LWS in the URI, RFC 4475
    §3.1.2.8) but still reads as "method ... SIP/2.0": enough of a request
    to answer 400 to."""
    parts = start.split()
    if len(parts) < 3 or parts[-1].upper() != "SIP/2.0" or not _abnf.HEADER_NAME.fullmatch(parts[0]):
        return None
    return Request(parts[0], " ".join(parts[1:-1]), parts[-1], headers, body)


def _response(start: str, headers: list[tuple[str, str, str]], body: bytes, limits: SipLimits = DEFAULT_LIMITS,
              long_line: int = -1) -> Response:
    m = _abnf.STATUS_LINE.fullmatch(start)
    if m is None:
        raise bad_request(f"malformed status line {start[:60]!r}")
    version, code, reason = m.groups()
    if version.upper() != "SIP/2.0":
        if _abnf.VERSION.fullmatch(version):
            raise SipParseError(505, "Version Not Supported", f"unsupported SIP version {version!r}")
        raise bad_request(f"malformed SIP version {version[:20]!r}")
    status = int(code)
    if not 100 <= status <= 699:
        raise bad_request(f"status code {status} out of range")
    if long_line >= 0:
        raise SipParseError(513, "Message Too Large", f"a line longer than {limits.max_header_line} bytes")
    resp = Response(status, (reason or "").strip(" \t"), version, headers, body)
    _check_headers(resp, headers, body, limits)
    return resp


def _check_headers(msg: SipMessage, headers: list[tuple[str, str, str]], body: bytes,
                   limits: SipLimits = DEFAULT_LIMITS) -> None:
    """Required and single-valued headers, numbers, the Via count and the
    body length."""
    seen: dict[str, str] = {}
    vias = 0
    commas = False
    for key, _, value in headers:
        if key in _WATCHED:
            if key == "via":
                vias += 1
                if "," in value:
                    commas = True
            prev = seen.get(key)
            if prev is None or (key == "via" and not prev):
                seen[key] = value
            elif prev != value and key != "via":
                raise bad_request(f"conflicting {DISPLAY_NAMES[key]} headers")
    max_vias = limits.max_vias
    if vias > max_vias or (commas and len(msg.values("via")) > max_vias):
        exc = SipParseError(513, "Message Too Large", f"more than {max_vias} Via header field values")
        exc.unanswerable = True
        raise exc
    for key in _REQUIRED:
        if not seen.get(key):
            raise bad_request(f"missing {DISPLAY_NAMES[key]} header")
    d = msg.__dict__
    d["call_id"] = seen["call-id"]
    d["cseq"] = _parse_cseq(seen["cseq"])
    d["max_forwards"] = _parse_int(seen.get("max-forwards"), "Max-Forwards")
    length = d["content_length"] = _parse_int(seen.get("content-length"), "Content-Length")
    if length is not None:
        if len(body) < length:
            # §18.3: a datagram whose body is shorter than Content-Length
            # is rejected with 400 (over UDP nothing more will arrive).
            raise bad_request(f"body of {len(body)} bytes is shorter than Content-Length {length}")
        if len(body) > length:
            # §18.3: octets beyond Content-Length are discarded.
            msg.body = body[:length]
