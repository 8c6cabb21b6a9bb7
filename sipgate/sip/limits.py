"""Size limits on a received SIP message, shared by the parser and the fast path."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_LIMITS", "SipLimits"]


@dataclass(frozen=True, slots=True)
class SipLimits:
    """What a message may hold before sipgate refuses it, and how.

    - ``max_headers``: header lines (physical lines, before unfolding) ->
      513 Message Too Large;
    - ``max_header_line``: bytes in one header line (or the whole start
      line; a folded header counts its lines together) -> 513 Message Too
      Large;
    - ``max_uri``: bytes in the Request-URI -> 414 Request-URI Too Long
      (RFC 3261 §21.4.12);
    - ``max_vias``: Via header field values (default 70, the hop count a
      Max-Forwards of 70 allows; RFC 4475's valid longreq carries 34) ->
      dropped, never answered:
      a response must copy every Via (§8.2.6.2), so answering would
      reflect the whole list to a source address nobody has verified.

    Each status is answered only when a response can be built (Via, From,
    To, Call-ID and CSeq present, within these limits); otherwise the
    message is dropped.  The datagram size limit is ``sip.max_datagram``
    (513 too).  The fast path declines anything over a limit, so the full
    parser alone decides those.
    """

    max_headers: int = 256
    max_vias: int = 70
    max_header_line: int = 8192
    max_uri: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_headers", "max_vias", "max_header_line", "max_uri"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")


DEFAULT_LIMITS = SipLimits()
