"""Lazy field parsers: SIP URIs, name-addr (From/To/Route...), Via."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from sipgate.sip import _abnf
from sipgate.sip.errors import SipParseError, bad_request

__all__ = [
    "NameAddr",
    "SipUri",
    "Via",
    "format_host",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "parse_via",
]

_HOSTPART = _abnf.HOSTPART
_VIA = _abnf.VIA
_PARAM_NAME = _abnf.PARAM_NAME
_QUOTED = _abnf.QUOTED
# An unquoted display name (§25.1: *(token LWS)), tolerant as deployed
# software needs (non-ASCII text, "(", "@" ...), but never with what would
# change how the header reads to a parser behind sipgate: a quote, comma,
# ";", "<", ">", backslash or control character (RFC 4475 §3.1.2.15).
_DISPLAY_TOKENS = re.compile('[^",;<>\\\\\x00-\x08\x0a-\x1f\x7f]+')


@dataclass(frozen=True, slots=True)
class SipUri:
    """A sip: or sips: URI (RFC 3261 §19.1.1).

    ``host`` is lower case, an IPv6 literal without its brackets.  ``user``
    and ``password`` are kept escaped as received; ``params`` has lower-case
    keys (None for a parameter without value); ``headers`` is the raw text
    after "?", or None.
    """

    scheme: str
    user: str | None
    host: str
    port: int | None
    params: dict[str, str | None]
    headers: str | None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A name-addr or addr-spec with its header parameters (From, To, Route...)."""

    display_name: str | None
    uri: str
    params: dict[str, str | None]

    @property
    def tag(self) -> str | None:
        """The tag parameter (§19.3), None when absent or empty."""
        return self.params.get("tag") or None


@dataclass(frozen=True, slots=True)
class Via:
    """One via-parm (§20.42): "SIP/2.0/UDP host:port;branch=...".

    ``host`` is lower case, an IPv6 literal without brackets; ``params`` has
    lower-case keys, None for a parameter without value.
    """

    protocol: str
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None]

    @property
    def branch(self) -> str | None:
        """The branch parameter (§8.1.1.7), None when absent."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The received parameter (§18.2.1), without IPv6 brackets."""
        value = self.params.get("received")
        if value and value[0] == "[" and value[-1] == "]":
            return value[1:-1]
        return value

    @property
    def rport(self) -> str | None:
        """RFC 3581 rport: None if absent, "" if present without a value."""
        params = self.params
        if "rport" not in params:
            return None
        return params["rport"] or ""

    @property
    def sent_by(self) -> str:
        """host[:port] as it would be written (IPv6 in brackets)."""
        host = format_host(self.host)
        return host if self.port is None else f"{host}:{self.port}"


def format_host(host: str) -> str:
    """Add the [] an IPv6 literal needs in a URI or Via (§19.1.1)."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host


def _host(text: str, what: str) -> str:
    """Lower-case host, IPv6 literal checked and stripped of its brackets."""
    if text[0] == "[":
        inner = text[1:-1]
        try:
            ipaddress.IPv6Address(inner)
        except ValueError:
            raise bad_request(f"{what}: bad IPv6 literal {text[:60]!r}") from None
        return inner.lower()
    return text.lower()


def _port(text: str | None, what: str) -> int | None:
    if text is None:
        return None
    port = int(text)  # at most five ASCII digits, by the grammar
    if port > 65535:
        raise bad_request(f"{what}: port {port} out of range")
    return port


def _split_quoted(text: str, what: str) -> list[str]:
    """Split ";a;b=\"x;y\"" on semicolons outside quoted strings."""
    parts: list[str] = []
    start = 1
    i = 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            m = _QUOTED.match(text, i)
            if m is None:
                raise bad_request(f"{what}: unterminated quoted string")
            i = m.end()
            continue
        if ch == ";":
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def parse_params(text: str, what: str = "parameter") -> dict[str, str | None]:
    """Parse ``*( SEMI generic-param )`` into {lower-case name: value}.

    ``text`` is empty or starts with ";".  A parameter without "=" maps to
    None.  Quoted values keep their quotes.  On a repeated name the first
    one wins.  Raises SipParseError(400) on a name that is not a token, or
    an unquoted value with whitespace, commas or quotes in it.
    """
    params: dict[str, str | None] = {}
    if not text:
        return params
    parts = text.split(";")[1:] if '"' not in text else _split_quoted(text, what)
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip(" \t")
        if not _PARAM_NAME.fullmatch(name):
            raise bad_request(f"{what}: malformed parameter {part[:40]!r}")
        key = name.lower()
        if key in params:
            continue
        if eq:
            value = value.strip(" \t")
            if value[:1] == '"':
                if _QUOTED.fullmatch(value) is None:
                    raise bad_request(f"{what}: malformed quoted parameter value")
            elif " " in value or "\t" in value or "," in value or '"' in value:
                raise bad_request(f"{what}: malformed parameter value {value[:40]!r}")
            params[key] = value
        else:
            params[key] = None
    return params


def parse_uri(text: str) -> SipUri:
    """Parse a SIP or SIPS URI (§19.1.1, §25.1).

    Raises SipParseError 416 for any other scheme (tel:, http:, ...) and 400
    for anything that is not a URI.
    """
    scheme, colon, rest = text.partition(":")
    if not colon or not _abnf.SCHEME.fullmatch(scheme):
        raise bad_request(f"not a URI: {text[:60]!r}")
    scheme = scheme.lower()
    if scheme != "sip" and scheme != "sips":
        raise SipParseError(416, "Unsupported URI Scheme", f"unsupported URI scheme {scheme!r}")
    user: str | None = None
    password: str | None = None
    if "@" in rest:
        # "@" is allowed nowhere but at the end of userinfo: with two of
        # them, parsers would disagree on the host, so refuse.
        userinfo, _, rest = rest.partition("@")
        if "@" in rest:
            raise bad_request(f"URI with more than one '@': {text[:60]!r}")
        user, pcolon, pw = userinfo.partition(":")
        if not _abnf.USER.fullmatch(user):
            raise bad_request(f"malformed user part in URI {text[:60]!r}")
        if pcolon:
            if not _abnf.PASSWORD.fullmatch(pw):
                raise bad_request(f"malformed password in URI {text[:60]!r}")
            password = pw
    m = _HOSTPART.fullmatch(rest)
    if m is None:
        raise bad_request(f"malformed URI {text[:60]!r}")
    host, port, params, headers = m.groups()
    return SipUri(
        scheme=scheme,
        user=user,
        host=_host(host, "URI"),
        port=_port(port, "URI"),
        params=_uri_params(params) if params else {},
        headers=headers,
        password=password,
    )


def _uri_params(text: str) -> dict[str, str | None]:
    # The grammar already checked every character; names are case-insensitive.
    params: dict[str, str | None] = {}
    for part in text.split(";")[1:]:
        name, eq, value = part.partition("=")
        params.setdefault(name.lower(), value if eq else None)
    return params


def parse_name_addr(text: str) -> NameAddr:
    """Parse ``( name-addr / addr-spec ) *( SEMI generic-param )`` (§20.10, §25.1).

    For an addr-spec without <>, everything after the first ";" is a header
    parameter, not a URI parameter (§20: "From: sip:a@b;tag=1" has tag 1).
    The URI is returned raw (parse it with parse_uri).  Raises
    SipParseError(400).
    """
    s = text.strip(" \t")
    display: str | None = None
    if s[:1] == '"':
        m = _QUOTED.match(s)
        if m is None:
            raise bad_request("unterminated display name")
        display = _abnf.QUOTED_PAIR.sub(r"\1", s[1:m.end() - 1])
        s = s[m.end():].lstrip(" \t")
        if s[:1] != "<":
            raise bad_request("quoted display name without <URI>")
        lt = 0
    else:
        lt = s.find("<")
    if lt >= 0:
        if lt and display is None:
            display = s[:lt].rstrip(" \t")
            if _DISPLAY_TOKENS.fullmatch(display) is None:
                # display-name = *(token LWS) / quoted-string (§25.1): an
                # unquoted comma, quote, ";" or ">" is refused, not passed
                # on to the PBX (RFC 4475 §3.1.2.15).
                raise bad_request(f"malformed display name {display[:40]!r}")
        gt = s.find(">", lt)
        if gt < 0:
            raise bad_request("'<' without '>'")
        uri = s[lt + 1:gt].strip(" \t")
        rest = s[gt + 1:].lstrip(" \t")
        if rest and rest[0] != ";":
            raise bad_request(f"unexpected text after URI: {rest[:40]!r}")
    else:
        semi = s.find(";")
        if semi < 0:
            uri, rest = s, ""
        else:
            uri, rest = s[:semi].rstrip(" \t"), s[semi:]
        if " " in uri or "\t" in uri or ">" in uri or "," in uri:
            raise bad_request(f"malformed addr-spec {uri[:60]!r}")
    colon = uri.find(":")
    if colon < 1 or not _abnf.SCHEME.fullmatch(uri, 0, colon):
        raise bad_request(f"not a URI: {uri[:60]!r}")
    return NameAddr(display or None, uri, parse_params(rest, "name-addr") if rest else {})


def parse_via(text: str) -> Via:
    """Parse one via-parm: "SIP/2.0/UDP host[:port];params" (§20.42).

    Raises SipParseError(400); a comma-joined Via line must be split first
    (SipMessage.values("via") does).
    """
    m = _VIA.match(text.strip(" \t"))
    if m is None:
        raise bad_request(f"malformed Via {text[:60]!r}")
    rest = m.string[m.end():]
    if rest and rest[0] != ";":
        raise bad_request(f"malformed Via {text[:60]!r}")
    name, version, transport, host, port = m.groups()
    transport = transport.upper()
    return Via(
        protocol=f"{name}/{version}/{transport}".upper(),
        transport=transport,
        host=_host(host, "Via"),
        port=_port(port, "Via"),
        params=parse_params(rest, "Via") if rest else {},
    )
