"""The To-tag of sipgate's stateless responses.

A stateless UAS must give a request's retransmissions the same To-tag
(RFC 3261 §8.2.6.2), and sipgate must know the ACK of its own non-2xx
final response without keeping state (§17.1.1.3): the ACK repeats the
INVITE's Call-ID, From tag, top Via branch and CSeq number.  So the tag is
a keyed hash of those four: "sg" and the 16 hex digits of the SipHash-2-4
of ``call_id NUL from_tag NUL branch NUL number`` under a 16-byte key
derived from ``[sip] secret`` (nodes answering for one address share it).
SipHash is a pseudorandom function made for short inputs: without the
secret nobody can make an ACK that sipgate takes for the ACK of its own
response.

:func:`to_tag` is the C version from sipgate/sip/_tag.c in the compiled
build (sipgate.native decides), else the Python one below; they agree byte
for byte (tests/sip/test_tag.py).
"""

from __future__ import annotations

from functools import lru_cache
from hashlib import blake2b
from typing import Callable

from sipgate import native

__all__ = ["siphash24", "tag_key", "to_tag"]

_MASK = (1 << 64) - 1


@lru_cache(maxsize=8)
def tag_key(secret: bytes) -> bytes:
    """The 16-byte SipHash key of the To-tag, from ``[sip] secret``."""
    return blake2b(secret, digest_size=16, person=b"sipgate to-tag").digest()


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 of ``data`` under the 16-byte ``key``, as an int."""
    k0 = int.from_bytes(key[:8], "little")
    k1 = int.from_bytes(key[8:16], "little")
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def rounds(n: int) -> None:
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _MASK
            v1 = ((v1 << 13 | v1 >> 51) & _MASK) ^ v0
            v0 = (v0 << 32 | v0 >> 32) & _MASK
            v2 = (v2 + v3) & _MASK
            v3 = ((v3 << 16 | v3 >> 48) & _MASK) ^ v2
            v0 = (v0 + v3) & _MASK
            v3 = ((v3 << 21 | v3 >> 43) & _MASK) ^ v0
            v2 = (v2 + v1) & _MASK
            v1 = ((v1 << 17 | v1 >> 47) & _MASK) ^ v2
            v2 = (v2 << 32 | v2 >> 32) & _MASK

    whole = len(data) - len(data) % 8
    blocks = [int.from_bytes(data[i:i + 8], "little") for i in range(0, whole, 8)]
    blocks.append(int.from_bytes(data[whole:], "little") | (len(data) & 0xFF) << 56)
    for m in blocks:
        v3 ^= m
        rounds(2)
        v0 ^= m
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


def _to_tag(key: bytes, call_id: bytes, from_tag: bytes, branch: bytes, number: int | bytes) -> bytes:
    """b"sg" and 16 hex digits: the To-tag of a request with these fields
    (``number``, the CSeq number: an int in decimal, or bytes as they are)."""
    if len(key) != 16:
        raise ValueError("to_tag(): the key must be 16 bytes")
    digits = number if isinstance(number, bytes) else str(number).encode()
    return b"sg" + b"%016x" % siphash24(key, b"\0".join((call_id, from_tag, branch, digits)))


to_tag: Callable[[bytes, bytes, bytes, bytes, "int | bytes"], bytes] = _to_tag
if native.status()[0]:
    try:
        from sipgate.sip._tag import to_tag  # type: ignore[no-redef]
    except ImportError:  # (a build from before the extension existed)
        to_tag = _to_tag
