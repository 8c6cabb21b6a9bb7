"""The trunk rule: which requests are admitted, as values, never exceptions.

*If an INVITE is received for a Trunk, the source IP address must be in one
of the lists for the INVITE to be accepted.*  The trunk is the one whose
domain name equals the Request-URI host; only the packet source address
decides, never a header.  This module is pure: no sockets, no clocks, no I/O.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sipgate.acl import PrefixMatcher, parse_address
from sipgate.acl.network import MAX_PREFIX, normalize_network
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
    """One IP access control entry that admits an address (``explain``).

    The compiled matchers do not hold these: their payload is the list SID
    alone, one string shared by all the list's entries, so a table of a
    million entries carries no object per entry (the store's UNIQUE
    (list, network) makes (network, list SID) name an entry).  ``explain``
    builds them from the list entries it is given.
    """

    acl_sid: str
    ip_sid: str
    network: str  # "address/prefix" as stored


@dataclass(frozen=True, slots=True)
class TrunkEntry:
    """A trunk as the edge sees it: identity plus the union of its lists."""

    sid: str
    account_sid: str
    domain_name: str | None
    acl_sids: tuple[str, ...]
    matcher: PrefixMatcher[str]  # payload: the list SID


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
    any_trunk: PrefixMatcher[str]
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
        union: list[tuple[str, int | None, str]] = []
        entries = 0
        seen_acls: set[str] = set()
        trunks_seen = []
        for trunk in trunks:
            trunks_seen.append(trunk)
            rows: list[tuple[str, int | None, str]] = []
            for acl_sid, _name, addresses in trunk.acls:
                acl_rows = _rows(acl_sid, addresses)
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

    def apply_changes(self, generation: int,
                      changes: Iterable[tuple[str, str | None, str | None, str | None, int | None]],
                      lists: Mapping[str, tuple[str | None, tuple[tuple[str, str, int | None], ...]]] | None = None,
                      trunks: Mapping[str, tuple[str, str | None] | None] | None = None,
                      ) -> AdmissionTable:
        """A new table with the store's changes applied, touching only what they affect.

        ``changes`` are the store's change log since this table's generation
        (see ``sipgate.store.Delta``): "+"/"-" list entries, "A"/"D"
        associations, "N" list renames, "T"/"R" trunks created, re-domained
        or deleted.  ``lists`` gives the current name (None once deleted)
        and entries ((IP SID, address, prefix), ...) of every list an
        "A"/"D"/"N" change names; ``trunks`` the current (account SID,
        domain name), or None, of every trunk a "T"/"R" change names.

        The net effect is computed first, so a delta mixing any of these
        (even for one list) applies in one pass: each trunk's matcher (and
        the union) changes by only the rows it gains or loses, by copying
        the shards those rows fall in; untouched trunks, and untouched
        shards, are shared with this table.  A rename changes only
        ``acl_names``.  A list's entries as compiled
        here are its current entries with the delta's entry changes undone.
        Raises ValueError when the changes do not fit this table (the
        caller then recompiles in full).
        """
        lists = lists or {}
        trunks = trunks or {}
        Row = tuple[str, int | None, str]
        # 1. Replay the structure: the final list SIDs of every trunk the
        #    delta touches (None: deleted), net entry changes, renames.
        final_acls: dict[str, list[str] | None] = {}
        redomained: set[str] = set()
        net: dict[str, dict[tuple[str, str, int | None], int]] = {}
        renamed: set[str] = set()

        def acls_of(trunk_sid: str | None) -> list[str]:
            if trunk_sid not in final_acls:
                trunk = self.by_sid.get(trunk_sid)  # type: ignore[arg-type]
                if trunk is None:
                    raise ValueError(f"unknown trunk {trunk_sid}")
                final_acls[trunk_sid] = list(trunk.acl_sids)  # type: ignore[index]
            current = final_acls[trunk_sid]  # type: ignore[index]
            if current is None:
                raise ValueError(f"trunk {trunk_sid} changed after its deletion")
            return current

        for op, acl_sid, other_sid, address, prefix in changes:
            if op == "+" or op == "-":
                if acl_sid is None or other_sid is None or address is None:
                    raise ValueError(f"entry change {op} without its list, SID or address")
                counts = net.setdefault(acl_sid, {})
                key = (other_sid, address, prefix)
                counts[key] = counts.get(key, 0) + (1 if op == "+" else -1)
            elif op == "A":
                current = acls_of(other_sid)
                if acl_sid in current:
                    raise ValueError(f"list {acl_sid} already on trunk {other_sid}")
                current.append(acl_sid)  # type: ignore[arg-type]
            elif op == "D":
                current = acls_of(other_sid)
                if acl_sid not in current:
                    raise ValueError(f"list {acl_sid} not on trunk {other_sid}")
                current.remove(acl_sid)  # type: ignore[arg-type]
            elif op == "N":
                renamed.add(acl_sid)  # type: ignore[arg-type]
            elif op == "T":
                if other_sid not in final_acls and other_sid not in self.by_sid:
                    final_acls[other_sid] = []  # type: ignore[index]  # a new trunk
                redomained.add(other_sid)  # type: ignore[arg-type]
            elif op == "R":
                if acls_of(other_sid):
                    raise ValueError(f"trunk {other_sid} deleted with lists still on it")
                final_acls[other_sid] = None  # type: ignore[index]
            else:
                raise ValueError(f"unknown change {op!r}")

        # 2. Rows: a list as compiled here (start) and as it is now (end).
        def current_list(acl_sid: str) -> tuple[str | None, tuple[tuple[str, str, int | None], ...]]:
            found = lists.get(acl_sid)
            if found is None:
                raise ValueError(f"no entries given for list {acl_sid}")
            return found

        start_cache: dict[str, list[Row]] = {}
        end_cache: dict[str, list[Row]] = {}

        def start_rows(acl_sid: str) -> list[Row]:
            if acl_sid not in start_cache:
                counts = net.get(acl_sid, {})
                added = {k for k, n in counts.items() if n > 0}
                entries = [e for e in current_list(acl_sid)[1] if tuple(e) not in added]
                entries += [k for k, n in counts.items() if n < 0]
                start_cache[acl_sid] = _rows(acl_sid, entries)
            return start_cache[acl_sid]

        def end_rows(acl_sid: str) -> list[Row]:
            if acl_sid not in end_cache:
                name, entries = current_list(acl_sid)
                if name is None:
                    raise ValueError(f"deleted list {acl_sid} is still on a trunk")
                end_cache[acl_sid] = _rows(acl_sid, entries)
            return end_cache[acl_sid]

        entry_delta: dict[str, tuple[list[Row], list[Row]]] = {}
        for acl_sid, counts in net.items():
            if acl_sid in self.acl_names and any(counts.values()):
                entry_delta[acl_sid] = (_rows(acl_sid, [k for k, n in counts.items() if n > 0]),
                                        _rows(acl_sid, [k for k, n in counts.items() if n < 0]))

        def diff(start: Iterable[str], end: Iterable[str]) -> tuple[list[Row], list[Row]]:
            added: list[Row] = []
            removed: list[Row] = []
            end = list(end)
            for acl_sid in start:
                if acl_sid not in end:
                    removed += start_rows(acl_sid)
                elif acl_sid in entry_delta:
                    added += entry_delta[acl_sid][0]
                    removed += entry_delta[acl_sid][1]
            for acl_sid in end:
                if acl_sid not in start:
                    added += end_rows(acl_sid)
            return added, removed

        # 3. Trunks: rebuild only the entries whose lists or domain changed.
        by_sid = dict(self.by_sid)
        by_domain = dict(self.by_domain)
        for trunk_sid in set(final_acls) | redomained:
            old = self.by_sid.get(trunk_sid)
            if old is not None and old.domain_name and by_domain.get(old.domain_name) is old:
                del by_domain[old.domain_name]
            by_sid.pop(trunk_sid, None)
        used_end: set[str] = set()
        updated: list[TrunkEntry] = []
        for trunk_sid in [*self.by_sid, *(t for t in final_acls if t not in self.by_sid)]:
            old = self.by_sid.get(trunk_sid)
            start_acls = old.acl_sids if old is not None else ()
            end_acls = final_acls.get(trunk_sid, start_acls)
            if end_acls is None:
                if trunks.get(trunk_sid, ()) is not None:
                    raise ValueError(f"trunk {trunk_sid} deleted in the log but not in the store")
                continue
            used_end.update(end_acls)
            added, removed = diff(start_acls, end_acls)
            if old is not None and not added and not removed and trunk_sid not in final_acls \
                    and trunk_sid not in redomained:
                continue  # untouched: shared as is
            if trunk_sid in trunks:
                identity = trunks[trunk_sid]
                if identity is None:
                    raise ValueError(f"trunk {trunk_sid} is gone from the store")
                account_sid, domain = identity
            elif old is not None:
                account_sid, domain = old.account_sid, old.domain_name
            else:
                raise ValueError(f"no identity given for new trunk {trunk_sid}")
            matcher = old.matcher if old is not None else PrefixMatcher.empty()
            if added or removed:
                matcher = matcher.with_changes(added, removed)
            updated.append(TrunkEntry(trunk_sid, account_sid, domain.lower() if domain else None,
                                      tuple(end_acls), matcher))
        for trunk in updated:
            by_sid[trunk.sid] = trunk
            if trunk.domain_name:
                holder = by_domain.get(trunk.domain_name)
                if holder is not None and holder.sid != trunk.sid:
                    raise ValueError(f"domain {trunk.domain_name} claimed by {holder.sid} and {trunk.sid}")
                by_domain[trunk.domain_name] = trunk

        # 4. The union of every used list ("admitted by any trunk").
        union_added, union_removed = diff(self.acl_names, used_end)
        names: dict[str, str] = {}
        for acl_sid in used_end:
            name = current_list(acl_sid)[0] if acl_sid in renamed or acl_sid not in self.acl_names \
                else self.acl_names[acl_sid]
            if name is None:
                raise ValueError(f"list {acl_sid} is on a trunk but deleted")
            names[acl_sid] = name
        any_trunk = self.any_trunk.with_changes(union_added, union_removed) if union_added or union_removed \
            else self.any_trunk
        return AdmissionTable(generation, by_domain, by_sid, any_trunk,
                              self.entries + len(union_added) - len(union_removed), names)


def _rows(acl_sid: str, entries: Iterable[tuple[str, str, int | None]]) -> list[tuple[str, int | None, str]]:
    """Matcher rows (address, prefix, list SID) of a list's (IP SID, address, prefix) entries."""
    acl_sid = sys.intern(acl_sid)  # one string for the whole list, whatever the caller passed
    return [(address, prefix, acl_sid) for _ip_sid, address, prefix in entries]


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
    unsupported: tuple[str, ...] = ()  # option tags for an Unsupported header (420)
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


def _bad_extension(request: Request, trunk: TrunkEntry) -> Reject | None:
    """420 Bad Extension when the request has a Proxy-Require header
    (RFC 3261 §16.3 step 5): sipgate implements no extension that a proxy
    could be required to, so every option tag in it is unsupported and
    goes into the response's Unsupported header (§20.40), once each."""
    tags = tuple(dict.fromkeys(request.values("proxy-require")))  # (a list header: split, blanks dropped)
    if not tags:
        return None
    return Reject(420, "Bad Extension", "bad_extension", None, trunk, tags)


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
        if not is_ack and (bad := _bad_extension(request, trunk)) is not None:
            return bad
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
        # Carrier keepalives to the trunk domain are answered at the edge,
        # on the proxy's side of §16.3: Proxy-Require first (RFC 4475 3.3.5).
        bad = _bad_extension(request, trunk)
        return _KEEPALIVE_OK if bad is None else bad
    if request.max_forwards == 0:
        return _REJECT_HOPS
    if (bad := _bad_extension(request, trunk)) is not None:
        return bad
    ours, _ = _dialog_route(request, ctx)
    return Admit(trunk, "admitted", ours)


@dataclass(frozen=True, slots=True)
class Explanation:
    """Why an address is admitted or denied for a trunk (``sipgate check``)."""

    admitted: bool
    trunk: TrunkEntry | None
    matches: tuple[Match, ...]
    text: str


def explain(table: AdmissionTable, domain: str, address: str, ctx: Context | None = None,
            entries: Mapping[str, Iterable[tuple[str, str, int | None]]] | None = None) -> Explanation:
    """Admit/deny ``address`` for the trunk of ``domain``, and why.

    The verdict is the compiled table's.  ``entries`` (list SID -> (IP
    address SID, address, prefix) entries, as the store holds them) names
    the entries of the admitting lists that contain the address, longest
    prefix first; without it only the lists are named.
    """
    ctx = ctx or Context(own_hosts=frozenset())
    entries = entries or {}
    parsed = parse_address(address)
    if parsed is None:
        return Explanation(False, None, (), f"deny: {address!r} is not an IP address")
    trunk = trunk_for_host(domain.lower(), table, ctx)
    if trunk is None:
        return Explanation(False, None, (), f"deny: no trunk has domain name {domain!r} (404 Not Found)")
    if not trunk.acl_sids:
        return Explanation(False, trunk, (), f"deny: trunk {trunk.sid} has no IP access control list (403)")
    acl_sids = trunk.matcher.lookup_value(*parsed)
    if not acl_sids:
        return Explanation(False, trunk, (), (
            f"deny: {address} is in none of the {len(trunk.acl_sids)} list(s) of trunk {trunk.sid} "
            f"({', '.join(trunk.acl_sids)}) (403 Forbidden)"))
    lines = [f"admit: {address} for trunk {trunk.sid} ({trunk.domain_name})"]
    matches: list[Match] = []
    for acl_sid in acl_sids:
        lines.append(f"  list {acl_sid} ({table.acl_names.get(acl_sid, '')})")
        found = _containing(parsed, acl_sid, entries.get(acl_sid) or ())
        matches += found
        lines += [f"    entry {m.ip_sid} {m.network}" for m in found]
    return Explanation(True, trunk, tuple(matches), "\n".join(lines))


def _containing(parsed: tuple[int, int], acl_sid: str,
                entries: Iterable[tuple[str, str, int | None]]) -> list[Match]:
    """The entries of a list that contain the parsed address, longest prefix first."""
    version, value = parsed
    found: list[tuple[int, Match]] = []
    for ip_sid, text, prefix in entries:
        try:
            e_version, network, length = normalize_network(text, prefix)
        except ValueError:
            continue
        width = MAX_PREFIX[e_version]
        if e_version == version and value >> (width - length) == network >> (width - length):
            found.append((length, Match(acl_sid, ip_sid, _network_text(text, prefix))))
    found.sort(key=lambda f: -f[0])
    return [m for _, m in found]
