"""PrefixMatcher's lookups as one compiled class (the mypyc build's).

PrefixMatcher (sipgate/acl/matcher.py) answers ``contains`` and ``lookup``
with a hash probe per prefix length present.  Interpreted, the fastest form
is the code it generates per probe layout (probes unrolled, the text parsed
by the C inet_pton).  Compiled with mypyc (sipgate/native.py), this module
is faster still: the dotted quad is read by a loop that compiles to C, the
probe loop's shifts are machine integers, and no interpreted frame runs
(~0.3 µs per call at 10 entries instead of ~0.7).  The matcher uses this
class only when it is compiled.

Whatever the fast forms do not read (a zone id, text inet_pton refuses,
not a str) goes to the matcher's slow functions, which parse with
parse_address: the answer is the same for every input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from sipgate._ints import i64

__all__ = ["Probes", "ipv4_value"]

_Shards = tuple[dict[int, Any], ...]
_Probes = tuple[tuple[int, int, _Shards], ...]

# (Any: compared with and applied to IPv6 values, which stay objects.)
_MAPPED_LOW: Final[Any] = 0xFFFF00000000
_MAPPED_HIGH: Final[Any] = 0xFFFFFFFFFFFF
_LOW32: Final[Any] = 0xFFFFFFFF
_V6_TOP: Final[Any] = 120  # (the shift of an IPv6 address's top 8 bits)
_FROM_BYTES: Final[Any] = int.from_bytes
_ABSENT: Final[Any] = object()


def ipv4_value(text: str) -> int:
    """The address of dotted-quad ``text`` as an int, as inet_pton reads it
    (four decimal parts of 0-255, no leading zero, nothing else), or -1."""
    n: i64 = len(text)
    if n < 7 or n > 15:
        return -1
    # (Machine integers: compiled, the loop is plain C arithmetic, where
    # tagged ints checked every step for a boxed value to release.)
    value: i64 = 0
    part: i64 = 0
    digits: i64 = 0
    dots: i64 = 0
    i: i64 = 0
    while i < n:
        c: i64 = ord(text[i])
        if 48 <= c <= 57:
            if digits and part == 0:
                return -1  # a leading zero
            part = part * 10 + c - 48
            if part > 255:
                return -1
            digits += 1
        elif c == 46 and digits and dots < 3:
            value = value << 8 | part
            part = 0
            digits = 0
            dots += 1
        else:
            return -1
        i += 1
    if dots != 3 or not digits:
        return -1
    return value << 8 | part


class Probes:
    """``contains`` and ``lookup`` over a matcher's probe lists: per
    family, (key shift, shard shift, shards) per prefix length, longest
    first (see matcher.py)."""

    def __init__(self, v4: _Probes, v6: _Probes, pton: Any, af6: int, multi: type,
                 slow_contains: Callable[[Any], bool], slow_lookup: Callable[[Any], tuple[Any, ...]]) -> None:
        self.v4 = v4
        # IPv6 values do not fit mypyc's machine integers: typed as int,
        # every result that does would be unboxed and boxed again.  So the
        # IPv6 probes work on objects (Any), and the lengths of 8 bits or
        # more (all but the shortest) index their shards by the address's
        # top 8 bits, shifted out once.
        self.v6_wide: tuple[tuple[Any, Any], ...] = tuple(
            (shift, shards) for shift, shard_shift, shards in v6 if shift + shard_shift == 120)
        self.v6_narrow: tuple[tuple[Any, Any, Any], ...] = tuple(
            probe for probe in v6 if probe[0] + probe[1] != 120)
        self.pton = pton  # socket.inet_pton, or None where it is unusable
        self.af6 = af6
        self.multi: Any = multi  # (matcher._Multi: several payloads of one network)
        self.slow_contains = slow_contains
        self.slow_lookup = slow_lookup

    def _wide(self, text: str) -> Any:
        """The value of IPv6 ``text`` as inet_pton reads it, or None."""
        if text.find(":") < 0 or self.pton is None:
            return None
        try:
            return _FROM_BYTES(self.pton(self.af6, text), "big")
        except (OSError, ValueError, TypeError):
            return None

    def contains(self, addr_text: Any) -> bool:
        if type(addr_text) is not str:
            return self.slow_contains(addr_text)
        v = ipv4_value(addr_text)
        if v < 0:
            w = self._wide(addr_text)
            if w is None:
                return self.slow_contains(addr_text)
            if w < _MAPPED_LOW or w > _MAPPED_HIGH:
                return self._contains6(w)
            v = int(w & _LOW32)  # (::ffff:0:0/96: an IPv4 peer's address)
        for shift, shard_shift, shards in self.v4:
            key = v >> shift
            if key in shards[key >> shard_shift]:
                return True
        return False

    def _contains6(self, w: Any) -> bool:
        top = w >> _V6_TOP
        for shift, wide in self.v6_wide:
            if w >> shift in wide[top]:
                return True
        for shift, shard_shift, shards in self.v6_narrow:
            key = w >> shift
            if key in shards[key >> shard_shift]:
                return True
        return False

    def lookup(self, addr_text: Any) -> tuple[Any, ...]:
        if type(addr_text) is not str:
            return self.slow_lookup(addr_text)
        v = ipv4_value(addr_text)
        if v < 0:
            w = self._wide(addr_text)
            if w is None:
                return self.slow_lookup(addr_text)
            if w < _MAPPED_LOW or w > _MAPPED_HIGH:
                return self._lookup6(w)
            v = int(w & _LOW32)
        for shift, shard_shift, shards in self.v4:
            key = v >> shift
            found = shards[key >> shard_shift].get(key, _ABSENT)
            if found is not _ABSENT:
                return tuple(found) if type(found) is self.multi else (found,)
        return ()

    def _lookup6(self, w: Any) -> tuple[Any, ...]:
        top = w >> _V6_TOP
        for shift, wide in self.v6_wide:
            found = wide[top].get(w >> shift, _ABSENT)
            if found is not _ABSENT:
                return tuple(found) if type(found) is self.multi else (found,)
        for shift, shard_shift, shards in self.v6_narrow:
            key = w >> shift
            found = shards[key >> shard_shift].get(key, _ABSENT)
            if found is not _ABSENT:
                return tuple(found) if type(found) is self.multi else (found,)
        return ()


def _probe() -> None:
    """(compiled functions have no __code__)"""


COMPILED: Final = not hasattr(_probe, "__code__")
