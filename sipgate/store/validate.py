"""Backend-neutral checks and normalisation of what the store is asked to keep.

Each check raises the ``InvalidParameter`` a Twilio error body needs, with
``param`` the Twilio form name.  Decisions taken here for every backend:

* IP addresses: IPv4 and IPv6 (Twilio accepts IPv4 only); parsed strictly
  (``inet_pton`` rules: no ``10.1``, no leading zeros, no zone id) and kept in
  compact canonical text (``2001:db8::1``).  An IPv4-mapped IPv6 address
  (``::ffff:192.0.2.1``) is stored unwrapped as IPv4, because the edge
  unwraps mapped packet sources before the lookup and a mapped entry would
  never match; its prefix length is read in the IPv6 space (``/120`` becomes
  ``/24``) and must be at least 96.
* A missing prefix length means one host (32 or 128).  Host bits under the
  prefix are kept as given; the entry's identity is its masked network.
* Trunk domain names: a host name (letters, digits, ``-``, dot-separated
  labels of at most 63, at most 253 in all, last label not all digits),
  stored lowercase; ``""`` or ``None`` means no domain.  Twilio's own
  ``pstn.twilio.com`` suffix is not required.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import netaddr

from sipgate.acl.address import parse_ipv4

from sipgate.store.model import (
    CODE_INVALID_DOMAIN,
    CODE_INVALID_FRIENDLY_NAME,
    CODE_INVALID_IP,
    CODE_INVALID_PARAMETER,
    InvalidParameter,
)

__all__ = [
    "IpEntry",
    "TRUNK_FIELDS",
    "account_sid",
    "domain_name",
    "friendly_name",
    "ip_entry",
    "new_sid",
    "new_sids",
    "page",
    "trunk_fields",
    "utcnow",
]

ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}\Z")
# RFC 1123 host name label; the whole name at most 253 characters.
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")

MAX_TRUNK_NAME = 64     # Twilio: "up to 64 characters long"
MAX_NAME = 255          # lists, addresses, accounts: "up to 255 characters long"
MAX_URL = 2048

_ENUMS: Mapping[str, tuple[str, ...]] = {
    "disaster_recovery_method": ("GET", "POST"),
    "recording_mode": ("do-not-record", "record-from-ringing", "record-from-answer",
                       "record-from-ringing-dual", "record-from-answer-dual"),
    "recording_trim": ("trim-silence", "do-not-trim"),
    "transfer_mode": ("disable-all", "enable-all", "sip-only"),
    "transfer_caller_id": ("from-transferee", "from-transferor"),
}
_BOOLS = ("secure", "cnam_lookup_enabled", "symmetric_rtp_enabled")

# Settable trunk field -> Twilio form parameter (Mode/Trim: the Recording resource).
TRUNK_FIELDS: Mapping[str, str] = {
    "friendly_name": "FriendlyName",
    "domain_name": "DomainName",
    "disaster_recovery_method": "DisasterRecoveryMethod",
    "disaster_recovery_url": "DisasterRecoveryUrl",
    "secure": "Secure",
    "recording_mode": "Mode",
    "recording_trim": "Trim",
    "transfer_mode": "TransferMode",
    "transfer_caller_id": "TransferCallerId",
    "cnam_lookup_enabled": "CnamLookupEnabled",
    "symmetric_rtp_enabled": "SymmetricRtpEnabled",
}


def utcnow() -> datetime:
    """The current time, UTC, whole seconds."""
    return datetime.now(timezone.utc).replace(microsecond=0)


def new_sid(prefix: str) -> str:
    """A fresh Twilio-style SID: two letters and 32 lowercase hex digits."""
    return prefix + os.urandom(16).hex()


def new_sids(prefix: str, count: int) -> list[str]:
    """``count`` fresh SIDs, in ascending order (a bulk load's: its rows
    then go into the SID index in order), from one read of the system's
    random source (one uuid4 per SID cost ~5 s of a million-entry seed)."""
    text = os.urandom(16 * count).hex()
    return sorted(prefix + text[i:i + 32] for i in range(0, 32 * count, 32))


def page(limit: int, offset: int) -> None:
    """Reject negative paging arguments (a programming error, not a client's)."""
    if limit < 0 or offset < 0:
        raise ValueError(f"limit and offset must be >= 0, got {limit}, {offset}")


def account_sid(sid: Any) -> str:
    """An account SID must be "AC" + 32 hex digits."""
    if not isinstance(sid, str) or not ACCOUNT_SID.match(sid):
        raise InvalidParameter(CODE_INVALID_PARAMETER, "AccountSid",
                               f"AccountSid must be AC followed by 32 hex digits, got {sid!r}")
    return sid


def friendly_name(value: Any, *, required: bool, max_len: int = MAX_NAME,
                  param: str = "FriendlyName") -> str:
    """A descriptive name: a string of at most ``max_len`` characters."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidParameter(CODE_INVALID_PARAMETER, param, f"{param} must be a string")
    if required and not value.strip():
        raise InvalidParameter(CODE_INVALID_PARAMETER, param, f"{param} is required")
    if len(value) > max_len:
        raise InvalidParameter(CODE_INVALID_FRIENDLY_NAME, param,
                               f"{param} must be at most {max_len} characters long")
    return value


def domain_name(value: Any) -> str | None:
    """A trunk's domain name, lowercase, or None for none."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidParameter(CODE_INVALID_DOMAIN, "DomainName", "DomainName must be a string")
    name = value.lower()
    labels = name.split(".")
    if (len(name) > 253 or not all(_LABEL.match(label) for label in labels)
            or labels[-1].isdigit()):
        raise InvalidParameter(CODE_INVALID_DOMAIN, "DomainName",
                               f"DomainName {value!r} is not a valid host name")
    return name


def _url(value: Any) -> str | None:
    if value is None or value == "":
        return None
    ok = isinstance(value, str) and len(value) <= MAX_URL and not any(c.isspace() for c in value)
    if ok:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.netloc)
    if not ok:
        raise InvalidParameter(CODE_INVALID_PARAMETER, "DisasterRecoveryUrl",
                               f"DisasterRecoveryUrl {value!r} is not an http(s) URL")
    return value


def trunk_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Check and normalise settable trunk fields; unknown names are a TypeError."""
    unknown = set(fields) - set(TRUNK_FIELDS)
    if unknown:
        raise TypeError(f"unknown trunk field(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for key, value in fields.items():
        param = TRUNK_FIELDS[key]
        if key == "friendly_name":
            out[key] = friendly_name(value, required=False, max_len=MAX_TRUNK_NAME)
        elif key == "domain_name":
            out[key] = domain_name(value)
        elif key == "disaster_recovery_url":
            out[key] = _url(value)
        elif key in _BOOLS:
            if not isinstance(value, bool):
                raise InvalidParameter(CODE_INVALID_PARAMETER, param, f"{param} must be true or false")
            out[key] = value
        else:
            allowed = _ENUMS[key]
            if key == "disaster_recovery_method" and isinstance(value, str):
                value = value.upper()
            if value not in allowed:
                raise InvalidParameter(CODE_INVALID_PARAMETER, param,
                                       f"{param} must be one of {', '.join(allowed)}, got {value!r}")
            out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class IpEntry:
    """A checked list entry: address text as stored, prefix, masked network."""

    address: str
    prefix: int
    network: str

    @property
    def version(self) -> int:
        """4 or 6."""
        return 6 if ":" in self.address else 4


_MASK32 = 0xFFFFFFFF


def parse_address(value: Any) -> netaddr.IPAddress:
    """Parse an IP address strictly; 21235 on anything else."""
    if value is None or value == "":
        raise InvalidParameter(CODE_INVALID_PARAMETER, "IpAddress", "IpAddress is required")
    if not isinstance(value, str):
        raise InvalidParameter(CODE_INVALID_IP, "IpAddress", "IpAddress must be a string")
    try:
        return netaddr.IPAddress(value.strip())
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise InvalidParameter(CODE_INVALID_IP, "IpAddress",
                               f"IpAddress {value!r} is not a valid IPv4 or IPv6 address") from None


def _prefix(value: Any, width: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= width:
        raise InvalidParameter(CODE_INVALID_IP, "CidrPrefixLength",
                               f"CidrPrefixLength must be an integer from 0 to {width}, got {value!r}")
    return value


def ip_entry(ip_address: Any, cidr_prefix_length: Any = None) -> IpEntry:
    """Check an address and prefix length (None: one host) into an IpEntry."""
    # The common case, a strict dotted quad (which is its own canonical
    # text), without netaddr: what _ip_entry gives for it, a few times
    # faster (validation was ~17 s of a million-entry seed).
    value = parse_ipv4(ip_address) if type(ip_address) is str else None
    if value is None:
        return _ip_entry(ip_address, cidr_prefix_length)
    prefix = 32 if cidr_prefix_length is None else _prefix(cidr_prefix_length, 32)
    net = value & ~(_MASK32 >> prefix)
    return IpEntry(ip_address, prefix, f"{net >> 24}.{net >> 16 & 255}.{net >> 8 & 255}.{net & 255}/{prefix}")


def _ip_entry(ip_address: Any, cidr_prefix_length: Any) -> IpEntry:
    """ip_entry through netaddr: every form and family (and the reference
    its dotted-quad shortcut is tested against)."""
    addr = parse_address(ip_address)
    width = 32 if addr.version == 4 else 128
    prefix = width if cidr_prefix_length is None else _prefix(cidr_prefix_length, width)
    if addr.version == 6 and addr.is_ipv4_mapped():
        if prefix < 96:
            raise InvalidParameter(CODE_INVALID_IP, "CidrPrefixLength",
                                   "an IPv4-mapped address needs a CidrPrefixLength of at least 96")
        addr, prefix = addr.ipv4(), prefix - 96
    network = netaddr.IPNetwork((int(addr), prefix), version=addr.version).cidr
    return IpEntry(str(addr), prefix, f"{network.network}/{prefix}")
