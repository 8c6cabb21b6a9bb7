"""SIP messages for sipgate: parsing, building, stateless-proxy transforms (pure)."""

from sipgate.sip.build import build_response, derive_to_tag
from sipgate.sip.errors import SipParseError
from sipgate.sip.headers import COMPACT_FORMS, split_list
from sipgate.sip.limits import DEFAULT_LIMITS, SipLimits
from sipgate.sip.message import Request, Response, SipMessage, parse
from sipgate.sip.proxy import compute_branch, relay_request, relay_response
from sipgate.sip.uri import (
    NameAddr,
    SipUri,
    Via,
    format_host,
    parse_name_addr,
    parse_params,
    parse_uri,
    parse_via,
)

__all__ = [
    "COMPACT_FORMS",
    "DEFAULT_LIMITS",
    "NameAddr",
    "Request",
    "Response",
    "SipMessage",
    "SipLimits",
    "SipParseError",
    "SipUri",
    "Via",
    "build_response",
    "compute_branch",
    "derive_to_tag",
    "format_host",
    "parse",
    "parse_name_addr",
    "parse_params",
    "parse_uri",
    "parse_via",
    "relay_request",
    "relay_response",
    "split_list",
]
