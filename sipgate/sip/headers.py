"""Header names (canonical keys, compact forms) and comma-list splitting."""

from __future__ import annotations

from sipgate.sip._abnf import HEADER_NAME
from sipgate.sip.errors import bad_request

__all__ = [
    "COMPACT_FORMS",
    "DISPLAY_NAMES",
    "LIST_KEYS",
    "canonical_key",
    "first_comma",
    "split_list",
]

# RFC 3261 §7.3.3 compact forms, plus those later RFCs registered:
# o (RFC 6665), r/b (RFC 3515/3892), x (RFC 4028), u (RFC 6665),
# a/j/d (RFC 3841), y/n (RFC 4474).
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "u": "allow-events",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
    "n": "identity-info",
}

# Headers whose grammar is `1#element` (elements separated by commas), so
# several lines and one comma-joined line are equivalent (§7.3.1).  The
# authentication headers are deliberately absent: their credentials contain
# commas that do not separate elements.
LIST_KEYS: frozenset[str] = frozenset({
    "via", "route", "record-route", "contact", "path", "service-route",
    "allow", "supported", "require", "proxy-require", "unsupported",
    "accept", "accept-encoding", "accept-language", "content-encoding",
    "content-language", "allow-events", "in-reply-to", "warning",
    "call-info", "alert-info", "error-info", "accept-contact",
    "reject-contact", "request-disposition", "p-asserted-identity",
    "p-preferred-identity", "reason",
})

# How this layer spells the headers it writes or names in error details.
DISPLAY_NAMES: dict[str, str] = {
    "via": "Via",
    "from": "From",
    "to": "To",
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "content-length": "Content-Length",
    "max-forwards": "Max-Forwards",
    "route": "Route",
    "record-route": "Record-Route",
}

# Header name exactly as received -> canonical key.  Bounded, so a flood of
# invented names costs a validation each time, never memory.
_KEY_CACHE: dict[str, str] = {}
_KEY_CACHE_LIMIT = 2048


def _prime() -> None:
    for short, key in COMPACT_FORMS.items():
        _KEY_CACHE[short] = _KEY_CACHE[short.upper()] = key
    for name in ("Via", "From", "To", "Call-ID", "Call-Id", "CSeq", "Contact", "Max-Forwards",
                 "Content-Length", "Content-Type", "Route", "Record-Route", "User-Agent",
                 "Allow", "Supported", "Require", "Server", "Warning", "Expires",
                 "Content-Disposition", "Session-Expires", "Min-SE", "P-Asserted-Identity",
                 "Privacy", "Accept", "Event", "Subject", "Organization", "Date"):
        _KEY_CACHE[name] = _KEY_CACHE[name.lower()] = name.lower()


_prime()


def canonical_key(name: str) -> tuple[str, str]:
    """(name without trailing whitespace, canonical key) for a received name.

    The key is the lowercase long form: "v", "V" and "VIA" all give "via".
    Raises SipParseError(400) if the name is not a token (§7.3.1).
    """
    key = _KEY_CACHE.get(name)
    if key is not None:
        return name, key
    clean = name.rstrip(" \t")
    if not HEADER_NAME.fullmatch(clean):
        raise bad_request(f"malformed header name {clean[:40]!r}")
    lower = clean.lower()
    key = COMPACT_FORMS.get(lower, lower)
    if clean is name and len(_KEY_CACHE) < _KEY_CACHE_LIMIT:
        _KEY_CACHE[name] = key
    return clean, key


def lookup_key(name: str) -> str:
    """Canonical key for a name given by code (never raises)."""
    key = _KEY_CACHE.get(name)
    if key is None:
        lower = name.lower()
        key = COMPACT_FORMS.get(lower, lower)
    return key


def _commas(value: str, limit: int) -> list[int]:
    """Indexes of up to ``limit`` commas outside quotes and <>, one pass."""
    found: list[int] = []
    quoted = angle = escaped = False
    for i, ch in enumerate(value):
        if quoted:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif angle:
            if ch == ">":
                angle = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ",":
            found.append(i)
            if len(found) == limit:
                break
    return found


def first_comma(value: str) -> int:
    """Index of the first comma outside quotes and <>, or len(value)."""
    comma = value.find(",")
    if comma < 0:
        return len(value)
    if '"' not in value and "<" not in value:
        return comma
    found = _commas(value, 1)
    return found[0] if found else len(value)


def split_list(value: str) -> list[str]:
    """The non-empty elements of a comma-separated header value (§7.3.1).

    Commas inside quoted strings (display names) and inside <> (URIs) do not
    separate elements.  An unterminated quote or <> runs to the end.
    """
    if "," not in value:
        return [value] if value else []
    if '"' not in value and "<" not in value:
        parts = value.split(",")
    else:
        start = 0
        parts = []
        for comma in _commas(value, -1):
            parts.append(value[start:comma])
            start = comma + 1
        parts.append(value[start:])
    return [p for p in (q.strip(" \t") for q in parts) if p]
