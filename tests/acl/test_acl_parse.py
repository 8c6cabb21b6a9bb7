"""Edge cases and properties of parse_address, checked against ipaddress."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sipgate.acl import parse_address


def reference(text: object) -> tuple[int, int] | None:
    """What parse_address must return, computed with the ipaddress module."""
    try:
        addr = ipaddress.ip_address(text)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        return None
    if not isinstance(text, str):
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return 4, int(addr.ipv4_mapped)
    return addr.version, int(addr)


# --- IPv4 ------------------------------------------------------------------


def test_ipv4_dotted_quad() -> None:
    assert parse_address("192.0.2.1") == (4, 0xC0000201)


def test_ipv4_bounds() -> None:
    assert parse_address("0.0.0.0") == (4, 0)
    assert parse_address("255.255.255.255") == (4, 0xFFFFFFFF)


@pytest.mark.parametrize(
    "text",
    ["", "1.2.3", "1.2.3.4.5", "1.2.3.256", "01.2.3.4", "1.2.3.00", "1.2.3.-1", "+1.2.3.4",
     " 1.2.3.4", "1.2.3.4 ", "1.2.3.4\n", "1..3.4", "1.2.3.", "0x1.2.3.4", "1.2.3.4/32",
     "1.2.3.4%eth0", "\u0661.2.3.4", "1_0.2.3.4", "1000.2.3.4", "10", "4294967295"],
)
def test_ipv4_invalid(text: str) -> None:
    assert parse_address(text) is None


# --- IPv6 ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("::", 0),
        ("::1", 1),
        ("1::", 1 << 112),
        ("2001:db8::1", 0x20010DB8000000000000000000000001),
        ("2001:DB8::1", 0x20010DB8000000000000000000000001),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", 0x20010DB8000000000000000000000001),
        ("1:2:3:4:5:6:7:8", 0x00010002000300040005000600070008),
        ("1:2:3:4:5:6:7::", 0x00010002000300040005000600070000),
        ("::2:3:4:5:6:7:8", 0x00000002000300040005000600070008),
        ("::1.2.3.4", 0x01020304),  # deprecated IPv4-compatible: stays IPv6
        ("64:ff9b::192.0.2.33", 0x0064FF9B0000000000000000C0000221),
    ],
)
def test_ipv6_forms(text: str, value: int) -> None:
    assert parse_address(text) == (6, value)


def test_ipv6_zone_id_stripped() -> None:
    assert parse_address("fe80::1%eth0") == (6, 0xFE800000000000000000000000000001)
    assert parse_address("fe80::1%25") == parse_address("fe80::1")


@pytest.mark.parametrize("text", ["fe80::1%", "fe80::1%a%b", "fe80::1%a/b", "fe80::1/64"])
def test_ipv6_bad_zone_or_prefix(text: str) -> None:
    assert parse_address(text) is None


@pytest.mark.parametrize(
    "text",
    [":", ":::", "1:2", "1::2::3", ":1::", "::1:", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7",
     "1:2:3:4:5:6:7:8::", "::1:2:3:4:5:6:7:8", "12345::", "g::", "::1.2.3", "::1.2.3.256",
     "::01.2.3.4", "1.2.3.4::", "a:1.2.3.4", "::1.2.3.4:5", "::ffff:1.2.3.4.5", " ::1", "::1 ",
     "::-1", "::+1", "::1_0", "::0x1", "\uff10::", "::\u0661"],
)
def test_ipv6_invalid(text: str) -> None:
    assert parse_address(text) is None


# --- IPv4-mapped -----------------------------------------------------------


def test_mapped_dotted_unwrapped() -> None:
    assert parse_address("::ffff:192.0.2.1") == (4, 0xC0000201)


def test_mapped_hex_unwrapped() -> None:
    assert parse_address("::ffff:102:304") == (4, 0x01020304)
    assert parse_address("::FFFF:C000:0201") == (4, 0xC0000201)
    assert parse_address("0:0:0:0:0:ffff:1.2.3.4") == (4, 0x01020304)


def test_mapped_with_zone_unwrapped() -> None:
    assert parse_address("::ffff:1.2.3.4%eth0") == (4, 0x01020304)


def test_near_mapped_stays_ipv6() -> None:
    assert parse_address("::fffe:1.2.3.4") == (6, 0xFFFE01020304)
    assert parse_address("1::ffff:1.2.3.4") == (6, (1 << 112) | 0xFFFF01020304)


# --- never raises ----------------------------------------------------------


@pytest.mark.parametrize("value", [None, b"1.2.3.4", 16909060, ["1.2.3.4"], object()])
def test_non_text_is_invalid(value: object) -> None:
    assert parse_address(value) is None  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------


def _hextet(value: int, draw: st.DrawFn) -> str:
    # Any valid spelling of one group: optional leading zeros, either case.
    width = draw(st.integers(min_value=len(f"{value:x}"), max_value=4))
    text = f"{value:0{width}x}"
    return text.upper() if draw(st.booleans()) else text


@st.composite
def ipv6_text(draw: st.DrawFn, value: int | None = None) -> str:
    """A random valid textual form of an IPv6 address."""
    if value is None:
        value = draw(
            st.one_of(
                st.integers(0, 2**128 - 1),
                st.integers(0, 2**32 - 1).map(lambda v: (0xFFFF << 32) | v),  # mapped
                st.integers(0, 2**32 - 1),  # compatible / low
                st.integers(0, 0xFFFF).map(lambda v: v << 112),  # mostly zeros
            )
        )
    groups = [(value >> (112 - 16 * i)) & 0xFFFF for i in range(8)]
    dotted = draw(st.booleans())
    n = 6 if dotted else 8
    words = [_hextet(g, draw) for g in groups[:n]]
    zero_runs = [(i, j) for i in range(n) for j in range(i + 1, n + 1) if all(g == 0 for g in groups[i:j])]
    if zero_runs and draw(st.booleans()):  # type: ignore[arg-type]  # mypy binds DrawFn's type once
        i, j = draw(st.sampled_from(zero_runs))
        words = words[:i] + [""] + words[j:]
        if i == 0:
            words.insert(0, "")
        if j == n and not dotted:
            words.append("")
    text = ":".join(words)
    if dotted:
        tail = str(ipaddress.IPv4Address(value & 0xFFFFFFFF))
        text = f"{text}:{tail}" if not text.endswith("::") else text + tail
        if text.startswith(":::"):
            text = text[1:]
    if draw(st.booleans()):
        text += "%" + draw(st.sampled_from(["eth0", "1", "en0.100", "x:y"]))
    return text


ipv4_text = st.integers(0, 2**32 - 1).map(lambda v: str(ipaddress.IPv4Address(v)))


@given(st.integers(0, 2**32 - 1))
def test_ipv4_agrees_with_ipaddress(value: int) -> None:
    addr = ipaddress.IPv4Address(value)
    assert parse_address(str(addr)) == (4, value)
    mapped = ipaddress.IPv6Address((0xFFFF << 32) | value)
    for text in (f"::ffff:{addr}", f"::FFFF:{addr}", mapped.compressed, mapped.exploded, mapped.exploded.upper()):
        assert parse_address(text) == (4, value), text


@given(st.integers(0, 2**128 - 1))
def test_ipv6_canonical_forms_agree(value: int) -> None:
    addr = ipaddress.IPv6Address(value)
    for text in (addr.compressed, addr.exploded, addr.compressed.upper(), addr.exploded.upper(), addr.compressed + "%eth0"):
        assert parse_address(text) == reference(text), text


@settings(max_examples=500)
@given(ipv6_text())
def test_ipv6_any_form_agrees(text: str) -> None:
    expected = reference(text)
    assert expected is not None, text  # the generator only makes valid text
    assert parse_address(text) == expected


_NEAR_ALPHABET = "0123456789abcdefABCDEFgx:.%/ _+-\u0661"


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """Valid address text with one character inserted, deleted or replaced."""
    text = draw(st.one_of(ipv4_text, ipv6_text()))
    pos = draw(st.integers(0, len(text)))
    op = draw(st.sampled_from(["insert", "delete", "replace"]))
    char = draw(st.sampled_from(_NEAR_ALPHABET))
    if op == "insert":
        return text[:pos] + char + text[pos:]
    if op == "delete":
        return text[:pos] + text[pos + 1 :]
    return text[:pos] + char + text[pos + 1 :]


@settings(max_examples=700)
@given(mutated())
@example("1:2:3:4:5:6:7::8")
@example("::ffff:1.2.3.4%")
def test_near_valid_text_agrees(text: str) -> None:
    assert parse_address(text) == reference(text)


@settings(max_examples=500)
@given(st.one_of(st.text(), st.text(alphabet=_NEAR_ALPHABET, max_size=45)))
def test_arbitrary_text_agrees_and_never_raises(text: str) -> None:
    assert parse_address(text) == reference(text)
