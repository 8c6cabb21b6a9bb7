"""The one parse-error type of the SIP layer, carrying the status to answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sipgate.sip.message import Request

__all__ = ["REASONS", "SipParseError"]

# Reason phrases for the statuses this layer raises (RFC 3261 §21).
REASONS: dict[int, str] = {
    400: "Bad Request",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    416: "Unsupported URI Scheme",
    505: "Version Not Supported",
    513: "Message Too Large",
}


class SipParseError(Exception):
    """A message, or one of its fields, is malformed.

    ``status``/``reason`` are the response to answer with (400, 416, 505,
    513 ...), ``detail`` says what is wrong in words, and ``partial`` is the
    request as far as it could be split (start line and headers), so a
    caller can still build a response when Via, From, To, Call-ID and CSeq
    are present.  ``partial`` is None when the message could not be split at
    all, or is a response.  ``unanswerable`` marks an error that must not
    be answered even when ``partial`` could be built (too many Vias or
    header lines: the response would reflect them).
    """

    unanswerable = False

    def __init__(self, status: int, reason: str, detail: str, partial: Request | None = None) -> None:
        super().__init__(status, reason, detail)
        self.status = status
        self.reason = reason
        self.detail = detail
        self.partial = partial

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.detail}"

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.status, self.reason, self.detail, self.partial), self.__dict__)


def bad_request(detail: str, partial: Request | None = None) -> SipParseError:
    """A 400 Bad Request error (the common case)."""
    return SipParseError(400, "Bad Request", detail, partial)
