"""The To-tag's keyed hash (sipgate.sip.tag): SipHash-2-4 against its
published test vectors, and the C version (sipgate/sip/_tag.c, the compiled
build's) against the Python one, byte for byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipgate import native
from sipgate.sip import derive_to_tag, parse
from sipgate.sip import tag as tags
from sipgate.sip.fast import OWN_TAG_LENGTH, scan, to_tag_for

KEY = bytes(range(16))

# The SipHash paper's vectors (key 00..0f, message 00 01 .. len-1), as the
# 64-bit result.
VECTORS = {0: 0x726FDB47DD0E0E31, 1: 0x74F839C593DC67FD, 2: 0x0D6C8009D9A94F5A, 3: 0x85676696D7FB7E2D,
           15: 0xA129CA6149BE45E5}


@pytest.mark.parametrize("length", sorted(VECTORS))
def test_siphash24_gives_the_published_vectors(length):
    assert tags.siphash24(KEY, bytes(range(length))) == VECTORS[length]


def test_the_tag_is_sg_and_the_hash_of_the_fields_in_hex():
    expected = tags.siphash24(KEY, b"call-1@host\0ft\0z9hG4bK-7\0" + b"42")
    for make in {tags.to_tag, tags._to_tag}:
        tag = make(KEY, b"call-1@host", b"ft", b"z9hG4bK-7", 42)
        assert tag == b"sg%016x" % expected and len(tag) == OWN_TAG_LENGTH
        assert make(KEY, b"call-1@host", b"ft", b"z9hG4bK-7", b"42") == tag  # (the number as text)
        assert make(KEY, b"call-1@host", b"ft", b"z9hG4bK-7", 43) != tag


def test_the_build_in_use_has_the_c_version_exactly_when_compiled():
    assert (tags.to_tag is not tags._to_tag) == native.status()[0]


FIELD = st.binary(max_size=700)  # (past the C version's 512-byte stack buffer)


@given(st.binary(min_size=16, max_size=16), FIELD, FIELD, FIELD,
       st.one_of(st.integers(0, 2**64 - 1), st.binary(max_size=30)))
def test_the_c_version_agrees_with_the_python_one(key, call_id, from_tag, branch, number):
    if tags.to_tag is tags._to_tag:
        pytest.skip("not compiled: " + native.status()[1])
    assert tags.to_tag(key, call_id, from_tag, branch, number) == tags._to_tag(key, call_id, from_tag, branch, number)


@pytest.mark.parametrize("make", [tags.to_tag, tags._to_tag])
def test_bad_arguments_are_refused(make):
    with pytest.raises(ValueError):
        make(b"short", b"c", b"f", b"b", 1)
    if make is not tags._to_tag:
        with pytest.raises(TypeError):
            make(KEY, "c", b"f", b"b", 1)
        with pytest.raises(TypeError):
            make(KEY, b"c", b"f", b"b", 1.5)
        with pytest.raises(OverflowError):
            make(KEY, b"c", b"f", b"b", -1)
        with pytest.raises(TypeError):
            make(KEY, b"c", b"f", b"b")


def test_the_key_depends_on_the_secret_only():
    assert tags.tag_key(b"s1") == tags.tag_key(b"s1") and len(tags.tag_key(b"s1")) == 16
    assert tags.tag_key(b"s1") != tags.tag_key(b"s2")


INVITE = (b"INVITE sip:+15550001@t.example SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 192.0.2.7:5062;branch=z9hG4bK-77;rport\r\n"
          b"From: <sip:a@192.0.2.7>;tag=from-1\r\nTo: <sip:+15550001@t.example>\r\n"
          b"Call-ID: c-1@192.0.2.7\r\nCSeq: 0007 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")


def test_fast_and_full_paths_give_one_tag_and_its_ack_the_same():
    key = tags.tag_key(b"secret")
    fast = to_tag_for(scan(INVITE), key)
    assert fast.decode() == derive_to_tag(parse(INVITE), b"secret")
    ack = INVITE.replace(b"INVITE sip", b"ACK sip").replace(b"0007 INVITE", b"7 ACK")
    assert to_tag_for(scan(ack), key) == fast  # (the CSeq number, not its text)
    other = INVITE.replace(b"branch=z9hG4bK-77", b"branch=z9hG4bK-78")
    assert to_tag_for(scan(other), key) != fast
    assert derive_to_tag(parse(INVITE), b"other secret") != fast.decode()
