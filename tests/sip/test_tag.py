"""The To-tag's keyed hash (sipgate.sip.tag): the C version
(sipgate/sip/_tag.c, the compiled build's BLAKE2b) against hashlib's,
byte for byte, across the block boundaries, and the fast path against the
full one."""

from __future__ import annotations

from hashlib import blake2b

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipgate import native
from sipgate.sip import derive_to_tag, parse
from sipgate.sip import tag as tags
from sipgate.sip.fast import OWN_TAG_LENGTH, scan, to_tag_for

MAKERS = [tags._to_tag] + ([tags.to_tag] if tags.to_tag is not tags._to_tag else [])


def reference(key: bytes, call_id: bytes, from_tag: bytes, branch: bytes, number: bytes) -> bytes:
    material = call_id + b"\0" + from_tag + b"\0" + branch + b"\0" + number
    return b"sg" + blake2b(material, digest_size=8, key=key).hexdigest().encode()


def test_the_build_in_use_has_the_c_version_exactly_when_compiled():
    assert (tags.to_tag is not tags._to_tag) == native.status()[0]


@pytest.mark.parametrize("make", MAKERS)
@pytest.mark.parametrize("key_length", [0, 1, 32, 64])
@pytest.mark.parametrize("material_length", [3, 4, 127, 128, 129, 255, 256, 257, 600])
def test_the_tag_is_keyed_blake2b_across_block_boundaries(make, key_length, material_length):
    """BLAKE2b works in 128-byte blocks, the key being one of its own:
    lengths on either side of each boundary, the NULs included."""
    key = bytes(range(7, 7 + key_length))
    call_id = bytes((i * 31 + 5) % 256 for i in range(material_length - 3))
    tag = make(key, call_id, b"", b"", b"")
    assert tag == reference(key, call_id, b"", b"", b"") and len(tag) == OWN_TAG_LENGTH


@pytest.mark.parametrize("make", MAKERS)
def test_the_number_is_written_in_decimal(make):
    key = b"k" * 32
    tag = make(key, b"call-1@host", b"ft", b"z9hG4bK-7", 42)
    assert tag == make(key, b"call-1@host", b"ft", b"z9hG4bK-7", b"42")
    assert tag == reference(key, b"call-1@host", b"ft", b"z9hG4bK-7", b"42")
    assert make(key, b"call-1@host", b"ft", b"z9hG4bK-7", 2**64 - 1) == \
        reference(key, b"call-1@host", b"ft", b"z9hG4bK-7", b"18446744073709551615")
    assert make(key, b"call-1@host", b"ft", b"z9hG4bK-7", 43) != tag


FIELD = st.binary(max_size=700)  # (past the C version's 512-byte stack buffer)


@given(st.binary(max_size=64), FIELD, FIELD, FIELD, st.one_of(st.integers(0, 2**64 - 1), st.binary(max_size=30)))
def test_every_version_agrees_with_hashlib(key, call_id, from_tag, branch, number):
    digits = number if isinstance(number, bytes) else str(number).encode()
    for make in MAKERS:
        assert make(key, call_id, from_tag, branch, number) == reference(key, call_id, from_tag, branch, digits)


@pytest.mark.parametrize("make", MAKERS)
def test_bad_arguments_are_refused(make):
    with pytest.raises(ValueError):
        make(b"k" * 65, b"c", b"f", b"b", 1)
    if make is not tags._to_tag:
        with pytest.raises(TypeError):
            make(b"k", "c", b"f", b"b", 1)
        with pytest.raises(TypeError):
            make(b"k", b"c", b"f", b"b", 1.5)
        with pytest.raises(OverflowError):
            make(b"k", b"c", b"f", b"b", -1)
        with pytest.raises(TypeError):
            make(b"k", b"c", b"f", b"b")


def test_long_secrets_are_hashed_to_a_key():
    assert tags.hash_key(b"s" * 64) == b"s" * 64
    assert tags.hash_key(b"s" * 65) == blake2b(b"s" * 65).digest()


INVITE = (b"INVITE sip:+15550001@t.example SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK-77;rport\r\n"
          b"From: <sip:a@192.0.2.7>;tag=from-1\r\nTo: <sip:+15550001@t.example>\r\n"
          b"Call-ID: c-1@192.0.2.7\r\nCSeq: 0007 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def test_fast_and_full_paths_give_one_tag_and_its_ack_the_same():
    key = tags.hash_key(b"secret")
    fast = to_tag_for(scan(INVITE), key)
    assert fast.decode() == derive_to_tag(parse(INVITE), b"secret")
    assert fast == reference(key, b"c-1@192.0.2.7", b"from-1", b"z9hG4bK-77", b"7")
    ack = INVITE.replace(b"INVITE sip", b"ACK sip").replace(b"0007 INVITE", b"7 ACK")
    assert to_tag_for(scan(ack), key) == fast  # (the CSeq number, not its text)
    other = INVITE.replace(b"branch=z9hG4bK-77", b"branch=z9hG4bK-78")
    assert to_tag_for(scan(other), key) != fast
    assert derive_to_tag(parse(INVITE), b"other secret") != fast.decode()


@pytest.mark.skipif(tags.keyed_hex is None, reason="sipgate/sip/_tag.c is not built (pure Python: hashlib)")
@pytest.mark.parametrize("size", [1, 8, 12, 32, 64])
@pytest.mark.parametrize("key_length", [0, 1, 32, 64])
@pytest.mark.parametrize("material_length", [0, 1, 127, 128, 129, 256, 300])
def test_the_c_branch_hash_is_hashlibs_blake2b(size, key_length, material_length):
    """The Via branch's keyed hash (fast._keyed_hex) in C: hashlib's
    BLAKE2b hex digest at each digest size the branch and tag use and
    around the block boundaries."""
    key = bytes(range(3, 3 + key_length))
    material = bytes((i * 7 + 1) % 256 for i in range(material_length))
    expected = blake2b(material, digest_size=size, key=key).hexdigest().encode()
    assert tags.keyed_hex(key, size, material) == expected


@pytest.mark.skipif(tags.keyed_hex is None, reason="sipgate/sip/_tag.c is not built (pure Python: hashlib)")
def test_the_c_branch_hash_refuses_what_blake2b_cannot_take():
    for args in ((b"k", 0, b"m"), (b"k", 65, b"m"), (b"k" * 65, 12, b"m")):
        with pytest.raises(ValueError):
            tags.keyed_hex(*args)
    with pytest.raises(TypeError):
        tags.keyed_hex("k", 12, b"m")


def test_the_build_in_use_has_the_c_branch_hash_exactly_when_compiled():
    assert (tags.keyed_hex is not None) == native.status()[0]


# Keys that share bytes: the same key one byte shorter, or its last byte changed.
KEYS = [b"k" * 32, b"k" * 31, b"k" * 31 + b"j", b"", bytes(64)]


@pytest.mark.skipif(tags.keyed_hex is None, reason="sipgate/sip/_tag.c is not built (pure Python: hashlib)")
@given(st.lists(st.tuples(st.sampled_from(KEYS), st.sampled_from(["tag", 1, 8, 12, 64]), st.binary(max_size=300)),
                min_size=1, max_size=12))
def test_tags_and_branches_under_changing_keys_stay_hashlibs(calls):
    """The C version keeps the state after the key block of the last key
    and digest size: calls that switch key (by one byte, or its length),
    digest size, or between a tag and a branch, in any order, each give
    hashlib's digest."""
    for key, size, material in calls:
        if size == "tag":
            assert tags.to_tag(key, material, b"", b"", b"") == reference(key, material, b"", b"", b"")
        else:
            assert tags.keyed_hex(key, size, material) == \
                blake2b(material, digest_size=size, key=key).hexdigest().encode()
