"""The trunk rule: which requests are admitted, as values, never exceptions.

*If an INVITE is received for a Trunk, the source IP address must be in one
of the lists for the INVITE to be accepted.*  The trunk is the one whose
domain name equals the Request-URI host; only the packet source address
decides, never a header.  This module is pure: no sockets, no clocks, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from sipgate.acl import PrefixMatcher, parse_address
from sipgate.sip import Request, SipParseError, derive_to_tag, parse_name_addr, parse_uri

__all__ = [
    "Admit",
    "AdmissionTable",
    "Answer",
    "Context",
    "Decision",
    "Drop",
    "Explanation",
    "Match",
    "Reject",
    "TrunkEntry",
    "TrunkSource",
    "decide",
    "explain",
]

# The URI parameter carrying the trunk SID in the Record-Route sipgate
# inserts, so in-dialog requests can be checked without dialog state.
TRUNK_PARAM = "sgt"

WARN_FORBIDDEN = '399 sipgate "source address not in any IP access control list of the trunk"'
WARN_NO_LIST = '399 sipgate "the trunk has no IP access control list"'
WARN_NO_TRUNK = '399 sipgate "no trunk with this domain name"'
WARN_DIALOG_TRUNK = '399 sipgate "the trunk of this dialog no longer exists"'
WARN_HOPS = '399 sipgate "Max-Forwards exhausted"'


@dataclass(frozen=True, slots=True)
class Match:
    """One IP access control entry, the payload the matcher returns."""

    acl_sid: str
    acl_name: str
    ip_sid: str
    network: str  # "address/prefix" as stored


@dataclass(frozen=True, slots=True)
class TrunkEntry:
    """A trunk as the edge sees it: identity plus the union of its lists."""

    sid: str
    account_sid: str
    domain_name: str | None
    acl_sids: tuple[str, ...]
    matcher: PrefixMatcher[Match]


@dataclass(frozen=True, slots=True)
class TrunkSource:
    """Input to the table compiler: one trunk with its lists' entries.

    ``acls`` is a sequence of (list SID, list name, entries) with entries as
    (IP address SID, address text, prefix length or None).
    """

    sid: str
    account_sid: str
    domain_name: str | None
    acls: tuple[tuple[str, str, tuple[tuple[str, str, int | None], ...]], ...]


@dataclass(frozen=True, slots=True)
class AdmissionTable:
    """The compiled, immutable admission table.

    Built aside and swapped in as one reference, so a datagram is judged
    wholly by one table.
    """

    generation: int
    by_domain: dict[str, TrunkEntry]
    by_sid: dict[str, TrunkEntry]
    # Union of every trunk's lists: "admitted by any trunk" (keepalives).
    any_trunk: PrefixMatcher[Match]
    entries: int
    # List SID -> name, for every list some trunk uses (for apply_changes).
    acl_names: dict[str, str] = field(default_factory=dict)

    @classmethod
    def empty(cls) -> AdmissionTable:
        """A table that admits nothing (before the first compile)."""
        return cls(0, {}, {}, PrefixMatcher.empty(), 0)

    @classmethod
    def compile(cls, generation: int, trunks: Iterable[TrunkSource]) -> AdmissionTable:
        """Compile trunks and their lists; raises ValueError on a bad entry."""
        by_domain: dict[str, TrunkEntry] = {}
        by_sid: dict[str, TrunkEntry] = {}
        union: list[tuple[str, int | None, Match]] = []
        entries = 0
        seen_acls: set[str] = set()
        trunks_seen = []
        for trunk in trunks:
            trunks_seen.append(trunk)
            rows: list[tuple[str, int | None, Match]] = []
            for acl_sid, acl_name, addresses in trunk.acls:
                acl_rows = [
                    (address, prefix, Match(acl_sid, acl_name, ip_sid, _network_text(address, prefix)))
                    for ip_sid, address, prefix in addresses
                ]
                rows.extend(acl_rows)
                if acl_sid not in seen_acls:
                    # A list shared by several trunks enters the union once.
                    seen_acls.add(acl_sid)
                    union.extend(acl_rows)
                    entries += len(acl_rows)
            entry = TrunkEntry(
                sid=trunk.sid,
                account_sid=trunk.account_sid,
                domain_name=trunk.domain_name.lower() if trunk.domain_name else None,
                acl_sids=tuple(a[0] for a in trunk.acls),
                matcher=PrefixMatcher.build(rows),
            )
            by_sid[entry.sid] = entry
            if entry.domain_name:
                by_domain[entry.domain_name] = entry
        names = {acl_sid: acl_name for t in trunks_seen for acl_sid, acl_name, _ in t.acls}
        return cls(generation, by_domain, by_sid, PrefixMatcher.build(union), entries, names)

    def apply_changes(self, generation: int, changes: Iterable[tuple[str, str, str, str, int | None]],
                      lists: Mapping[str, tuple[str, tuple[tuple[str, str, int | None], ...]]] | None = None,
                      ) -> AdmissionTable:
        """A new table with the store's changes applied, touching only what they affect.

        ``changes`` are (op, list SID, IP SID or trunk SID, address, prefix):
        "+"/"-" add/remove a list entry; "A"/"D" associate/dissociate a list
        and a trunk, for which ``lists`` gives the list's name and entries
        ((IP SID, address, prefix), ...).  Only the matchers of the trunks
        concerned (and the union) change, by copying the touched shards;
        everything else is shared with this table.  Raises ValueError when
        the changes cannot be applied incrementally (the caller recompiles).
        """
        lists = lists or {}
        changes = list(changes)
        relinked = {acl for op, acl, *_ in changes if op in ("A", "D")}
        if any(op in ("+", "-") and acl in relinked for op, acl, *_ in changes):
            # The list's entries were read at the latest revision: mixing
            # them with entry changes of the same list would count twice.
            raise ValueError("entry and association changes of one list in one delta")
        by_sid = dict(self.by_sid)
        by_domain = dict(self.by_domain)
        names = dict(self.acl_names)
        union_added: list[tuple[str, int | None, Match]] = []
        union_removed: list[tuple[str, int | None, Match]] = []

        def put(trunk: TrunkEntry) -> None:
            by_sid[trunk.sid] = trunk
            if trunk.domain_name:
                by_domain[trunk.domain_name] = trunk

        def rows(acl_sid: str, name: str, entries: Iterable[tuple[str, str, int | None]]
                 ) -> list[tuple[str, int | None, Match]]:
            return [(address, prefix, Match(acl_sid, name, ip_sid, _network_text(address, prefix)))
                    for ip_sid, address, prefix in entries]

        entry_delta: dict[str, tuple[list[tuple[str, int | None, Match]], list[tuple[str, int | None, Match]]]] = {}
        for op, acl_sid, other_sid, address, prefix in changes:
            if op in ("A", "D"):
                trunk = by_sid.get(other_sid)
                if trunk is None or acl_sid not in lists:
                    raise ValueError(f"unknown trunk {other_sid} or list {acl_sid}")
                name, entries = lists[acl_sid]
                used_before = any(acl_sid in t.acl_sids for t in by_sid.values())
                if op == "A":
                    if acl_sid in trunk.acl_sids:
                        raise ValueError(f"list {acl_sid} already on trunk {other_sid}")
                    new_rows = rows(acl_sid, name, entries)
                    put(replace(trunk, acl_sids=(*trunk.acl_sids, acl_sid),
                                matcher=trunk.matcher.with_changes(added=new_rows)))
                    if not used_before:
                        names[acl_sid] = name
                        union_added.extend(new_rows)
                else:
                    if acl_sid not in trunk.acl_sids:
                        raise ValueError(f"list {acl_sid} not on trunk {other_sid}")
                    old_rows = rows(acl_sid, names[acl_sid], entries)
                    put(replace(trunk, acl_sids=tuple(a for a in trunk.acl_sids if a != acl_sid),
                                matcher=trunk.matcher.with_changes(removed=old_rows)))
                    if not any(acl_sid in t.acl_sids for t in by_sid.values()):
                        del names[acl_sid]
                        union_removed.extend(old_rows)
                continue
            if acl_sid not in names:
                continue  # a list no trunk uses: nothing compiled to change
            row = (address, prefix, Match(acl_sid, names[acl_sid], other_sid, _network_text(address, prefix)))
            added, removed = entry_delta.setdefault(acl_sid, ([], []))
            (added if op == "+" else removed).append(row)
        for trunk in list(by_sid.values()):
            touched = [acl for acl in trunk.acl_sids if acl in entry_delta]
            if touched:
                put(replace(trunk, matcher=trunk.matcher.with_changes(
                    [r for acl in touched for r in entry_delta[acl][0]],
                    [r for acl in touched for r in entry_delta[acl][1]])))
        for added, removed in entry_delta.values():
            union_added.extend(added)
            union_removed.extend(removed)
        any_trunk = self.any_trunk.with_changes(union_added, union_removed) if union_added or union_removed \
            else self.any_trunk
        return AdmissionTable(generation, by_domain, by_sid, any_trunk,
                              self.entries + len(union_added) - len(union_removed), names)


def _network_text(address: str, prefix: int | None) -> str:
    if prefix is None:
        prefix = 128 if ":" in address else 32
    return f"{address}/{prefix}"


@dataclass(frozen=True, slots=True)
class Context:
    """What decide() needs to know about the listener the request came in on."""

    # Hosts (lower case, IPv6 without brackets) that mean sipgate itself.
    own_hosts: frozenset[str]
    # Domain name of the trunk for Request-URIs addressed to an IP literal.
    default_trunk: str | None = None
    # "reject" (404) or "drop" for an unknown Request-URI host.
    unknown_host: str = "reject"
    secret: bytes = b"sipgate"


@dataclass(frozen=True, slots=True)
class Admit:
    """Relay the request to the PBX."""

    trunk: TrunkEntry
    reason: str  # "admitted" (initial request) or "in_dialog"
    pop_route: bool  # the top Route is sipgate's own: remove it (RFC 3261 §16.4)
    result: str = field(default="admit", init=False)


@dataclass(frozen=True, slots=True)
class Reject:
    """Answer with a stateless final response; never relay."""

    status: int
    phrase: str
    reason: str
    warning: str | None
    trunk: TrunkEntry | None = None
    result: str = field(default="reject", init=False)


@dataclass(frozen=True, slots=True)
class Answer:
    """sipgate answers the request itself (OPTIONS keepalive: 200 OK)."""

    status: int
    phrase: str
    reason: str
    result: str = field(default="answer", init=False)


@dataclass(frozen=True, slots=True)
class Drop:
    """Send nothing (an ACK, or a policy of silence)."""

    reason: str
    result: str = field(default="drop", init=False)


Decision = Admit | Reject | Answer | Drop

_ACK_ABSORBED = Drop("ack_absorbed")
_ACK_FORBIDDEN = Drop("forbidden")
_ACK_NO_TRUNK = Drop("no_trunk")
_DROP_NO_TRUNK = Drop("no_trunk")
_KEEPALIVE_OK = Answer(200, "OK", "keepalive")
_REJECT_NO_TRUNK = Reject(404, "Not Found", "no_trunk", WARN_NO_TRUNK)
_REJECT_DIALOG_TRUNK = Reject(403, "Forbidden", "no_trunk", WARN_DIALOG_TRUNK)
_REJECT_HOPS = Reject(483, "Too Many Hops", "too_many_hops", WARN_HOPS)


def _forbidden(trunk: TrunkEntry | None) -> Reject:
    warning = WARN_NO_LIST if trunk is not None and not trunk.acl_sids else WARN_FORBIDDEN
    return Reject(403, "Forbidden", "forbidden", warning, trunk)


def _is_ip_literal(host: str) -> bool:
    return parse_address(host) is not None


def _dialog_route(request: Request, ctx: Context) -> tuple[bool, str | None]:
    """(top Route is ours, trunk SID from it) per RFC 3261 §16.4."""
    route = request.first("route")
    if route is None:
        return False, None
    try:
        uri = parse_uri(parse_name_addr(route).uri)
    except SipParseError:
        return False, None
    if uri.host not in ctx.own_hosts:
        return False, None
    return True, uri.params.get(TRUNK_PARAM) or None


def trunk_for_host(host: str, table: AdmissionTable, ctx: Context) -> TrunkEntry | None:
    """The trunk a Request-URI host addresses (domain match, case-insensitive).

    A host that is an IP literal (or sipgate's own name) falls back to the
    listener's default trunk, for carriers that address the edge by IP.
    """
    trunk = table.by_domain.get(host)
    if trunk is None and ctx.default_trunk and (host in ctx.own_hosts or _is_ip_literal(host)):
        trunk = table.by_domain.get(ctx.default_trunk)
    return trunk


def decide(request: Request, source: str, table: AdmissionTable, ctx: Context) -> Decision:
    """Judge one request from outside the trusted (PBX) side.

    ``source`` is the packet's source host as the socket reported it; an
    IPv4-mapped IPv6 source is unwrapped by the matcher.  Headers never
    decide admission: they only say which trunk a request is for.
    """
    method = request.method
    is_ack = method == "ACK"
    parsed = parse_address(source)
    if request.to_tag is not None:
        # In-dialog (RFC 3261 §12.2): an ACK carrying the To-tag sipgate
        # derived for its own final response belongs to that response's
        # transaction (§17.1.1.3) and ends here.
        if is_ack and request.to_tag == derive_to_tag(request, ctx.secret):
            return _ACK_ABSORBED
        ours, trunk_sid = _dialog_route(request, ctx)
        if trunk_sid is not None:
            trunk = table.by_sid.get(trunk_sid)
            if trunk is None:
                return _ACK_NO_TRUNK if is_ack else _REJECT_DIALOG_TRUNK
        else:
            trunk = trunk_for_host(request.request_uri.host, table, ctx)
            if trunk is None:
                return _ACK_NO_TRUNK if is_ack else _REJECT_NO_TRUNK
        if parsed is None or not trunk.matcher.contains_value(*parsed):
            return _ACK_FORBIDDEN if is_ack else _forbidden(trunk)
        if request.max_forwards == 0:
            return _ACK_FORBIDDEN if is_ack else _REJECT_HOPS
        return Admit(trunk, "in_dialog", ours)

    if is_ack:
        # An ACK outside a dialog matches no transaction of ours (§17.2.3).
        return _ACK_NO_TRUNK
    host = request.request_uri.host
    if method == "OPTIONS" and host in ctx.own_hosts and host not in table.by_domain:
        # A keepalive to sipgate itself: OK for anyone some trunk admits.
        if parsed is not None and table.any_trunk.contains_value(*parsed):
            return _KEEPALIVE_OK
        return _forbidden(None)
    trunk = trunk_for_host(host, table, ctx)
    if trunk is None:
        return _DROP_NO_TRUNK if ctx.unknown_host == "drop" else _REJECT_NO_TRUNK
    if parsed is None or not trunk.matcher.contains_value(*parsed):
        return _forbidden(trunk)
    if method == "OPTIONS":
        # Carrier keepalives to the trunk domain are answered at the edge.
        return _KEEPALIVE_OK
    if request.max_forwards == 0:
        return _REJECT_HOPS
    ours, _ = _dialog_route(request, ctx)
    return Admit(trunk, "admitted", ours)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why an address is admitted or denied for a trunk (``sipgate check``)."""

    admitted: bool
    trunk: TrunkEntry | None
    matches: tuple[Match, ...]
    text: str


def explain(table: AdmissionTable, domain: str, address: str, ctx: Context | None = None) -> Explanation:
    """Admit/deny ``address`` for the trunk of ``domain``, and why."""
    ctx = ctx or Context(own_hosts=frozenset())
    parsed = parse_address(address)
    if parsed is None:
        return Explanation(False, None, (), f"deny: {address!r} is not an IP address")
    trunk = trunk_for_host(domain.lower(), table, ctx)
    if trunk is None:
        return Explanation(False, None, (), f"deny: no trunk has domain name {domain!r} (404 Not Found)")
    if not trunk.acl_sids:
        return Explanation(False, trunk, (), f"deny: trunk {trunk.sid} has no IP access control list (403)")
    matches = trunk.matcher.lookup_value(*parsed)
    if not matches:
        return Explanation(False, trunk, (), (
            f"deny: {address} is in none of the {len(trunk.acl_sids)} list(s) of trunk {trunk.sid} "
            f"({', '.join(trunk.acl_sids)}) (403 Forbidden)"))
    lines = [f"admit: {address} for trunk {trunk.sid} ({trunk.domain_name})"]
    lines += [f"  list {m.acl_sid} ({m.acl_name}) entry {m.ip_sid} {m.network}" for m in matches]
    return Explanation(True, trunk, matches, "\n".join(lines))
