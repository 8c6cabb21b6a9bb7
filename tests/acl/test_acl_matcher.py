"""One test per edge case of PrefixMatcher and normalize_network."""

from __future__ import annotations

import ast
import copy
import pathlib
import pickle

import pytest

from sipgate.acl import PrefixMatcher, normalize_network

# --- /0 ------------------------------------------------------------------------


def test_ipv4_default_route_matches_all_ipv4_only() -> None:
    m = PrefixMatcher.build([("0.0.0.0", 0, "any4")])
    for addr in ("0.0.0.0", "10.1.2.3", "255.255.255.255", "::ffff:8.8.8.8"):
        assert m.lookup(addr) == ("any4",), addr
    for addr in ("::", "::1", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"):
        assert not m.contains(addr), addr


def test_ipv6_default_route_matches_all_ipv6_only() -> None:
    m = PrefixMatcher.build([("::", 0, "any6")])
    for addr in ("::", "::1", "2001:db8::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"):
        assert m.lookup(addr) == ("any6",), addr
    # IPv4-mapped sources are IPv4 peers: ::/0 does not admit them.
    for addr in ("10.1.2.3", "0.0.0.0", "::ffff:10.1.2.3"):
        assert not m.contains(addr), addr


def test_default_route_with_host_bits_is_masked() -> None:
    m = PrefixMatcher.build([("203.0.113.9", 0, "any")])
    assert m.contains("1.1.1.1")


# --- exact hosts -----------------------------------------------------------------


def test_ipv4_host_exact() -> None:
    m = PrefixMatcher.build([("192.0.2.10", 32, "h"), ("192.0.2.20", None, "n")])
    assert m.lookup("192.0.2.10") == ("h",)
    assert m.lookup("192.0.2.20") == ("n",)
    for addr in ("192.0.2.9", "192.0.2.11", "192.0.2.19", "192.0.2.21"):
        assert not m.contains(addr), addr


def test_ipv6_host_exact() -> None:
    m = PrefixMatcher.build([("2001:db8::10", 128, "h"), ("2001:db8::20", None, "n")])
    assert m.lookup("2001:DB8:0:0:0:0:0:10") == ("h",)
    assert m.lookup("2001:db8::20") == ("n",)
    for addr in ("2001:db8::f", "2001:db8::11", "2001:db8::1f", "2001:db8::21"):
        assert not m.contains(addr), addr


# --- overlap, adjacency, masking ---------------------------------------------------


def test_overlapping_longest_prefix_wins() -> None:
    m = PrefixMatcher.build(
        [("10.0.0.0", 8, "wide"), ("10.1.0.0", 16, "mid"), ("10.1.2.0", 24, "narrow"), ("10.1.2.3", 32, "host")]
    )
    assert m.lookup("10.1.2.3") == ("host",)
    assert m.lookup("10.1.2.4") == ("narrow",)
    assert m.lookup("10.1.3.4") == ("mid",)
    assert m.lookup("10.2.3.4") == ("wide",)
    assert m.lookup("11.0.0.0") == ()


def test_overlapping_ipv6_longest_prefix_wins() -> None:
    m = PrefixMatcher.build([("2001:db8::", 32, "wide"), ("2001:db8:1::", 48, "mid"), ("2001:db8:1:2::", 64, "narrow")])
    assert m.lookup("2001:db8:1:2::99") == ("narrow",)
    assert m.lookup("2001:db8:1:3::99") == ("mid",)
    assert m.lookup("2001:db8:2::99") == ("wide",)
    assert m.lookup("2001:db9::") == ()


def test_adjacent_prefixes_do_not_bleed() -> None:
    m = PrefixMatcher.build([("10.0.0.0", 25, "low"), ("10.0.0.128", 25, "high")])
    assert m.lookup("10.0.0.0") == ("low",)
    assert m.lookup("10.0.0.127") == ("low",)
    assert m.lookup("10.0.0.128") == ("high",)
    assert m.lookup("10.0.0.255") == ("high",)
    assert m.lookup("9.255.255.255") == ()
    assert m.lookup("10.0.1.0") == ()


def test_adjacent_ipv6_prefixes_do_not_bleed() -> None:
    m = PrefixMatcher.build([("2001:db8::", 64, "a"), ("2001:db8:0:1::", 64, "b")])
    assert m.lookup("2001:db8::ffff:ffff:ffff:ffff") == ("a",)
    assert m.lookup("2001:db8:0:1::") == ("b",)
    assert m.lookup("2001:db8:0:2::") == ()


def test_host_bits_masked() -> None:
    m = PrefixMatcher.build([("10.0.0.5", 24, "net")])
    assert m.lookup("10.0.0.0") == ("net",)
    assert m.lookup("10.0.0.255") == ("net",)
    assert m.lookup("10.0.1.0") == ()
    assert normalize_network("10.0.0.5", 24) == (4, 0x0A000000, 24)


def test_host_bits_masked_ipv6() -> None:
    m = PrefixMatcher.build([("2001:db8::dead:beef", 64, "net")])
    assert m.lookup("2001:db8::") == ("net",)
    assert normalize_network("2001:db8::dead:beef", 64) == (6, 0x20010DB8 << 96, 64)


# --- duplicates -------------------------------------------------------------------


def test_duplicates_keep_all_payloads_in_order() -> None:
    m = PrefixMatcher.build(
        [("10.0.0.0", 24, "a"), ("10.0.0.7", 24, "b"), ("10.0.0.0/24", None, "c"), ("::ffff:10.0.0.0", 120, "d")]
    )
    assert m.lookup("10.0.0.1") == ("a", "b", "c", "d")
    assert len(m) == 4
    assert m.networks == 1


def test_identical_entries_are_both_kept() -> None:
    m = PrefixMatcher.build([("10.0.0.1", None, "x"), ("10.0.0.1", None, "x")])
    assert m.lookup("10.0.0.1") == ("x", "x")


def test_many_duplicates_build_linearly() -> None:
    m = PrefixMatcher.build(("10.0.0.1", None, i) for i in range(20000))
    assert m.lookup("10.0.0.1") == tuple(range(20000))


# --- IPv4-mapped ------------------------------------------------------------------


def test_mapped_source_matches_ipv4_network() -> None:
    m = PrefixMatcher.build([("192.0.2.0", 24, "v4")])
    for addr in ("::ffff:192.0.2.7", "::FFFF:192.0.2.7", "::ffff:c000:207", "0:0:0:0:0:ffff:c000:0207%eth0"):
        assert m.lookup(addr) == ("v4",), addr
    assert not m.contains("::ffff:192.0.3.7")


def test_mapped_network_stored_as_ipv4() -> None:
    m = PrefixMatcher.build([("::ffff:192.0.2.0", 120, "mapped")])
    assert m.prefix_lengths(4) == (24,)
    assert m.prefix_lengths(6) == ()
    assert m.lookup("192.0.2.200") == ("mapped",)
    assert m.lookup("::ffff:192.0.2.200") == ("mapped",)


def test_whole_mapped_range_is_ipv4_default_route() -> None:
    m = PrefixMatcher.build([("::ffff:0:0", 96, "all")])
    assert normalize_network("::ffff:0:0", 96) == (4, 0, 0)
    assert m.contains("8.8.8.8")
    assert not m.contains("2001:db8::1")


def test_prefix_shorter_than_mapped_range_stays_ipv6() -> None:
    assert normalize_network("::ffff:0:0", 95) == (6, 0xFFFE << 32, 95)
    assert normalize_network("::ffff:0:0", 80) == (6, 0, 80)


def test_mapped_value_unwrapped_by_value_api() -> None:
    m = PrefixMatcher.build([("192.0.2.0", 24, "v4")])
    assert m.contains_value(6, (0xFFFF << 32) | 0xC0000201)
    assert m.lookup_value(6, (0xFFFF << 32) | 0xC0000201) == ("v4",)


def test_ipv4_compatible_is_not_unwrapped() -> None:
    m = PrefixMatcher.build([("1.2.3.0", 24, "v4")])
    assert not m.contains("::1.2.3.4")


# --- zone ids -------------------------------------------------------------------


def test_zone_id_ignored_in_lookup() -> None:
    m = PrefixMatcher.build([("fe80::", 10, "link-local")])
    assert m.lookup("fe80::1%eth0") == ("link-local",)
    assert m.contains("FE80::abcd%2")
    assert not m.contains("fe80::1%")


def test_zone_id_rejected_in_build() -> None:
    with pytest.raises(ValueError, match="fe80::1%eth0"):
        PrefixMatcher.build([("fe80::1%eth0", None, "x")])


# --- invalid input ----------------------------------------------------------------


@pytest.mark.parametrize(
    "addr",
    ["", "10.0.0", "10.0.0.256", "010.0.0.1", " 10.0.0.1", "10.0.0.1 ", "10.0.0.1/32", "1::2::3",
     "::g", "garbage", "10.0.0.1%eth0", None, b"10.0.0.1", 167772161],
)
def test_invalid_lookup_is_empty_not_error(addr: object) -> None:
    m = PrefixMatcher.build([("0.0.0.0", 0, "any4"), ("::", 0, "any6")])
    assert m.lookup(addr) == ()  # type: ignore[arg-type]
    assert m.contains(addr) is False  # type: ignore[arg-type]


@pytest.mark.parametrize("version", [0, 5, 7, -4])
def test_value_api_unknown_version(version: int) -> None:
    m = PrefixMatcher.build([("0.0.0.0", 0, "any4"), ("::", 0, "any6")])
    assert m.lookup_value(version, 1) == ()
    assert m.contains_value(version, 1) is False


def test_value_api_out_of_range_values_miss() -> None:
    m = PrefixMatcher.build([("10.0.0.0", 8, "a"), ("0.0.0.0", 0, "b")])
    assert not m.contains_value(4, -1)
    assert not m.contains_value(4, 1 << 32)


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        (("10.0.0.1", 33, "p"), "33"),
        (("10.0.0.1", -1, "p"), "-1"),
        (("::1", 129, "p"), "129"),
        (("10.0.0.1", True, "p"), "True"),
        (("10.0.0.1", "24", "p"), "'24'"),
        (("10.0.0.256", None, "p"), "10.0.0.256"),
        (("010.0.0.1", None, "p"), "010.0.0.1"),
        (("10.0.0", None, "p"), "10.0.0"),
        ((" 10.0.0.1", None, "p"), " 10.0.0.1"),
        (("", None, "p"), "''"),
        ((None, None, "p"), "None"),
        (("10.0.0.0/8", 8, "p"), "10.0.0.0/8"),
        (("10.0.0.0/+8", None, "p"), "10.0.0.0/+8"),
        (("10.0.0.0/255.0.0.0", None, "p"), "255.0.0.0"),
        (("10.0.0.1", None), "10.0.0.1"),
        ("10.0.0.1", "10.0.0.1"),
    ],
)
def test_invalid_entry_raises_naming_it(entry: object, needle: str) -> None:
    with pytest.raises(ValueError, match="invalid ACL entry") as info:
        PrefixMatcher.build([("192.0.2.1", None, "ok"), entry])  # type: ignore[arg-type]
    assert needle in str(info.value)


@pytest.mark.parametrize(("text", "prefix"), [("10.0.0.1", 33), ("::1", 129), ("x", None), ("10.0.0.1", -1)])
def test_normalize_network_rejects(text: str, prefix: int | None) -> None:
    with pytest.raises(ValueError):
        normalize_network(text, prefix)


def test_normalize_network_forms_agree() -> None:
    assert normalize_network("10.0.0.0/8", None) == normalize_network("10.255.0.1", 8) == (4, 0x0A000000, 8)
    assert normalize_network("2001:DB8::1", None) == normalize_network("2001:db8:0::1", 128)
    assert normalize_network("::ffff:10.0.0.1", None) == normalize_network("10.0.0.1", None) == (4, 0x0A000001, 32)


# --- empty matcher, sizes, immutability -------------------------------------------


def test_empty_matcher_matches_nothing() -> None:
    m: PrefixMatcher[str] = PrefixMatcher.empty()
    for addr in ("0.0.0.0", "10.0.0.1", "::", "::1", "::ffff:1.2.3.4", "bad"):
        assert m.lookup(addr) == ()
        assert not m.contains(addr)
    assert len(m) == 0 and m.networks == 0
    assert m.prefix_lengths(4) == () and m.prefix_lengths(6) == ()


def test_build_of_nothing_is_empty() -> None:
    m: PrefixMatcher[str] = PrefixMatcher.build(iter(()))
    assert len(m) == 0 and not m.contains("10.0.0.1")


def test_sizes_and_prefix_lengths() -> None:
    m = PrefixMatcher.build(
        [("10.0.0.0", 8, 1), ("10.1.0.0", 16, 2), ("10.2.0.0", 16, 3), ("10.2.0.0", 16, 4), ("2001:db8::", 32, 5), ("::1", None, 6)]
    )
    assert len(m) == 6
    assert m.networks == 5
    assert m.prefix_lengths(4) == (8, 16)
    assert m.prefix_lengths(6) == (32, 128)
    with pytest.raises(ValueError):
        m.prefix_lengths(5)
    assert "entries=6" in repr(m)


def test_build_consumes_any_iterable_once() -> None:
    rows = (("10.0.%d.0" % i, 24, i) for i in range(10))
    m = PrefixMatcher.build(rows)
    assert m.lookup("10.0.7.9") == (7,)


def test_matcher_is_immutable() -> None:
    m = PrefixMatcher.build([("10.0.0.0", 8, "a")])
    with pytest.raises(AttributeError):
        m._v4 = ()
    with pytest.raises(AttributeError):
        del m._entries
    with pytest.raises(AttributeError):
        m.extra = 1


def test_copy_and_pickle_round_trip() -> None:
    m = PrefixMatcher.build([("10.0.0.0", 8, "a"), ("2001:db8::", 32, "b")])
    for clone in (copy.copy(m), copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert clone.lookup("10.1.1.1") == ("a",)
        assert clone.lookup("2001:db8::1") == ("b",)
        assert len(clone) == 2 and clone.networks == 2


def test_generic_subscription() -> None:
    assert PrefixMatcher[int].build([("10.0.0.0", 8, 1)]).lookup("10.9.9.9") == (1,)


# --- layering -------------------------------------------------------------------

_FORBIDDEN = {"asyncio", "socket", "sqlite3", "logging", "prometheus_client", "ipaddress"}


def test_acl_package_is_a_pure_layer() -> None:
    package = pathlib.Path(__file__).resolve().parents[2] / "sipgate" / "acl"
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top == "socket":
                    # inet_pton, imported lazily when a build first meets
                    # IPv6 text (netaddr, build-time too, imports socket
                    # anyway); test_layering checks it is never loaded by
                    # importing the pure layers.
                    assert path.name == "network.py", f"socket is build-time only, imported by {path.name}"
                    continue
                assert top not in _FORBIDDEN, f"{path.name} imports {name}"
                if top == "netaddr":
                    assert path.name == "network.py", f"netaddr is build-time only, imported by {path.name}"
