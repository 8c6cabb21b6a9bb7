"""Immutable longest-prefix matcher: one hash table per distinct prefix length."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Callable, Iterable
from functools import partial
from itertools import compress, repeat
from operator import contains as _has, getitem, is_not, itemgetter, not_, rshift
from typing import Any, Generic, NoReturn, TypeVar

from sipgate.acl.address import _OCTET_0, _OCTET_1, _OCTET_2, _OCTET_3, parse_address, parse_ipv4
from sipgate.acl.network import MAX_PREFIX, lookup_pton, normalize_network
from sipgate.acl.probe import COMPILED as _PROBES_COMPILED
from sipgate.acl.probe import Probes

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


_Groups = dict[tuple[int, int], tuple[int, int, list[_Table]]]


def _new_group(version: int, length: int, lazy: bool = False) -> tuple[int, int, list[_Table]]:
    """(key shift, shard shift, shards) of an empty (version, length) table;
    ``lazy``: the shards are all _EMPTY, for the writer to replace."""
    shard_shift = max(length - SHARD_BITS, 0)
    count = 1 << (length - shard_shift)
    return MAX_PREFIX[version] - length, shard_shift, [_EMPTY] * count if lazy else [{} for _ in range(count)]


def _entry_groups(rows: Iterable[Any]) -> _Groups:
    """The groups of a build, one entry at a time: takes every entry
    normalize_network takes and names the first invalid one."""
    # (version, prefix length) -> (key shift, shard shift, shards), the
    # shards filled in place: one pass, one dict insert per network.
    groups: _Groups = {}
    last_group: tuple[int, int] | None = None
    shift = shard_shift = 0
    shards: list[_Table] = []
    for entry in rows:
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
        if (version, length) != last_group:
            last_group = (version, length)
            group = groups.get(last_group)
            if group is None:
                group = groups[last_group] = _new_group(version, length, lazy=True)
            shift, shard_shift, shards = group
        key = network >> shift
        index = key >> shard_shift
        shard = shards[index]
        if shard is _EMPTY:
            shard = shards[index] = {}
        found = shard.get(key, _ABSENT)
        shard[key] = payload if found is _ABSENT else _with(found, payload)
    return groups


_BULK_MIN = 64
_BULK_CHUNK = 4096
_ROW_TYPES = {tuple, list}
_PREFIX_TYPES = {int, type(None)}
_FIRST, _SECOND, _THIRD = itemgetter(0), itemgetter(1), itemgetter(2)
_MAPPED_RANGE = {_MAPPED_HIGH}
_SETDEFAULT = dict.setdefault


def _unpack4(packed: bytes) -> list[int] | None:
    """The big-endian 4-byte addresses in ``packed`` as ints, in C (a third
    faster than int.from_bytes on each; for IPv6 it is the other way round)."""
    words = array("I", packed)
    if words.itemsize != 4:
        return None
    if sys.byteorder == "little":
        words.byteswap()
    return words.tolist()


def _bulk_groups(rows: list[Any] | tuple[Any, ...]) -> _Groups | None:
    """The groups of a build in bulk, or None to leave it to _entry_groups.

    The common table (address text that inet_pton reads, int or None
    prefix lengths, no IPv4-mapped IPv6) is taken apart column by column
    with C iterators (map, compress, inet_pton, array, dict.setdefault),
    so that no Python code runs per entry: at a million entries that was
    most of the build.  It goes in chunks, so that the columns stay small
    (in cache, and no large temporary lists to fragment the heap).
    Anything else (an invalid entry, "addr/len" text, a zone id, a mapped
    network, an odd row type, one network named twice with the very same
    payload object) returns None before any matcher is made, and the
    entry by entry build handles it, with its error messages.
    """
    n = len(rows)
    if n < _BULK_MIN:
        return None
    pton_families = lookup_pton()
    if pton_families is None:
        return None
    pton, af4, af6 = pton_families
    groups: _Groups = {}
    # Per version: prefix length as given (None: a host) -> key shift,
    # shard index shift (of the address), shards of its group.
    shift_of: dict[int, dict[int | None, int]] = {4: {}, 6: {}}
    index_shift_of: dict[int, dict[int | None, int]] = {4: {}, 6: {}}
    shards_of: dict[int, dict[int | None, list[_Table]]] = {4: {}, 6: {}}
    several: dict[tuple[int, int, int], list[Any]] = {}  # networks named more than once
    named_again = 0
    for start in range(0, n, _BULK_CHUNK):
        part = rows[start:start + _BULK_CHUNK]
        if not set(map(type, part)) <= _ROW_TYPES or set(map(len, part)) != {3}:
            return None
        texts = list(map(_FIRST, part))
        prefixes = list(map(_SECOND, part))
        payloads = list(map(_THIRD, part))
        del part
        # (bool is refused: True would pass for 1 in the lookups below.)
        if not set(map(type, prefixes)) <= _PREFIX_TYPES:
            return None
        try:
            is6 = list(map(_has, texts, repeat(":")))
        except TypeError:
            return None
        n6 = sum(is6)
        families: list[tuple[int, Iterable[str], list[Any], list[Any]]]
        if n6 == 0:
            families = [(4, texts, prefixes, payloads)]
        elif n6 == len(texts):
            families = [(6, texts, prefixes, payloads)]
        else:
            is4 = list(map(not_, is6))
            families = [(4, compress(texts, is4), list(compress(prefixes, is4)), list(compress(payloads, is4))),
                        (6, compress(texts, is6), list(compress(prefixes, is6)), list(compress(payloads, is6)))]
        for version, family_texts, family_prefixes, family_payloads in families:
            shifts, index_shifts, shard_lists = shift_of[version], index_shift_of[version], shards_of[version]
            for given in set(family_prefixes).difference(shifts):
                width = MAX_PREFIX[version]
                length = width if given is None else given
                if not 0 <= length <= width:
                    return None
                group = groups.get((version, length))
                if group is None:
                    group = groups[(version, length)] = _new_group(version, length)
                shifts[given], index_shifts[given], shard_lists[given] = group[0], group[0] + group[1], group[2]
            try:
                if version == 4:
                    values = _unpack4(b"".join(map(pton, repeat(af4), family_texts)))
                else:
                    values = list(map(int.from_bytes, map(pton, repeat(af6), family_texts)))
            except (OSError, ValueError, TypeError):
                return None
            if values is None or len(values) != len(family_prefixes):
                return None
            if version == 6 and not _MAPPED_RANGE.isdisjoint(map(rshift, values, repeat(32))):
                return None  # IPv4-mapped networks are stored as IPv4: entry by entry
            keys = list(map(rshift, values, map(shifts.__getitem__, family_prefixes)))
            # (All lengths of 8 bits or more index their shards by the
            # address's top 8 bits: one shift for the whole column then.)
            index_shift = set(index_shifts.values())
            indexes = map(rshift, values, repeat(index_shift.pop()) if len(index_shift) == 1
                          else map(index_shifts.__getitem__, family_prefixes))
            shards: Iterable[_Table] = map(getitem, map(shard_lists.__getitem__, family_prefixes),  # type: ignore[arg-type]
                                           indexes)
            # setdefault stores the first payload of a network and returns
            # it for the later ones: those are flagged, and kept after it.
            again = list(map(is_not, map(_SETDEFAULT, shards, keys, family_payloads), family_payloads))
            flagged = sum(again)
            if flagged:
                named_again += flagged
                for key, given, payload in zip(compress(keys, again), compress(family_prefixes, again),
                                               compress(family_payloads, again)):
                    shift = shifts[given]
                    named = several.get((version, shift, key))
                    if named is None:
                        shard = shard_lists[given][key >> (index_shifts[given] - shift)]
                        several[(version, shift, key)] = [shard[key], payload]
                    else:
                        named.append(payload)
    for (version, shift, key), named in several.items():
        _, shard_shift, shards_list = groups[(version, MAX_PREFIX[version] - shift)]
        shards_list[key >> shard_shift][key] = _Multi(named)
    networks = sum(len(shard) for _, _, shards_list in groups.values() for shard in shards_list)
    if networks + named_again != n:
        return None  # a network named twice with one payload object: entry by entry
    return groups


def _slow_contains(v4: _Probes, v6: _Probes, addr_text: Any) -> bool:
    """contains() for text inet_pton refuses (zone ids, invalid text, non-str)."""
    parsed = parse_address(addr_text)
    if parsed is None:
        return False
    version, value = parsed
    for shift, shard_shift, shards in v4 if version == 4 else v6:
        key = value >> shift
        if key in shards[key >> shard_shift]:
            return True
    return False


def _slow_lookup(v4: _Probes, v6: _Probes, addr_text: Any) -> tuple[Any, ...]:
    """lookup() for text inet_pton refuses."""
    parsed = parse_address(addr_text)
    if parsed is None:
        return ()
    version, value = parsed
    for shift, shard_shift, shards in v4 if version == 4 else v6:
        key = value >> shift
        shard = shards[key >> shard_shift]
        if key in shard:
            return _payloads(shard[key])
    return ()


# --- specialised lookups -----------------------------------------------------------
#
# contains() and lookup() are the per-datagram admission check.  A generic
# loop over the probe list costs a tuple unpack, two shifts and a test per
# prefix length on top of the probe itself, and parsing the text in Python
# (split + four dict probes for IPv4, far more for IPv6) was most of the
# rest.  So each matcher gets its own two functions, generated for its
# probe layout (the prefix lengths present: the shifts are constants, the
# shard tuples closure cells, every probe unrolled), which parse the text
# with the C inet_pton.  inet_pton reads only canonical-or-strict address
# text and agrees with parse_address on whatever it accepts (checked once
# by lookup_pton, and by property tests); anything it refuses (zone ids,
# invalid text, non-str) goes to parse_address, so the answer is exact for
# every input.  The code is compiled once per layout and cached; a matcher
# only binds its shard tuples to it.  When sipgate/acl/probe.py is compiled
# (sipgate native build), its Probes class serves every layout instead, in
# less than half the time per call.

_Lookups = tuple[Callable[[str], bool], Callable[[str], tuple[Any, ...]]]
_Layout = tuple[tuple[int, int], ...]
_FACTORIES: dict[tuple[_Layout, _Layout, bool], Callable[..., _Lookups]] = {}
_FACTORY_CACHE_MAX = 256


def _never(addr_text: Any) -> bool:
    """contains() of an empty matcher."""
    return False


def _nothing(addr_text: Any) -> tuple[Any, ...]:
    """lookup() of an empty matcher."""
    return ()


def _probes(layout: _Layout, table: str, width: int) -> tuple[list[str], list[tuple[str, str]]]:
    """Set-up lines and (key expression, shard expression) per length, longest first.

    The lengths of 8 bits or more share the shard index (the address's top
    8 bits), so their shards are regrouped per top byte: one tuple index
    gives every such length's shard (``T[v >> (width - 8)]``).  The
    shorter lengths, with fewer shards, are probed on their own.
    """
    setup: list[str] = []
    probes: list[tuple[str, str]] = []
    wide = [i for i, (shift, shard_shift) in enumerate(layout) if shift + shard_shift == width - SHARD_BITS]
    if wide:
        setup.append(f"    {table}T = tuple(zip(*({table}[i] for i in {tuple(wide)!r})))")
    for i, (shift, shard_shift) in enumerate(layout):
        key = f"(v >> {shift})" if shift else "v"
        if i in wide:
            probes.append((key, f"s[{wide.index(i)}]"))
        else:
            setup.append(f"    {table}{i} = {table}[{i}]")
            probes.append((key, f"{table}{i}[v >> {shift + shard_shift}]"))
    return setup, probes


def _contains_statements(table: str, width: int, probes: list[tuple[str, str]], indent: str) -> list[str]:
    if not probes:
        return [f"{indent}return False"]
    head = [f"{indent}s = {table}T[v >> {width - SHARD_BITS}]"] if any(shard.startswith("s[") for _, shard in probes) else []
    return head + [f"{indent}return " + " or ".join(f"{key} in {shard}" for key, shard in probes)]


def _lookup_statements(table: str, width: int, probes: list[tuple[str, str]], indent: str) -> list[str]:
    lines = [f"{indent}s = {table}T[v >> {width - SHARD_BITS}]"] if any(shard.startswith("s[") for _, shard in probes) else []
    for key, shard in probes:
        lines += [f"{indent}k = {key}", f"{indent}d = {shard}", f"{indent}if k in d:",
                  f"{indent}    r = d[k]", f"{indent}    return tuple(r) if type(r) is Multi else (r,)"]
    return lines + [f"{indent}return ()"]


def _factory_source(layout4: _Layout, layout6: _Layout, pton: bool) -> str:
    setup4, v4 = _probes(layout4, "A", 32)
    setup6, v6 = _probes(layout6, "B", 128)
    lines = ["def make(A, B, fb, pton, AF4, AF6, slow_contains, slow_lookup, Multi, O3, O2, O1, O0):"]
    lines += setup4 + setup6
    for kind, statements in (("contains", _contains_statements), ("lookup", _lookup_statements)):
        lines.append(f"    def {kind}(addr_text):")
        if pton:
            lines += ["        try:",
                      "            if ':' in addr_text:",
                      "                v = fb(pton(AF6, addr_text))",
                      # (not ::ffff:0:0/96, whose addresses are IPv4 peers')
                      "                if not 0xFFFF00000000 <= v <= 0xFFFFFFFFFFFF:"]
            lines += statements("B", 128, v6, " " * 20)
            lines += ["                v &= 0xFFFFFFFF",
                      "            else:",
                      "                v = fb(pton(AF4, addr_text))",
                      "        except (OSError, ValueError, TypeError):",
                      f"            return slow_{kind}(addr_text)"]
        else:
            # No usable inet_pton: IPv4 parsed inline as parse_ipv4 does,
            # IPv6 by parse_address.
            lines += ["        try:",
                      "            if ':' in addr_text:",
                      f"                return slow_{kind}(addr_text)",
                      "            a, b, c, d = addr_text.split('.')",
                      "            v = O3[a] | O2[b] | O1[c] | O0[d]",
                      "        except (ValueError, KeyError, TypeError, AttributeError):",
                      "            return False" if kind == "contains" else "            return ()"]
        lines += statements("A", 32, v4, " " * 8)
    lines.append("    return contains, lookup")
    return "\n".join(lines) + "\n"


def _specialise(v4: _Probes, v6: _Probes) -> _Lookups:
    """contains() and lookup() specialised for this probe layout and these shards."""
    if not v4 and not v6:
        return _never, _nothing  # (and no inet_pton, so no socket, for empty matchers)
    pton = lookup_pton()
    if _PROBES_COMPILED:
        # The mypyc build: one compiled class serves every layout, faster
        # than the generated code below (see sipgate/acl/probe.py).
        pton_fn, _, af6 = pton if pton is not None else (None, 0, 0)
        probes = Probes(v4, v6, pton_fn, af6, _Multi, partial(_slow_contains, v4, v6), partial(_slow_lookup, v4, v6))
        return probes.contains, probes.lookup
    layout4 = tuple((shift, shard_shift) for shift, shard_shift, _ in v4)
    layout6 = tuple((shift, shard_shift) for shift, shard_shift, _ in v6)
    key = (layout4, layout6, pton is not None)
    make = _FACTORIES.get(key)
    if make is None:
        namespace: dict[str, Any] = {}
        exec(compile(_factory_source(*key), f"<PrefixMatcher lookups {len(v4)}+{len(v6)}>", "exec"), namespace)
        make = namespace["make"]
        if len(_FACTORIES) >= _FACTORY_CACHE_MAX:
            _FACTORIES.clear()
        _FACTORIES[key] = make
    pton_fn, af4, af6 = pton if pton is not None else (None, 0, 0)
    return make(tuple(shards for _, _, shards in v4), tuple(shards for _, _, shards in v6), int.from_bytes,
                pton_fn, af4, af6, partial(_slow_contains, v4, v6), partial(_slow_lookup, v4, v6), _Multi,
                _OCTET_3, _OCTET_2, _OCTET_1, _OCTET_0)


class PrefixMatcher(Generic[T]):
    """Maps IPv4/IPv6 networks to payloads; answers longest-prefix queries.

    Build it with :meth:`build` (or :meth:`empty`); it cannot be changed
    afterwards, so it can be swapped in atomically and shared by readers.
    """

    # __dict__ holds the matcher's own contains() and lookup() (see
    # _specialise), which shadow the generic methods of the same name.
    __slots__ = ("_v4", "_v6", "_entries", "_networks", "__dict__")

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
        self.__dict__["contains"], self.__dict__["lookup"] = _specialise(v4, v6)

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
        rows: list[Any] | tuple[Any, ...] = entries if isinstance(entries, (list, tuple)) else list(entries)
        bulk = _bulk_groups(rows)
        groups = bulk if bulk is not None else _entry_groups(rows)
        count = len(rows)
        probes: dict[int, list[tuple[int, int, tuple[_Table, ...]]]] = {4: [], 6: []}
        for (version, length), (shift, shard_shift, shards) in sorted(groups.items(), key=lambda g: -g[0][1]):
            probes[version].append((shift, shard_shift, tuple(shard or _EMPTY for shard in shards)))
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
        for version, present in ((4, self._v4), (6, self._v6)):
            for shift, shard_shift, kept_shards in present:
                groups[(version, MAX_PREFIX[version] - shift)] = (shard_shift, list(kept_shards))
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

    # contains() and lookup() below are what the class documents and what
    # PrefixMatcher.contains(m, text) runs; an instance answers with its own
    # specialised pair (same answers, a fraction of the time: _specialise).

    def contains(self, addr_text: str) -> bool:
        """True if the address text is inside any network; False if invalid."""
        return _slow_contains(self._v4, self._v6, addr_text)

    def lookup(self, addr_text: str) -> tuple[T, ...]:
        """Payloads of the longest matching network; () if none or invalid."""
        return _slow_lookup(self._v4, self._v6, addr_text)

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
