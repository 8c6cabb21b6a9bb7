"""Build-time validation and canonical form of ACL networks (uses netaddr)."""

from __future__ import annotations

from typing import Any

from sipgate.acl.address import parse_ipv4, parse_ipv6

__all__ = ["MAX_PREFIX", "lookup_pton", "normalize_network"]

MAX_PREFIX: dict[int, int] = {4: 32, 6: 128}

# ::ffff:0:0/96, the IPv4-mapped IPv6 range: value >> 32 of its members.
_MAPPED_HIGH = 0xFFFF
_MASK32 = 0xFFFFFFFF


_inet_pton6: Any = None


def _ipv6_value(text: str) -> int | None:
    """IPv6 text -> integer, with the C ``inet_pton`` (eight times faster
    than parse_ipv6 here: half of a million-entry build was IPv6 parsing).
    socket is imported on first use, at build time: the receive path never
    calls this, so the pure layers still load no I/O module.  Without
    socket (never on Linux) parse_ipv6, which a property test holds to the
    same answers, is used."""
    global _inet_pton6
    if _inet_pton6 is None:
        try:
            import socket

            family = socket.AF_INET6
            pton = socket.inet_pton

            def _inet_pton6_impl(addr: str) -> int | None:
                try:
                    return int.from_bytes(pton(family, addr), "big")
                except (OSError, ValueError, UnicodeError):
                    return None

            _inet_pton6 = _inet_pton6_impl
        except (ImportError, AttributeError):
            _inet_pton6 = parse_ipv6
    if not text.isascii() or "%" in text:
        return None  # (inet_pton would read a zone id on some systems)
    return _inet_pton6(text)


# Edge cases on which the C inet_pton must agree with parse_ipv4 /
# parse_ipv6 (value, or refusal) before the matcher's lookups trust it.
_PTON_CHECK_V4 = ("0.0.0.0", "1.2.3.4", "255.255.255.255", "01.2.3.4", "1.2.3.04", "1.2.3", "1.2.3.4.",
                  "1..3.4", " 1.2.3.4", "1.2.3.4 ", "256.1.1.1", "0x1.1.1.1", "1.2.3.4.5", "", "1.2.3.-4",
                  "\u0661.2.3.4", "1.2.3.4/32")
_PTON_CHECK_V6 = ("::", "::1", "1::", "1:2:3:4:5:6:7:8", "1::2:3:4:5:6:7", "::ffff:1.2.3.4", "::1.2.3.4",
                  "1:2:3:4:5:6:1.2.3.4", "FFFF::abcd", "0000:0:0:0:0:0:0:0001", ":::", "1:2:3:4:5:6:7:8:9",
                  "1::2::3", "12345::", ":1::", "1::2:", "::01.2.3.4", "fe80::1%eth0", "1:2:3:4:5:6:7:8::",
                  "::1.2.3", "g::", " ::1", "::1 ", "1:2:3:4:5:6:7", "1:2:3:4:5:6:7:1.2.3.4", "::1.2.3.4:5",
                  "::0x1", "::-1", "::+1", "\u0661::", "::1/128", "")

_pton_checked: Any = None


def lookup_pton() -> tuple[Any, int, int] | None:
    """``(socket.inet_pton, AF_INET, AF_INET6)`` for the matcher's lookups,
    or None if there is no inet_pton or it does not read addresses exactly
    as parse_ipv4 / parse_ipv6 do (glibc's and musl's do: strict dotted
    quads, no leading zeros, no zone id).  Checked once, on edge cases;
    the lookups send whatever inet_pton refuses to parse_address, so only
    what it accepts has to agree.  socket is imported here, on first use,
    when a matcher with entries is made (build time), never on import."""
    global _pton_checked
    if _pton_checked is None:
        _pton_checked = False
        try:
            import socket

            pton, af4, af6 = socket.inet_pton, int(socket.AF_INET), int(socket.AF_INET6)
        except (ImportError, AttributeError):
            return None

        def agrees(family: int, parse: Any, text: str) -> bool:
            try:
                value: int | None = int.from_bytes(pton(family, text), "big")
            except (OSError, ValueError, TypeError):
                value = None
            return value == parse(text)

        if all(agrees(af4, parse_ipv4, text) for text in _PTON_CHECK_V4) and \
                all(agrees(af6, parse_ipv6, text) for text in _PTON_CHECK_V6):
            _pton_checked = (pton, af4, af6)
    return _pton_checked or None


def _parse_prefix(text: str) -> int:
    # Strict decimal only: int() would also take " 8", "+8", "0_8" and
    # non-ASCII digits, none of which belong in a stored ACL entry.
    if not (text.isascii() and text.isdigit()) or len(text) > 3:
        raise ValueError(f"prefix length {text!r} is not a decimal number")
    return int(text)


def normalize_network(text: str, prefix: int | None) -> tuple[int, int, int]:
    """Return ``(version, network, prefix)`` for an ACL entry.

    ``text`` is an IPv4 or IPv6 address (strict, as ``inet_pton`` reads it;
    no zone id).  ``prefix`` is the prefix length, or None for a single host
    (/32 or /128); ``text`` may instead carry it as ``"addr/len"`` when
    ``prefix`` is None.  Host bits below the prefix are cleared, and
    IPv4-mapped IPv6 networks (``::ffff:0:0/96`` and longer) become their
    IPv4 equivalents, so that two spellings of the same network compare
    equal.  Raises ValueError on anything invalid.
    """
    if not isinstance(text, str):
        raise ValueError(f"address must be text, not {type(text).__name__}")
    if "/" in text:
        if prefix is not None:
            raise ValueError(f"{text!r} carries a prefix length and prefix={prefix!r} was given too")
        text, _, prefix_text = text.partition("/")
        prefix = _parse_prefix(prefix_text)
    if prefix is None or (type(prefix) is int and 0 <= prefix <= 128):
        # The common spellings without netaddr (several times faster: a
        # million entries are compiled at startup).  What parse_ipv4 and
        # parse_ipv6 accept, inet_pton accepts with the same value (a
        # property test holds them to netaddr); anything else, and every
        # error, takes the general path below.
        if ":" not in text:
            if prefix is None or prefix <= 32:
                value = parse_ipv4(text)
                if value is not None:
                    length = 32 if prefix is None else prefix
                    shift = 32 - length
                    return 4, value >> shift << shift, length
        else:
            value = _ipv6_value(text)
            if value is not None:
                length = 128 if prefix is None else prefix
                shift = 128 - length
                value = value >> shift << shift
                if length >= 96 and value >> 32 == _MAPPED_HIGH:
                    return 4, value & _MASK32, length - 96
                return 6, value, length
    # Imported here, at build time only: netaddr pulls in socket, which the
    # pure layers must not load (the receive path never calls this).
    import netaddr

    try:
        address = netaddr.IPAddress(text, flags=netaddr.INET_PTON)
    except (netaddr.AddrFormatError, ValueError, TypeError) as exc:
        raise ValueError(f"{text!r} is not an IPv4 or IPv6 address") from exc
    version = address.version
    width = MAX_PREFIX[version]
    if prefix is None:
        prefix = width
    # bool is an int subclass; True/False as a prefix length is a caller bug.
    elif not isinstance(prefix, int) or isinstance(prefix, bool):
        raise ValueError(f"prefix length {prefix!r} is not an integer")
    elif not 0 <= prefix <= width:
        raise ValueError(f"prefix length {prefix} is out of range 0..{width} for IPv{version}")
    shift = width - prefix
    value = int(address) >> shift << shift
    if version == 6 and prefix >= 96 and value >> 32 == _MAPPED_HIGH:
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d and
        # parse_address unwraps them, so the table must hold IPv4 too.
        return 4, value & _MASK32, prefix - 96
    return version, value, prefix
