"""The matcher agrees with a linear scan over ipaddress networks."""

from __future__ import annotations

import ipaddress
from typing import Union

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from helpers import examples
from sipgate.acl import PrefixMatcher, normalize_network, parse_address

Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def ref_network(text: str, prefix: int | None) -> Network:
    """The network an entry denotes, with IPv4-mapped networks unwrapped."""
    net = ipaddress.ip_network(f"{text}/{prefix}" if prefix is not None else text, strict=False)
    if net.version == 6 and net.prefixlen >= 96 and net.subnet_of(MAPPED):
        return ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))
    return net


def ref_lookup(entries: list[tuple[Network, int]], probe: str) -> tuple[int, ...]:
    """Payloads of the most specific (network, payload) entries containing ``probe``: a plain scan."""
    try:
        addr = ipaddress.ip_address(probe)
    except ValueError:
        return ()
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    hits = [(net, p) for net, p in entries if net.version == addr.version and addr in net]
    if not hits:
        return ()
    best = max(net.prefixlen for net, _ in hits)
    return tuple(p for net, p in hits if net.prefixlen == best)


V4_LENGTHS = st.one_of(st.sampled_from([0, 1, 8, 16, 24, 31, 32]), st.integers(0, 32))
V6_LENGTHS = st.one_of(st.sampled_from([0, 1, 32, 48, 64, 96, 127, 128]), st.integers(0, 128))


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[tuple[str, int | None, int]], list[str]]:
    """Random overlapping networks (from a few shared bases) and nearby probes."""
    bases4 = draw(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=4))
    bases6 = draw(st.lists(st.integers(0, 2**128 - 1), min_size=1, max_size=4))
    entries: list[tuple[str, int | None, int]] = []
    nets: list[Network] = []
    for payload in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["v4", "v6", "mapped", "host4", "host6"]))
        if kind in ("v4", "host4", "mapped"):
            value = draw(st.sampled_from(bases4)) ^ draw(st.integers(0, 2**32 - 1).map(lambda x: x >> draw(st.integers(0, 32))))
            length: int | None = None if kind == "host4" else draw(V4_LENGTHS)
            text = str(ipaddress.IPv4Address(value))
            if kind == "mapped":
                text = f"::ffff:{text}"
                length = 96 + length  # type: ignore[operator]
        else:
            value = draw(st.sampled_from(bases6)) ^ draw(st.integers(0, 2**128 - 1).map(lambda x: x >> draw(st.integers(0, 128))))
            length = None if kind == "host6" else draw(V6_LENGTHS)
            text = ipaddress.IPv6Address(value).compressed
        entries.append((text, length, payload))
        nets.append(ref_network(text, length))
    probes: list[str] = []
    for net in nets:
        first, last = int(net.network_address), int(net.broadcast_address)
        top = 2**net.max_prefixlen - 1
        for v in (first, last, first - 1, last + 1):
            if 0 <= v <= top:
                probes.append(str(ipaddress.ip_address(v) if net.version == 6 else ipaddress.IPv4Address(v)))
                if net.version == 4:
                    probes.append(f"::ffff:{ipaddress.IPv4Address(v)}")
    probes += [str(ipaddress.IPv4Address(draw(st.integers(0, 2**32 - 1)))) for _ in range(3)]
    probes += [ipaddress.IPv6Address(draw(st.integers(0, 2**128 - 1))).exploded.upper() for _ in range(3)]
    return entries, probes


@settings(max_examples=examples(250), deadline=None)
@given(scenario())
def test_matcher_agrees_with_linear_scan(case: tuple[list[tuple[str, int | None, int]], list[str]]) -> None:
    entries, probes = case
    m = PrefixMatcher.build(entries)
    assert len(m) == len(entries)
    reference = [(ref_network(t, pl), p) for t, pl, p in entries]
    assert m.networks == len({net for net, _ in reference})
    for probe in probes:
        expected = ref_lookup(reference, probe)
        assert m.lookup(probe) == expected, probe
        assert m.contains(probe) is bool(expected), probe
        parsed = parse_address(probe)
        assert parsed is not None
        assert m.lookup_value(*parsed) == expected, probe
        assert m.contains_value(*parsed) is bool(expected), probe


@settings(max_examples=examples(300))
@given(
    st.one_of(
        st.tuples(st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v))), V4_LENGTHS),
        st.tuples(st.integers(0, 2**128 - 1).map(lambda v: str(ipaddress.IPv6Address(v))), V6_LENGTHS),
        st.tuples(st.integers(0, 2**32 - 1).map(lambda v: f"::ffff:{ipaddress.IPv4Address(v)}"), st.integers(96, 128)),
    )
)
def test_normalize_network_agrees_with_ipaddress(case: tuple[str, int]) -> None:
    text, prefix = case
    net = ref_network(text, prefix)
    assert normalize_network(text, prefix) == (net.version, int(net.network_address), net.prefixlen)


OCTET_SPELLINGS = st.one_of(st.integers(0, 255).map(str), st.sampled_from(["010", "00", "256", "-1", "+1", " 1", "1 ",
                                                                            "", "0x1", "\u0661", "1_0", "999"]))


@settings(max_examples=examples(500))
@given(st.lists(OCTET_SPELLINGS, min_size=3, max_size=5).map(".".join),
       st.one_of(st.none(), st.integers(-2, 34), st.booleans()))
def test_normalize_network_ipv4_fast_path_agrees_with_netaddr(text: str, prefix) -> None:
    """Dotted quads skip netaddr; every spelling must get netaddr's answer (or its error)."""
    import netaddr

    try:
        address = netaddr.IPAddress(text, flags=netaddr.INET_PTON)
        if address.version != 4 or isinstance(prefix, bool) or (prefix is not None and not 0 <= prefix <= 32):
            raise ValueError("reference rejects")
        length = 32 if prefix is None else prefix
        expected = (4, int(address) >> (32 - length) << (32 - length), length)
    except (netaddr.AddrFormatError, ValueError):
        with pytest.raises(ValueError):
            normalize_network(text, prefix)
        return
    assert normalize_network(text, prefix) == expected


GROUP = st.one_of(st.integers(0, 0xFFFF).map(lambda v: format(v, "x")), st.sampled_from(["0000", "00000", "g", "", "FFFF",
                                                                                      "1.2.3.4", "01.2.3.4", "-1"]))


@settings(max_examples=examples(800))
@given(st.lists(GROUP, min_size=1, max_size=9), st.integers(0, 9), st.booleans(),
       st.one_of(st.none(), st.integers(-1, 130)))
def test_normalize_network_ipv6_fast_path_agrees_with_netaddr(groups, gap, compress, prefix) -> None:
    """IPv6 spellings (compressed or not, embedded IPv4, junk) skip netaddr when
    parse_ipv6 takes them; the answer must be netaddr's (or its error)."""
    import netaddr

    if compress:
        text = ":".join(groups[:gap]) + "::" + ":".join(groups[gap:])
    else:
        text = ":".join(groups)
    assume(":" in text)  # (a lone group is the IPv4 test's business)
    try:
        address = netaddr.IPAddress(text, flags=netaddr.INET_PTON)
        if address.version != 6 or (prefix is not None and not 0 <= prefix <= 128):
            raise ValueError("reference rejects")
        length = 128 if prefix is None else prefix
        value = int(address) >> (128 - length) << (128 - length)
        if length >= 96 and value >> 32 == 0xFFFF:
            expected = (4, value & 0xFFFFFFFF, length - 96)
        else:
            expected = (6, value, length)
    except (netaddr.AddrFormatError, ValueError):
        with pytest.raises(ValueError):
            normalize_network(text, prefix)
        return
    assert normalize_network(text, prefix) == expected
