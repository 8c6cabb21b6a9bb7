"""The store's values and errors: frozen dataclasses shared by every backend."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

__all__ = [
    "AclEntry",
    "Delta",
    "Account",
    "CODE_ACL_ALREADY_ASSOCIATED",
    "CODE_DOMAIN_TAKEN",
    "CODE_INVALID_DOMAIN",
    "CODE_INVALID_FRIENDLY_NAME",
    "CODE_INVALID_IP",
    "CODE_INVALID_PARAMETER",
    "CODE_LISTS_PER_ACCOUNT",
    "CODE_IPS_PER_LIST",
    "Conflict",
    "InvalidParameter",
    "IpAccessControlList",
    "IpAddress",
    "LimitExceeded",
    "list_full",
    "NotFound",
    "Snapshot",
    "StoreError",
    "TRUNK_DEFAULTS",
    "Trunk",
    "TrunkAcl",
    "TrunkRules",
    "Unavailable",
]

# Twilio error codes the store raises.  21235, 21245 and 21248 are Twilio's
# own; the others are sipgate's choice where the spec names none.
CODE_INVALID_PARAMETER = 20001      # a required parameter missing, or a value out of its enum/type
CODE_INVALID_FRIENDLY_NAME = 20002  # FriendlyName too long
CODE_INVALID_IP = 21235             # bad IpAddress / CidrPrefixLength, or the network already in the list
CODE_ACL_ALREADY_ASSOCIATED = 21245  # the list is already associated with the trunk
CODE_INVALID_DOMAIN = 21247         # DomainName is not a host name (sipgate's choice)
CODE_DOMAIN_TAKEN = 21248           # DomainName already used by another trunk
CODE_IPS_PER_LIST = 21239           # max_ips_per_list reached (sipgate's choice)
CODE_LISTS_PER_ACCOUNT = 21240      # max_lists_per_account reached (sipgate's choice)


@dataclass(frozen=True, slots=True)
class Account:
    """An account (tenant): every other object belongs to exactly one."""

    sid: str
    friendly_name: str
    date_created: datetime
    date_updated: datetime


@dataclass(frozen=True, slots=True)
class Trunk:
    """An Elastic SIP trunk; ``domain_name`` is its termination host, lowercase.

    ``auth_type`` is derived as Twilio does: ``"IP_ACL"`` while at least one
    IP access control list is associated, else ``""``.
    """

    sid: str
    account_sid: str
    friendly_name: str
    domain_name: str | None
    disaster_recovery_method: str
    disaster_recovery_url: str | None
    secure: bool
    recording_mode: str
    recording_trim: str
    transfer_mode: str
    transfer_caller_id: str
    cnam_lookup_enabled: bool
    auth_type: str
    symmetric_rtp_enabled: bool
    date_created: datetime
    date_updated: datetime


# Twilio's defaults for a new trunk (trunking v1 spec and Recording resource).
TRUNK_DEFAULTS: Mapping[str, object] = MappingProxyType({
    "friendly_name": "",
    "domain_name": None,
    "disaster_recovery_method": "POST",
    "disaster_recovery_url": None,
    "secure": False,
    "recording_mode": "do-not-record",
    "recording_trim": "do-not-trim",
    "transfer_mode": "disable-all",
    "transfer_caller_id": "from-transferee",
    "cnam_lookup_enabled": False,
    "symmetric_rtp_enabled": False,
})


@dataclass(frozen=True, slots=True)
class IpAccessControlList:
    """A named list of IP addresses/networks owned by an account."""

    sid: str
    account_sid: str
    friendly_name: str
    date_created: datetime
    date_updated: datetime


@dataclass(frozen=True, slots=True)
class IpAddress:
    """One entry of a list: ``ip_address`` as stored, matched as its network.

    The address may have host bits set under ``cidr_prefix_length``
    (``10.0.0.5/24``); it is kept as given and matches ``10.0.0.0/24``.
    """

    sid: str
    account_sid: str
    ip_access_control_list_sid: str
    friendly_name: str
    ip_address: str
    cidr_prefix_length: int
    date_created: datetime
    date_updated: datetime


@dataclass(frozen=True, slots=True)
class TrunkAcl:
    """The association of a list with a trunk (``friendly_name`` is the list's)."""

    account_sid: str
    trunk_sid: str
    acl_sid: str
    friendly_name: str
    date_created: datetime
    date_updated: datetime

    @property
    def sid(self) -> str:
        """Twilio's v1 resource names the association by the list's SID."""
        return self.acl_sid


@dataclass(frozen=True, slots=True)
class AclEntry:
    """A list entry as the table compiler needs it."""

    ip_sid: str
    ip_address: str
    cidr_prefix_length: int


@dataclass(frozen=True, slots=True)
class TrunkRules:
    """A trunk as the table compiler needs it: its lists in association order."""

    sid: str
    account_sid: str
    domain_name: str | None
    acl_sids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything the edge enforces, read in one consistent transaction.

    ``acls`` and ``acl_names`` cover every list, associated or not.
    """

    revision: int
    trunks: tuple[TrunkRules, ...]
    acls: Mapping[str, tuple[AclEntry, ...]]
    acl_names: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Delta:
    """What changed after a revision, for patching the compiled table.

    ``changes`` are (op, list SID, other SID, address, prefix) in commit
    order.  Ops: "+"/"-" a list entry added/removed (other = IP address
    SID); "A"/"D" a list associated with / dissociated from a trunk (other
    = trunk SID); "N" a list renamed; "T" a trunk created or its domain
    name changed (other = trunk SID); "R" a trunk deleted, after a "D" for
    each of its lists; "." a write that changes nothing the edge compiles.
    Deleting a list logs a "D" per association and a "-" per entry.

    ``lists`` gives, for every list named by an "A", "D" or "N" change, its
    current name (None once deleted) and, if an "A" or "D" names it, its
    current entries; ``trunks`` gives,
    for every trunk named by a "T" or "R" change, its current account and
    domain name (None once deleted).  Both are read in the same
    transaction as the changes.
    """

    revision: int
    changes: tuple[tuple[str, str | None, str | None, str | None, int | None], ...]
    lists: Mapping[str, tuple[str | None, tuple[AclEntry, ...]]]
    trunks: Mapping[str, tuple[str, str | None] | None]


class StoreError(Exception):
    """Base of every error the store raises on purpose."""


class NotFound(StoreError):
    """No such object in this account (Twilio 20404)."""

    def __init__(self, resource: str, sid: str) -> None:
        super().__init__(f"{resource} {sid} not found")
        self.resource = resource
        self.sid = sid


class _ParamError(StoreError):
    """An error about one request parameter, with its Twilio code."""

    def __init__(self, code: int, param: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.param = param
        self.message = message


class InvalidParameter(_ParamError):
    """A parameter is missing or invalid (HTTP 400); ``param`` is the Twilio form name."""


class Conflict(_ParamError):
    """The write conflicts with an existing object (HTTP 409 or 400)."""


class LimitExceeded(_ParamError):
    """A configured limit (entries per list, lists per account) is reached."""


def list_full(limit: int) -> LimitExceeded:
    """The error for an address added to a list that has ``limit`` entries
    (store.max_ips_per_list): the API's and the seed's."""
    return LimitExceeded(CODE_IPS_PER_LIST, "IpAddress", f"the list already has the maximum of {limit} entries")


class Unavailable(StoreError):
    """The store cannot be reached or written: locked, read-only, full, closed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message
