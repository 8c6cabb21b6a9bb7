"""The To-tag of sipgate's stateless responses.

A stateless UAS must give a request's retransmissions the same To-tag
(RFC 3261 §8.2.6.2), and sipgate must know the ACK of its own non-2xx
final response without keeping state (§17.1.1.3): the ACK repeats the
INVITE's Call-ID, From tag, top Via branch and CSeq number.  So the tag is
a keyed hash of those four: "sg" and the hex digest of the keyed BLAKE2b
(8-byte digest) of ``call_id NUL from_tag NUL branch NUL number`` under
:func:`hash_key` of ``[sip] secret`` (nodes answering for one address
share it).  Without the secret nobody can make an ACK that sipgate takes
for the ACK of its own response.

:func:`to_tag` is the C version from sipgate/sip/_tag.c in the compiled
build (sipgate.native decides), else hashlib's; they agree byte for byte
(tests/sip/test_tag.py).
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Callable

from sipgate import native

__all__ = ["hash_key", "to_tag"]


def hash_key(secret: bytes) -> bytes:
    """``secret`` as a BLAKE2b key (at most 64 bytes: longer ones are hashed)."""
    return secret if len(secret) <= 64 else blake2b(secret).digest()


def _to_tag(key: bytes, call_id: bytes, from_tag: bytes, branch: bytes, number: int | bytes) -> bytes:
    """b"sg" and 16 hex digits: the To-tag of a request with these fields
    (``number``, the CSeq number: an int in decimal, or bytes as they are)."""
    digits = number if isinstance(number, bytes) else str(number).encode()
    material = b"\0".join((call_id, from_tag, branch, digits))
    return b"sg" + blake2b(material, digest_size=8, key=key).hexdigest().encode()


to_tag: Callable[[bytes, bytes, bytes, bytes, "int | bytes"], bytes] = _to_tag
# keyed_hex(key, size, material): blake2b(material, digest_size=size,
# key=key).hexdigest().encode() in C (the Via branch of a relayed request,
# sipgate.sip.fast._keyed_hex), or None where hashlib does it.
keyed_hex: Callable[[bytes, int, bytes], bytes] | None = None
if native.status()[0]:
    try:
        from sipgate.sip._tag import to_tag  # type: ignore[no-redef,import-not-found]
    except ImportError:  # (a build from before the extension existed)
        to_tag = _to_tag
    try:
        from sipgate.sip._tag import keyed_hex  # type: ignore[no-redef,import-not-found]
    except ImportError:
        keyed_hex = None
