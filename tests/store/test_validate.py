"""What the seed's bulk load leans on in ``sipgate.store.validate``: the
dotted-quad shortcut of ``ip_entry`` against the netaddr path it skips
(``_ip_entry``), and SIDs made many at a time."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import examples
from sipgate.store import validate as v
from sipgate.store.model import InvalidParameter


def outcome(fn, address, prefix):
    try:
        return fn(address, prefix)
    except InvalidParameter as exc:
        return ("error", exc.code, exc.param, str(exc))


ADDRESSES = (st.ip_addresses(v=4).map(str)
             | st.text("0123456789.", max_size=16)
             | st.text("0123456789. \t\n:abcdefx٣", max_size=18)
             | st.sampled_from(["1.2.3.4", "01.2.3.4", "1.2.3", "256.0.0.0", " 10.0.0.1 ", "10.0.0.1\n",
                                "::ffff:10.0.0.1", "2001:db8::1", "0.0.0.0", "255.255.255.255", "1..2.3", ""])
             | st.sampled_from([None, 42, b"1.2.3.4", 1.5]))
PREFIXES = (st.none() | st.integers(-2, 130) | st.sampled_from(["24", " 24", "+24", "24.0", "", True, False, 24.0])
            | st.integers(0, 32).map(str))


@settings(max_examples=examples(3000), deadline=None)
@given(ADDRESSES, PREFIXES)
@example("10.1.2.3", 8)
@example("10.1.2.3", 0)
@example("10.1.2.3", 32)
@example("10.1.2.3", 33)
@example("255.255.255.255", 1)
@example("10.1.2.3", True)
def test_the_dotted_quad_shortcut_gives_what_netaddr_gives(address, prefix):
    assert outcome(v.ip_entry, address, prefix) == outcome(v._ip_entry, address, prefix)


def test_the_shortcut_masks_and_keeps_the_text():
    assert v.ip_entry("192.0.2.77", 24) == v.IpEntry("192.0.2.77", 24, "192.0.2.0/24")
    assert v.ip_entry("192.0.2.77", "0") == v.IpEntry("192.0.2.77", 0, "0.0.0.0/0")
    assert v.ip_entry("192.0.2.77") == v.IpEntry("192.0.2.77", 32, "192.0.2.77/32")
    with pytest.raises(InvalidParameter):
        v.ip_entry("192.0.2.077", 24)


def test_bulk_sids_are_fresh_sorted_and_well_formed():
    import re

    sids = v.new_sids("IP", 5000)
    assert len(sids) == len(set(sids)) == 5000 and sids == sorted(sids)
    assert all(re.fullmatch("IP[0-9a-f]{32}", sid) for sid in sids)
    assert set(sids).isdisjoint(v.new_sids("IP", 5000)) and v.new_sids("AL", 0) == []
    assert re.fullmatch("TK[0-9a-f]{32}", v.new_sid("TK"))
