"""IP access control matching: address parsing, network normalisation, prefix matcher."""

from sipgate.acl.address import parse_address
from sipgate.acl.matcher import PrefixMatcher
from sipgate.acl.network import normalize_network

__all__ = ["PrefixMatcher", "normalize_network", "parse_address"]
