"""PrefixMatcher.with_changes agrees with a rebuild and shares untouched tables."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipgate.acl import PrefixMatcher

NETS = st.tuples(st.integers(0, 2**32 - 1), st.sampled_from([8, 16, 24, 32])).map(
    lambda t: (str(ipaddress.ip_network((t[0] >> (32 - t[1]) << (32 - t[1]), t[1]))).split("/")[0], t[1]))


@settings(max_examples=150, deadline=None)
@given(st.lists(NETS, max_size=30), st.lists(NETS, max_size=10), st.data())
def test_with_changes_equals_rebuild(base, extra, data):
    entries = [(a, p, f"e{i}") for i, (a, p) in enumerate(base)]
    removed = data.draw(st.lists(st.sampled_from(entries), unique=True)) if entries else []
    added = [(a, p, f"x{i}") for i, (a, p) in enumerate(extra)]
    before = PrefixMatcher.build(entries)
    changed = before.with_changes(added, removed)
    expected = PrefixMatcher.build([e for e in entries if e not in removed] + added)
    assert len(changed) == len(expected)
    probes = [a for a, _ in base + extra] + ["10.0.0.1", "192.0.2.255"]
    for addr in probes:
        assert set(changed.lookup(addr)) == set(expected.lookup(addr)), addr
    # The original is untouched.
    for addr in probes:
        assert set(before.lookup(addr)) == set(PrefixMatcher.build(entries).lookup(addr))


def test_untouched_shards_are_shared_not_copied():
    m = PrefixMatcher.build([("10.0.0.0", 8, "a"), ("192.0.2.0", 24, "b"), ("10.0.0.0", 24, "d")])
    n = m.with_changes(added=[("192.0.3.0", 24, "c")])
    shards_m = {32 - shift: shards for shift, _, shards in m._v4}
    shards_n = {32 - shift: shards for shift, _, shards in n._v4}
    assert shards_n[8] is shards_m[8]  # an untouched prefix length: shared whole
    assert shards_n[24][192] is not shards_m[24][192]  # the touched shard: copied
    assert shards_n[24][10] is shards_m[24][10]  # the other shards of that length: shared
    assert n.contains("192.0.3.9") and not m.contains("192.0.3.9")


def test_removing_what_is_not_there_fails():
    m = PrefixMatcher.build([("10.0.0.0", 8, "a")])
    with pytest.raises(ValueError):
        m.with_changes(removed=[("10.0.0.0", 8, "zzz")])
    empty = m.with_changes(removed=[("10.0.0.0", 8, "a")])
    assert len(empty) == 0 and not empty.contains("10.1.1.1") and empty.prefix_lengths(4) == ()
