"""Immutable longest-prefix matcher: one hash table per distinct prefix length."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Generic, NoReturn, TypeVar

from sipgate.acl.address import _OCTET_0, _OCTET_1, _OCTET_2, _OCTET_3, parse_address
from sipgate.acl.network import MAX_PREFIX, normalize_network
from sipgate.acl.address import parse_ipv4

__all__ = ["PrefixMatcher"]

T = TypeVar("T")

_MAPPED_HIGH = 0xFFFF
_MASK32 = 0xFFFFFFFF
_LIMIT = {4: 1 << 32, 6: 1 << 128}

# A probe list: (shift, shard shift, shards) per prefix length, longest
# first.  The key of a network of prefix length L in a family of width W is
# ``network >> (W - L)``, so an address matches it iff its key is in the
# table of that length.  Each length's table is split by the key's top
# SHARD_BITS bits into shards (``shards[key >> shard_shift]``): a change
# then copies one shard, not a table of a million entries.  A lookup costs
# two shifts and one dict probe per distinct prefix length present (at most
# 33 or 129), whatever the number of entries.
SHARD_BITS = 8
_Table = dict[int, Any]
_Probes = tuple[tuple[int, int, tuple[_Table, ...]], ...]
# The one shared empty shard; never written to (writers copy first).
_EMPTY: _Table = {}


class _Multi(tuple):  # type: ignore[type-arg]
    """The payloads of a network several entries name.  A network named
    once stores its payload itself (no tuple per entry: a million 1-tuples
    are ~55 MiB), so a stored value is either a payload or a _Multi."""

    __slots__ = ()


def _payloads(stored: Any) -> tuple[Any, ...]:
    """The payloads a stored value stands for, as a plain tuple."""
    return tuple(stored) if type(stored) is _Multi else (stored,)


_ABSENT = object()


def _with(stored: Any, payload: Any) -> Any:
    """``stored`` (a stored value, or _ABSENT) with ``payload`` added."""
    if stored is _ABSENT:
        return payload
    return _Multi(_payloads(stored) + (payload,))


class PrefixMatcher(Generic[T]):
    """Maps IPv4/IPv6 networks to payloads; answers longest-prefix queries.

    Build it with :meth:`build` (or :meth:`empty`); it cannot be changed
    afterwards, so it can be swapped in atomically and shared by readers.
    """

    __slots__ = ("_v4", "_v6", "_entries", "_networks")

    _v4: _Probes
    _v6: _Probes
    _entries: int
    _networks: int

    def __init__(self, v4: _Probes, v6: _Probes, entries: int) -> None:
        """Internal: use :meth:`build` or :meth:`empty`."""
        set_ = object.__setattr__
        set_(self, "_v4", v4)
        set_(self, "_v6", v6)
        set_(self, "_entries", entries)
        set_(self, "_networks", sum(len(shard) for _, _, shards in v4 + v6 for shard in shards))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __reduce__(self) -> tuple[type[PrefixMatcher[T]], tuple[_Probes, _Probes, int]]:
        # The default slot-state protocol would go through __setattr__.
        return type(self), (self._v4, self._v6, self._entries)

    @classmethod
    def build(cls, entries: Iterable[tuple[str, int | None, T]]) -> PrefixMatcher[T]:
        """Compile ``(address, prefix length or None, payload)`` entries.

        Host bits below the prefix are ignored, IPv4-mapped IPv6 networks
        are stored as IPv4, and entries naming the same network all keep
        their payload (in entry order).  Raises ValueError naming the first
        invalid entry.
        """
        # (version, prefix length) -> (key shift, shard shift, shards), the
        # shards filled in place: one pass, one dict insert per network.
        groups: dict[tuple[int, int], tuple[int, int, list[_Table]]] = {}
        count = 0
        last_group: tuple[int, int] | None = None
        shift = shard_shift = 0
        shards: list[_Table] = []
        for entry in entries:
            try:
                text, prefix, payload = entry
                # The common entry (an IPv4 dotted quad with an int prefix
                # length) is parsed inline; normalize_network takes the rest
                # and says what is wrong with an invalid one.
                value = None
                if type(prefix) is int and 0 <= prefix <= 32 and type(text) is str and ":" not in text \
                        and "/" not in text:
                    value = parse_ipv4(text)
                if value is not None:
                    version, length = 4, prefix
                    network = value
                else:
                    version, network, length = normalize_network(text, prefix)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"invalid ACL entry {entry!r}: {exc}") from exc
            count += 1
            if (version, length) != last_group:
                last_group = (version, length)
                group = groups.get(last_group)
                if group is None:
                    shard_shift = max(length - SHARD_BITS, 0)
                    group = groups[last_group] = (MAX_PREFIX[version] - length, shard_shift,
                                                  [_EMPTY] * (1 << (length - shard_shift)))
                shift, shard_shift, shards = group
            key = network >> shift
            index = key >> shard_shift
            shard = shards[index]
            if shard is _EMPTY:
                shard = shards[index] = {}
            found = shard.get(key, _ABSENT)
            shard[key] = payload if found is _ABSENT else _with(found, payload)
        probes: dict[int, list[tuple[int, int, tuple[_Table, ...]]]] = {4: [], 6: []}
        for (version, length), (shift, shard_shift, shards) in sorted(groups.items(), key=lambda g: -g[0][1]):
            probes[version].append((shift, shard_shift, tuple(shards)))
        return cls(tuple(probes[4]), tuple(probes[6]), count)

    def with_changes(self, added: Iterable[tuple[str, int | None, T]] = (),
                     removed: Iterable[tuple[str, int | None, T]] = ()) -> PrefixMatcher[T]:
        """A new matcher with ``removed`` entries taken out and ``added`` put in.

        Only the shards a change touches are copied; every other shard is
        shared with this matcher (both stay immutable), so a one-entry
        change costs one small dict copy, not a rebuild.  Removing an entry
        that is not there raises ValueError.
        """
        groups: dict[tuple[int, int], tuple[int, list[_Table]]] = {}
        for version, probes in ((4, self._v4), (6, self._v6)):
            for shift, shard_shift, shards in probes:
                groups[(version, MAX_PREFIX[version] - shift)] = (shard_shift, list(shards))
        copied: set[tuple[int, int, int]] = set()
        count = self._entries

        def shard_for(entry: tuple[str, int | None, Any]) -> tuple[_Table, int, Any]:
            try:
                text, prefix, payload = entry
                version, network, length = normalize_network(text, prefix)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"invalid ACL entry {entry!r}: {exc}") from exc
            group = groups.get((version, length))
            if group is None:
                shard_shift = max(length - SHARD_BITS, 0)
                group = groups[(version, length)] = (shard_shift, [_EMPTY] * (1 << (length - shard_shift)))
            shard_shift, shards = group
            key = network >> (MAX_PREFIX[version] - length)
            index = key >> shard_shift
            if (version, length, index) not in copied:
                shards[index] = dict(shards[index])  # copy on write
                copied.add((version, length, index))
            return shards[index], key, payload

        for entry in removed:
            shard, key, payload = shard_for(entry)
            found = _payloads(shard[key]) if key in shard else ()
            if payload not in found:
                raise ValueError(f"ACL entry {entry!r} is not in the matcher")
            i = found.index(payload)
            rest = found[:i] + found[i + 1:]
            if len(rest) > 1:
                shard[key] = _Multi(rest)
            elif rest:
                shard[key] = rest[0]
            else:
                del shard[key]
            count -= 1
        for entry in added:
            shard, key, payload = shard_for(entry)
            shard[key] = _with(shard.get(key, _ABSENT), payload)
            count += 1
        touched = {(version, length) for version, length, _ in copied}
        originals = {(version, MAX_PREFIX[version] - shift): shards
                     for version, probes_ in ((4, self._v4), (6, self._v6)) for shift, _, shards in probes_}
        probes: dict[int, list[tuple[int, int, tuple[_Table, ...]]]] = {4: [], 6: []}
        for (version, length), (shard_shift, shards) in sorted(groups.items(), key=lambda g: -g[0][1]):
            if (version, length) not in touched:
                kept = originals[(version, length)]  # share the whole length untouched
            elif any(shards):
                kept = tuple(shard or _EMPTY for shard in shards)
            else:
                continue  # the last entry of this length went
            probes[version].append((MAX_PREFIX[version] - length, shard_shift, kept))
        return type(self)(tuple(probes[4]), tuple(probes[6]), count)

    @classmethod
    def empty(cls) -> PrefixMatcher[T]:
        """A matcher with no entries: matches nothing."""
        return cls((), (), 0)

    def contains(self, addr_text: str) -> bool:
        """True if the address text is inside any network; False if invalid."""
        # The IPv4 parse is inlined: this is the per-INVITE admission check
        # and a call plus a result tuple would be a third of its cost.
        try:
            if ":" not in addr_text:
                a, b, c, d = addr_text.split(".")
                value = _OCTET_3[a] | _OCTET_2[b] | _OCTET_1[c] | _OCTET_0[d]
                for shift, shard_shift, shards in self._v4:
                    key = value >> shift
                    if key in shards[key >> shard_shift]:
                        return True
                return False
        except (ValueError, KeyError, TypeError, AttributeError):
            return False
        parsed = parse_address(addr_text)
        return parsed is not None and self.contains_value(*parsed)

    def lookup(self, addr_text: str) -> tuple[T, ...]:
        """Payloads of the longest matching network; () if none or invalid."""
        try:
            if ":" not in addr_text:
                a, b, c, d = addr_text.split(".")
                value = _OCTET_3[a] | _OCTET_2[b] | _OCTET_1[c] | _OCTET_0[d]
                for shift, shard_shift, shards in self._v4:
                    key = value >> shift
                    shard = shards[key >> shard_shift]
                    if key in shard:
                        return _payloads(shard[key])
                return ()
        except (ValueError, KeyError, TypeError, AttributeError):
            return ()
        parsed = parse_address(addr_text)
        if parsed is None:
            return ()
        return self.lookup_value(*parsed)

    def contains_value(self, version: int, value: int) -> bool:
        """Like :meth:`contains` for an address already parsed to an int."""
        if not 0 <= value < _LIMIT.get(version, 0):
            return False  # no such address: and a shard index must stay in range
        if version == 4:
            probes = self._v4
        elif version == 6:
            if value >> 32 == _MAPPED_HIGH:
                # Callers normally pass parse_address() output, already
                # unwrapped; a raw mapped value must not miss the IPv4 table.
                value &= _MASK32
                probes = self._v4
            else:
                probes = self._v6
        else:
            return False
        for shift, shard_shift, shards in probes:
            key = value >> shift
            if key in shards[key >> shard_shift]:
                return True
        return False

    def lookup_value(self, version: int, value: int) -> tuple[T, ...]:
        """Like :meth:`lookup` for an address already parsed to an int."""
        if not 0 <= value < _LIMIT.get(version, 0):
            return ()
        if version == 4:
            probes = self._v4
        elif version == 6:
            if value >> 32 == _MAPPED_HIGH:
                value &= _MASK32
                probes = self._v4
            else:
                probes = self._v6
        else:
            return ()
        for shift, shard_shift, shards in probes:
            key = value >> shift
            shard = shards[key >> shard_shift]
            if key in shard:
                return _payloads(shard[key])
        return ()

    def __len__(self) -> int:
        """Number of entries the matcher was built from (duplicates count)."""
        return self._entries

    @property
    def networks(self) -> int:
        """Number of distinct networks (after masking and unwrapping)."""
        return self._networks

    def prefix_lengths(self, version: int) -> tuple[int, ...]:
        """Distinct prefix lengths present for IP ``version``, ascending."""
        if version not in MAX_PREFIX:
            raise ValueError(f"IP version must be 4 or 6, not {version!r}")
        width = MAX_PREFIX[version]
        probes = self._v4 if version == 4 else self._v6
        return tuple(sorted(width - shift for shift, _, _ in probes))

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} entries={self._entries} networks={self._networks}"
            f" v4={self.prefix_lengths(4)} v6={self.prefix_lengths(6)}>"
        )
