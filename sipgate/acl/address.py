"""Allocation-light parsing of source address text into (version, integer)."""

from __future__ import annotations

__all__ = ["parse_address", "parse_ipv4", "parse_ipv6"]

# Octet text -> octet value already shifted into place, one table per position.
# Only the canonical spellings "0".."255" are keys, so a single dict probe
# rejects everything ``ipaddress`` rejects: empty octets, signs, whitespace,
# non-ASCII digits, more than three digits, values over 255 and leading zeros
# (which glibc-strict parsers refuse because "010" would be octal elsewhere).
_OCTET_0: dict[str, int] = {str(i): i for i in range(256)}
_OCTET_1: dict[str, int] = {str(i): i << 8 for i in range(256)}
_OCTET_2: dict[str, int] = {str(i): i << 16 for i in range(256)}
_OCTET_3: dict[str, int] = {str(i): i << 24 for i in range(256)}

_HEX_DIGITS = "0123456789abcdefABCDEF"
_EIGHT_GROUPS = "%4s" * 8  # right-aligned, space padded; spaces become zeros
_MAPPED_HIGH = 0xFFFF  # value >> 32 of an IPv4-mapped IPv6 address (::ffff:0:0/96)
_MASK32 = 0xFFFFFFFF


def parse_ipv4(text: str) -> int | None:
    """Integer value of a strict dotted quad, or None if ``text`` is not one."""
    try:
        a, b, c, d = text.split(".")
        return _OCTET_3[a] | _OCTET_2[b] | _OCTET_1[c] | _OCTET_0[d]
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def parse_ipv6(text: str) -> int | None:
    """Integer value of IPv6 text (no zone id, no unwrapping), or None.

    Accepts exactly what ``ipaddress.IPv6Address`` accepts without a scope:
    at most one ``::``, one to four hex digits per group, an optional dotted
    quad as the last 32 bits.
    """
    head, sep, tail = text.partition("::")
    if sep:
        hi = head.split(":") if head else []
        lo = last = tail.split(":") if tail else []
    else:
        hi = last = text.split(":")
    low32 = 0
    if last and "." in last[-1]:
        low32 = parse_ipv4(last.pop())  # type: ignore[assignment]
        if low32 is None:
            return None
        # Two placeholder groups stand for the low 32 bits, OR-ed in at the end.
        last += ("0", "0")
    if sep:
        # "::" must stand for at least one zero group.
        present = len(hi) + len(lo)
        if present > 7:
            return None
        groups = hi + ["0"] * (8 - present) + lo
    elif len(hi) == 8:
        groups = hi
    else:
        return None
    # An empty group is a lone ':' at either end, ':::' or a second '::'.
    # A space would be hidden by the padding below, so it is refused first.
    if "" in groups or " " in text:
        return None
    # One format call pads all eight groups to four characters: the result is
    # 32 characters iff no group was longer than four.  The characters are
    # checked here because int(..., 16) would also take '_', signs and "0x".
    digits = (_EIGHT_GROUPS % tuple(groups)).replace(" ", "0")
    if len(digits) != 32 or digits.strip(_HEX_DIGITS):
        return None
    return int(digits, 16) | low32


def parse_address(text: str) -> tuple[int, int] | None:
    """Parse a socket source host into ``(version, value)``; None if invalid.

    IPv4 is a strict dotted quad.  IPv6 may be in any textual form, upper
    case, with an embedded dotted quad and a zone id (``fe80::1%eth0``, the
    zone is ignored).  IPv4-mapped IPv6 (``::ffff:a.b.c.d``) is returned as
    ``(4, value)`` because a dual-stack socket reports IPv4 peers that way.
    Accepts exactly what ``ipaddress.ip_address`` accepts and never raises.
    """
    try:
        if ":" not in text:
            # Fast path: IPv4 is the common case and needs four dict probes.
            a, b, c, d = text.split(".")
            return 4, _OCTET_3[a] | _OCTET_2[b] | _OCTET_1[c] | _OCTET_0[d]
        if "%" in text:
            # ipaddress rejects '/' anywhere, an empty zone and a second '%'.
            addr, _, zone = text.partition("%")
            if not zone or "%" in zone or "/" in zone:
                return None
        else:
            addr = text
        value = parse_ipv6(addr)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if value is None:
        return None
    if value >> 32 == _MAPPED_HIGH:
        return 4, value & _MASK32
    return 6, value
