"""The matcher's fast paths against the simple references.

contains() and lookup() of a matcher are generated for its prefix lengths
and parse with the C inet_pton, sending whatever it refuses to
parse_address; builds of 64 entries or more go through the column-wise
bulk path, which hands anything unusual to the entry by entry one.  Both
must give exactly the answers of the plain definitions for any input.
"""

from __future__ import annotations

import ipaddress
import pickle

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from helpers import examples
from sipgate.acl import PrefixMatcher, normalize_network, parse_address
from sipgate.acl.address import parse_ipv4, parse_ipv6
from sipgate.acl.matcher import _BULK_MIN, _bulk_groups, _entry_groups, _factory_source
from sipgate.acl.network import lookup_pton
from sipgate.acl.probe import COMPILED as PROBES_COMPILED
from sipgate.acl.probe import Probes, ipv4_value

from test_acl_properties import ref_lookup, ref_network

# --- address text: canonical, non-canonical and invalid -------------------------

OCTET = st.one_of(st.integers(0, 255).map(str), st.integers(0, 255).map(str),
                  st.sampled_from(["010", "00", "01", "256", "-1", "+1", " 1", "1 ", "", "0x1", "\u0661", "1_0", "999",
                                   "255", "0"]))
GROUP = st.one_of(st.integers(0, 0xFFFF).map(lambda v: format(v, "x")), st.integers(0, 0xFFFF).map(lambda v: format(v, "X")),
                  st.integers(0, 0xFFFF).map(lambda v: format(v, "04x")),
                  st.sampled_from(["0", "00000", "g", "", "ffff", "FFFF", "1.2.3.4", "01.2.3.4", "-1", " 1", "0x1", "\u0661"]))


@st.composite
def ipv6_text(draw: st.DrawFn) -> str:
    groups = draw(st.lists(GROUP, min_size=1, max_size=9))
    if draw(st.booleans()):
        gap = draw(st.integers(0, len(groups)))
        text = ":".join(groups[:gap]) + "::" + ":".join(groups[gap:])
    else:
        text = ":".join(groups)
    if draw(st.integers(0, 9)) == 0:
        text += draw(st.sampled_from(["%eth0", "%", "%1", "%a%b", "%x/1"]))
    return text


def near(value: int, width: int) -> st.SearchStrategy[int]:
    return st.integers(-3, 3).map(lambda d: (value + d) % (1 << width))


ADDRESS_TEXT = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v))),
    st.integers(0, 2**128 - 1).map(lambda v: ipaddress.IPv6Address(v).compressed),
    st.integers(0, 2**128 - 1).map(lambda v: ipaddress.IPv6Address(v).exploded.upper()),
    st.integers(0, 2**32 - 1).map(lambda v: f"::ffff:{ipaddress.IPv4Address(v)}"),
    st.integers(0, 2**32 - 1).map(lambda v: f"::FFFF:{v >> 16:x}:{v & 0xFFFF:04x}"),
    st.integers(0, 2**32 - 1).map(lambda v: f"0:0:0:0:0:ffff:{ipaddress.IPv4Address(v)}%eth0"),
    st.lists(OCTET, min_size=3, max_size=5).map(".".join),
    ipv6_text(),
    st.text(max_size=20),
)

# --- tables: octet-aligned and other prefix lengths, mapped, hosts ------------------

V4_LENGTHS = st.one_of(st.sampled_from([0, 7, 8, 16, 24, 32]), st.integers(0, 32))
V6_LENGTHS = st.one_of(st.sampled_from([0, 7, 8, 48, 64, 96, 127, 128]), st.integers(0, 128))


@st.composite
def table(draw: st.DrawFn, min_size: int = 0, max_size: int = 30, mapped: bool = True) -> list[tuple[str, int | None, int]]:
    bases4 = draw(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4))
    bases6 = draw(st.lists(st.integers(0, 2**128 - 1), min_size=1, max_size=4))
    entries: list[tuple[str, int | None, int]] = []
    for payload in range(1000, 1000 + draw(st.integers(min_size, max_size))):
        kind = draw(st.sampled_from(["v4", "v4", "v6", "v6", "host4", "host6"] + ["mapped"] * mapped))
        if kind in ("v4", "host4", "mapped"):
            value = draw(st.sampled_from(bases4)) ^ (draw(st.integers(0, 2**32 - 1)) >> draw(st.integers(0, 32)))
            length: int | None = None if kind == "host4" else draw(V4_LENGTHS)
            text = str(ipaddress.IPv4Address(value))
            if kind == "mapped":
                text, length = f"::ffff:{text}", 96 + length  # type: ignore[operator]
        else:
            value = draw(st.sampled_from(bases6)) ^ (draw(st.integers(0, 2**128 - 1)) >> draw(st.integers(0, 128)))
            length = None if kind == "host6" else draw(V6_LENGTHS)
            text = ipaddress.IPv6Address(value).compressed
        entries.append((text, length, payload))
    return entries


def probes_for(entries: list[tuple[str, int | None, int]], data: st.DataObject) -> list[str]:
    """Texts inside, at the edges and just outside of the networks, plus random text."""
    probes = []
    for text, length, _ in entries[:12]:
        net = ref_network(text, length)
        width = net.max_prefixlen
        for v in (int(net.network_address), int(net.broadcast_address)):
            for w in (v - 1, v, v + 1):
                if 0 <= w < 1 << width:
                    addr = ipaddress.ip_address(w) if width == 128 else ipaddress.IPv4Address(w)
                    probes.append(str(addr))
                    if width == 32:
                        probes.append(f"::ffff:{addr}")
                    else:
                        probes.append(addr.exploded)
    probes += data.draw(st.lists(ADDRESS_TEXT, max_size=15))
    return probes


def check(m: PrefixMatcher[int], entries: list[tuple[str, int | None, int]], probes: list[object]) -> None:
    reference = [(ref_network(t, pl), p) for t, pl, p in entries]
    for probe in probes:
        expected = ref_lookup(reference, probe) if isinstance(probe, str) else ()
        assert m.lookup(probe) == expected, probe  # type: ignore[arg-type]
        assert m.contains(probe) is bool(expected), probe  # type: ignore[arg-type]
        # The class's generic methods: the same answers.
        assert PrefixMatcher.lookup(m, probe) == expected, probe  # type: ignore[arg-type]
        assert PrefixMatcher.contains(m, probe) is bool(expected), probe  # type: ignore[arg-type]


@settings(max_examples=examples(400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table(), st.data())
def test_specialised_lookups_agree_with_linear_scan(entries, data) -> None:
    m = PrefixMatcher.build(entries)
    check(m, entries, probes_for(entries, data) + [None, b"10.0.0.1", 167772161, "", "1.2.3.4\x00", "::1\x00"])


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(table(min_size=_BULK_MIN, max_size=140, mapped=False), st.data())
def test_bulk_build_agrees_with_linear_scan(entries, data) -> None:
    if not any(":" in text and int(ipaddress.IPv6Address(text)) >> 32 == 0xFFFF for text, _, _ in entries):
        # (No address in ::ffff:0:0/96, which the bulk path leaves to the
        # entry by entry one; every payload its own object.)
        assert _bulk_groups(entries) is not None
    m = PrefixMatcher.build(entries)
    assert len(m) == len(entries)
    assert m.networks == len({ref_network(t, pl) for t, pl, _ in entries})
    check(m, entries, probes_for(entries, data))


@settings(max_examples=examples(300), deadline=None)
@given(st.lists(ADDRESS_TEXT, max_size=40))
def test_fast_lookups_agree_with_parse_address(texts: list[str]) -> None:
    """Every address of each family is in /0: contains() is exactly 'parse_address accepts it'."""
    m = PrefixMatcher.build([("0.0.0.0", 0, "v4"), ("::", 0, "v6")])
    for text in texts:
        parsed = parse_address(text)
        assert m.contains(text) is (parsed is not None), text
        assert m.lookup(text) == (() if parsed is None else ("v4",) if parsed[0] == 4 else ("v6",)), text


@settings(max_examples=examples(1000))
@given(st.one_of(ADDRESS_TEXT, st.lists(OCTET, min_size=4, max_size=4).map(".".join)))
@example("01.2.3.4")
@example("::01.2.3.4")
@example("1::2:3:4:5:6:7")
def test_inet_pton_accepts_only_what_the_parsers_accept(text: str) -> None:
    pton = lookup_pton()
    if pton is None:
        pytest.skip("no usable inet_pton here: the lookups use parse_address")
    inet_pton, af4, af6 = pton
    for family, parse in ((af4, parse_ipv4), (af6, parse_ipv6)):
        try:
            value = int.from_bytes(inet_pton(family, text), "big")
        except (OSError, ValueError, TypeError):
            continue  # refused: the lookups ask parse_address
        assert parse(text) == value, (family, text)


@settings(max_examples=examples(1000))
@given(st.one_of(ADDRESS_TEXT, st.lists(OCTET, min_size=4, max_size=4).map(".".join),
                 st.text(alphabet="0123456789.", max_size=17)))
@example("01.2.3.4")
@example("1.2.3.04")
@example("255.255.255.255")
@example("256.1.1.1")
@example("1.2.3.")
@example("1..2.3")
@example("1.2.3.4.5")
@example("0.0.0.0")
def test_ipv4_value_reads_exactly_the_strict_dotted_quad(text: str) -> None:
    """The compiled probes' IPv4 reader: inet_pton's grammar (four parts of
    0-255, no leading zero), checked against ipaddress; -1 for the rest."""
    try:
        expected = int(ipaddress.IPv4Address(text))
    except ValueError:
        expected = -1
    if expected >= 0 and any(len(part) > 1 and part[0] == "0" for part in text.split(".")):
        expected = -1  # (ipaddress refuses leading zeros too, since 3.9.5; not every Python)
    if expected >= 0 and not all(part.isascii() and part.isdigit() for part in text.split(".")):
        expected = -1
    assert ipv4_value(text) == expected, text
    if expected >= 0:
        assert parse_address(text) == (4, expected)


# --- the bulk build against the entry by entry one ---------------------------------


def groups_as_dicts(groups) -> dict:
    return {g: (shift, shard_shift, [dict(s) for s in shards]) for g, (shift, shard_shift, shards) in groups.items()}


ROWS = st.lists(st.one_of(
    st.tuples(st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v))), st.one_of(st.none(), V4_LENGTHS),
              st.integers(1000, 10**9)),
    st.tuples(st.integers(0, 2**128 - 1).map(lambda v: ipaddress.IPv6Address(v >> 100 << 100).compressed),
              st.one_of(st.none(), V6_LENGTHS), st.integers(1000, 10**9)),
    st.tuples(st.sampled_from(["10.0.0.1", "10.0.0.0", "2001:db8::", "2001:db8::1"]), st.sampled_from([None, 8, 24, 32, 48, 128]),
              st.one_of(st.integers(1000, 10**9), st.sampled_from(["a", "b"]))),
), min_size=_BULK_MIN, max_size=100)


@settings(max_examples=examples(100), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(ROWS, st.data())
def test_bulk_groups_equal_entry_groups(rows, data) -> None:
    """Duplicates (one payload object or several), hosts, both families: the same shards."""
    rows = [r for r in rows if r[1] is None or r[1] <= (128 if ":" in r[0] else 32)]
    assume(len(rows) >= _BULK_MIN)
    # A few odd rows that send the build entry by entry.
    odd = data.draw(st.lists(st.sampled_from([("10.0.0.0/8", None, "x"), ("::ffff:10.0.0.1", None, "x"),
                                              ("fe80::1%eth0", None, "x"), ("10.0.0.1", True, "x"),
                                              ("10.0.0.1", 33, "x"), ["10.0.0.1", 8, "x"], ("10.0.0.1", 8, "x", "y"),
                                              (None, 8, "x"), ("010.0.0.1", 8, "x"), ("10.0.0.1", 8.0, "x")]),
                             max_size=1))
    rows += odd
    bulk = _bulk_groups(rows)
    try:
        entry = _entry_groups(rows)
    except ValueError:
        assert bulk is None
        return
    if bulk is not None:
        assert groups_as_dicts(bulk) == groups_as_dicts(entry)
    elif not odd:
        # Only an unusual table leaves the bulk path: here, one network named
        # twice with the very same payload object.
        seen: dict[tuple[int, int, int], list[object]] = {}
        for text, prefix, payload in rows:
            seen.setdefault(normalize_network(text, prefix), []).append(payload)
        assert any(a is b for named in seen.values() for i, a in enumerate(named) for b in named[i + 1:])


def test_bulk_build_keeps_duplicate_payloads_in_order() -> None:
    rows = [(f"10.{i >> 8}.{i & 255}.1", 24, i) for i in range(100)]
    rows += [("10.0.5.9", 24, "second"), ("10.0.5.0", None, "host"), ("10.0.5.200", 24, "third")]
    assert _bulk_groups(rows) is not None
    m = PrefixMatcher.build(rows)
    assert m.lookup("10.0.5.7") == (5, "second", "third")
    assert m.lookup("10.0.5.0") == ("host",)
    same = object()
    rows += [("10.0.6.0", 24, same), ("10.0.6.0", 24, same)]
    assert _bulk_groups(rows) is not None  # flagged after the first payload, 6
    assert PrefixMatcher.build(rows).lookup("10.0.6.1") == (6, same, same)
    rows += [("10.1.0.0", 24, same), ("10.1.0.7", 24, same)]
    assert _bulk_groups(rows) is None  # the first payload named again: entry by entry
    assert PrefixMatcher.build(rows).lookup("10.1.0.1") == (same, same)


def test_bulk_build_errors_name_the_entry() -> None:
    rows = [(f"10.0.{i}.0", 24, i) for i in range(100)] + [("10.0.0.256", None, "bad")]
    with pytest.raises(ValueError, match="10.0.0.256"):
        PrefixMatcher.build(rows)
    rows = [(f"2001:db8:{i:x}::", 48, i) for i in range(100)] + [("2001:db8::/200", None, "bad")]
    with pytest.raises(ValueError, match="invalid ACL entry"):
        PrefixMatcher.build(rows)


def test_bulk_build_unwraps_mapped_networks() -> None:
    rows = [(f"2001:db8:{i:x}::", 48, i) for i in range(100)] + [("::ffff:192.0.2.0", 120, "mapped")]
    m = PrefixMatcher.build(rows)
    assert m.prefix_lengths(4) == (24,)
    assert m.lookup("192.0.2.9") == ("mapped",)
    assert m.lookup("2001:db8:63::1") == (99,)


# --- generated code ------------------------------------------------------------------


def test_generated_source_is_per_layout_and_cached() -> None:
    a = PrefixMatcher.build([("10.0.0.0", 8, 1), ("2001:db8::", 32, 2)])
    b = PrefixMatcher.build([("11.0.0.0", 8, 3), ("2001:db9::", 32, 4)])
    if PROBES_COMPILED:
        # The mypyc build: one compiled class, an instance per matcher.
        assert type(a.contains.__self__) is Probes and a.contains.__self__ is a.lookup.__self__
        assert a.contains.__self__ is not b.contains.__self__
    else:
        assert a.contains.__code__ is b.contains.__code__  # one compiled function per layout
        assert a.contains is not b.contains  # each bound to its own shards
    assert a.contains("10.1.1.1") and not b.contains("10.1.1.1")
    source = _factory_source(((0, 24), (8, 16)), (), True)
    compile(source, "<test>", "exec")
    assert "v >> 8" in source


def test_empty_matcher_loads_no_parser() -> None:
    m: PrefixMatcher[int] = PrefixMatcher.empty()
    assert m.contains("10.0.0.1") is False and m.lookup("::1") == ()


def test_specialised_functions_survive_pickle_and_changes() -> None:
    m = PrefixMatcher.build([("10.0.0.0", 8, "a"), ("2001:db8::", 32, "b")])
    clone = pickle.loads(pickle.dumps(m))
    assert clone.contains("10.2.3.4") and clone.lookup("2001:db8::5") == ("b",)
    changed = m.with_changes(added=[("192.0.2.0", 25, "c")], removed=[("10.0.0.0", 8, "a")])
    assert changed.lookup("192.0.2.100") == ("c",) and not changed.contains("10.2.3.4")
    assert changed.prefix_lengths(4) == (25,)
    assert m.contains("10.2.3.4") and not m.contains("192.0.2.100")


def test_bulk_path_is_taken_for_plain_tables() -> None:
    """The property tests above would be vacuous if every table fell back."""
    rows = [(f"10.{i >> 8 & 255}.{i & 255}.{i % 7}", (32, 24, 16, None, 20)[i % 5], i) for i in range(500)]
    rows += [(f"2001:db8:{i:x}::{i % 3}", (128, 64, 48, None, 57)[i % 5], i) for i in range(500)]
    bulk = _bulk_groups(rows)
    assert bulk is not None
    assert groups_as_dicts(bulk) == groups_as_dicts(_entry_groups(rows))


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(table(), st.data())
def test_lookups_without_inet_pton_agree_with_linear_scan(monkeypatch, entries, data) -> None:
    """Where inet_pton is missing or reads text differently, the generated
    lookups parse IPv4 inline and IPv6 with parse_address: same answers."""
    import sipgate.acl.matcher as matcher_module

    with monkeypatch.context() as patch:
        patch.setattr(matcher_module, "lookup_pton", lambda: None)
        m = PrefixMatcher.build(entries)
        assert _bulk_groups(entries * 10) is None
    owner = getattr(m.contains, "__self__", None)  # (an empty matcher has plain functions)
    if PROBES_COMPILED and owner is not None:
        assert owner.pton is None  # IPv4 by ipv4_value, the rest by parse_address
    else:
        assert "pton(" not in m.contains.__code__.co_names and "pton" not in m.contains.__code__.co_freevars
    check(m, entries, probes_for(entries, data) + [None, b"10.0.0.1", 167772161, ""])
