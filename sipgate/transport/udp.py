"""The asyncio UDP edge: one datagram in, at most one datagram out.

A thin ``DatagramProtocol`` around the pure layers (aioquic's server style):
parse, decide, reply or relay, count.  No per-datagram task, log line or
lock; nothing raises out of ``datagram_received``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Final

from sipgate import native
from sipgate.acl import parse_address
from sipgate.acl.probe import Probes
from sipgate.admission import (
    TRUNK_PARAM,
    WARN_FORBIDDEN,
    WARN_NO_LIST,
    AdmissionTable,
    Admit,
    Context,
    Drop,
    Reject,
    TrunkEntry,
    decide,
    trunk_for_host,
)
from sipgate.config import Listener, SipConfig
from sipgate.flood import FloodGuard
from sipgate.stats import EdgeStats
from sipgate.sip import (
    Request,
    Response,
    SipLimits,
    SipParseError,
    build_response,
    compute_branch,
    derive_to_tag,
    format_host,
    parse,
    parse_name_addr,
    parse_uri,
    parse_via,
    relay_request,
    relay_response,
)
from sipgate.sip.build import hash_key
from sipgate.sip.fast import (
    HOST,
    OWN_TAG_LENGTH,
    MAX_FORWARDS,
    METHOD,
    RPORT,
    TO_TAG,
    VIA_HOST,
    VIA_PORT,
    VIAS,
    branch_matches,
    forbidden_response,
    relay_request_bytes,
    relay_response_bytes,
    scan,
    scan_limits,
    sipgate_route,
    to_tag_for,
)
from sipgate.sip.proxy import via_branch

__all__ = ["Edge", "EdgeProtocol", "open_listener"]

log = logging.getLogger("sipgate.transport")

# Requests that create dialogs: sipgate Record-Routes these (RFC 3261 §16.6
# step 4) so the dialog's later requests come back through the edge.
DIALOG_CREATING: Final = frozenset({"INVITE", "SUBSCRIBE", "REFER", "NOTIFY"})
_ALWAYS_EMPTY: Final = frozenset({b"", b"\r\n", b"\r\n\r\n", b"\n", b"\n\n"})
_REQUIRED_FOR_REPLY: Final = ("via", "from", "to", "call-id", "cseq")
_perf_counter: Final = time.perf_counter
# Refusals that count towards a flood ban and go to the deny log.
_REFUSALS: Final = frozenset({"forbidden", "no_trunk", "bad_request"})


class _LogLimiter:
    """At most one log line per ``interval`` seconds for a recurring fault."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.next_at = 0.0
        self.suppressed = 0

    def allow(self) -> bool:
        now = time.monotonic()
        if now < self.next_at:
            self.suppressed += 1
            return False
        self.next_at = now + self.interval
        return True


class Edge:
    """State shared by every listener: settings, the table in force, stats."""

    def __init__(self, config: SipConfig, stats: EdgeStats | None = None) -> None:
        self.stats = stats or EdgeStats()
        self.table = AdmissionTable.empty()
        self.reconfigure(config)
        # False turns the fast path off (the differential tests compare both).
        self.fast_path = True
        self.error_log = _LogLimiter()
        # The scanner flood defence (sipgate.flood) and the deny log
        # (sipgate.denylog), when configured; the server sets them.
        # (The guard typed: compiled, its checks per datagram are direct
        # calls and field reads, not calls and attributes looked up by name.)
        self.flood: FloodGuard | None = None
        self.deny_log: Any = None

    def exempt(self, source: str) -> bool:
        """Never banned: the PBX side and every source a trunk admits."""
        return source in self.trusted or self.table.any_trunk.contains(source)

    def reconfigure(self, config: SipConfig) -> None:
        """Take the settings (at start, and on SIGHUP: the listeners stay as
        bound, a protocol rebuilds its context with ``reconfigure()``)."""
        self.config = config
        self.max_datagram: int = config.max_datagram
        # The message size limits (sipgate.sip.limits); the config carries
        # them once [sip] max_headers/max_vias/max_header_line/max_uri exist.
        self.limits: SipLimits = getattr(config, "limits", None) or SipLimits()
        self.scan_limits = scan_limits(self.limits)
        self.secret = config.secret.encode()
        self.pbx = config.pbx
        self.trusted = config.trusted_hosts
        self.server_header = ("Server", config.server_header) if config.server_header else None
        # For the fast path: the To-tag and Via branch key and the 403's
        # trailing headers.
        self.tag_key = hash_key(self.secret)
        server = f"Server: {config.server_header}\r\n".encode() if config.server_header else b""
        # (for a trunk with lists, and for one without any)
        self.forbidden_listed = f"Warning: {WARN_FORBIDDEN}\r\n".encode() + server
        self.forbidden_unlisted = f"Warning: {WARN_NO_LIST}\r\n".encode() + server

    def install(self, table: AdmissionTable, compile_seconds: float = 0.0) -> None:
        """Swap in a new table: one reference assignment, so a datagram is
        judged wholly by the old table or wholly by the new one."""
        self.table = table
        s = self.stats
        s.table_generation = table.generation
        s.table_entries = table.entries
        s.table_trunks = len(table.by_sid)
        s.table_compiled_at = time.time()
        s.table_compile_seconds = compile_seconds


@dataclass(frozen=True, slots=True)
class _Local:
    """How one listener names itself on the wire."""

    host: str
    port: int
    via_prefix: str  # "SIP/2.0/UDP host:port;branch="
    rr_prefix: str  # "<sip:host:port;lr;sgt="
    via_prefix_b: bytes  # the same two, encoded, for the fast path
    rr_prefix_b: bytes


class _Judge:
    """What the fast path asks of the trunk a Request-URI host names in the
    table in force: does the trunk admit a source, and is it listed (which
    403 Warning).  The compiled build calls the trunk matcher's compiled
    lookup (sipgate.acl.probe) directly, as one C call, where
    ``trunk.matcher.contains(source)`` was two attribute lookups on
    interpreted objects and a call through Python's calling convention:
    lines of code and data the first datagram after an idle spell must
    fetch from memory."""

    def __init__(self, trunk: TrunkEntry | None, matcher: Any) -> None:
        # (``matcher``: the trunk's; no trunk: a table's any_trunk, for ACKs.)
        self.trunk: Any = trunk
        self.contains: Any = matcher.contains
        owner = getattr(self.contains, "__self__", None)
        self.probes: Probes | None = owner if type(owner) is Probes else None
        self.listed = trunk is not None and bool(trunk.acl_sids)

    def admits(self, source: str) -> bool:
        probes = self.probes
        if probes is not None:
            return probes.contains(source)
        return bool(self.contains(source))


# Hosts and sgt= SIDs an EdgeProtocol keeps a _Judge for, per table: past
# this many the cache starts over (one that names no trunk is never kept).
_JUDGES_MAX: Final = 1024


class EdgeProtocol(asyncio.DatagramProtocol):
    """One UDP listener of the edge."""

    def __init__(self, edge: Edge, listener: Listener) -> None:
        self.edge = edge
        self.listener = listener
        self.transport: Any = None  # (sendto is all the receive path uses)
        # The same transport when it is a SocketTransport: a direct call.
        self.socket_transport: SocketTransport | None = None
        # The fast path's _Judge of each Request-URI host (str) and of each
        # sgt= trunk SID of sipgate's Route (bytes, in-dialog), for ``judged``.
        self.judges: dict[str | bytes, _Judge] = {}
        self.judged: Any = None
        # The _Judge of any_trunk (does some trunk admit a source?) of the
        # table ``anywhere_of``, for ACKs from outside.
        self.anywhere: _Judge | None = None
        self.anywhere_of: Any = None
        self.reconfigure()
        # A dual-stack IPv6 socket (bound to ::) reports IPv4 peers as
        # ::ffff:a.b.c.d and can only send to them in that form.
        self.dual_stack = listener.host == "::"
        public = listener.public_host.lower()
        hostport = f"{format_host(public)}:{listener.port}"
        via_prefix = f"SIP/2.0/UDP {hostport};branch="
        rr_prefix = f"<sip:{hostport};lr;{TRUNK_PARAM}="
        self.local = _Local(public, listener.port, via_prefix, rr_prefix, via_prefix.encode(), rr_prefix.encode())

    def reconfigure(self) -> None:
        """(Re)build the decision context from the edge's settings."""
        edge = self.edge
        listener = self.listener
        public = listener.public_host.lower()
        own = {public, *edge.config.aliases}
        if listener.host not in ("0.0.0.0", "::"):
            own.add(listener.host.lower())
        self.ctx = Context(
            own_hosts=frozenset(own),
            default_trunk=listener.default_trunk,
            unknown_host=edge.config.unknown_host,
            secret=edge.secret,
        )
        self.judged = None  # (the default trunk may have changed)

    # -- asyncio callbacks -------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A SocketTransport (open_listener) or anything else with sendto.
        self.transport = transport  # type: ignore[assignment]
        self.socket_transport = transport if isinstance(transport, SocketTransport) else None

    def error_received(self, exc: Exception) -> None:
        # ICMP errors (e.g. port unreachable when the PBX is down) arrive
        # here on the next socket operation: count them, keep serving.
        self.edge.stats.send_errors += 1
        if self.edge.error_log.allow():
            log.warning("socket error on %s:%s: %s", self.listener.host, self.listener.port, exc)

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
        started = _perf_counter()
        stats = self.edge.stats
        stats.datagrams_received += 1
        stats.bytes_received += len(data)
        try:
            self._handle(data, addr)
        except Exception:  # never out of the receive path
            stats.internal_errors += 1
            if self.edge.error_log.allow():
                log.exception("internal error handling a datagram from %s", addr[0])
        stats.latency.observe(_perf_counter() - started)

    # -- the receive path --------------------------------------------------
    def _send(self, data: bytes, dest: tuple[str, int]) -> None:
        if self.dual_stack and ":" not in dest[0]:
            dest = ("::ffff:" + dest[0], dest[1])
        st = self.socket_transport
        if st is not None:
            st.sendto(data, dest)
        else:
            self.transport.sendto(data, dest)  # type: ignore[union-attr]
        self.edge.stats.datagrams_sent += 1

    def _handle(self, data: bytes, addr: tuple) -> None:
        edge = self.edge
        first = data[0] if data else 32
        if (first == 13 or first == 10 or first == 32 or first == 9) and (data in _ALWAYS_EMPTY or not data.strip()):
            # RFC 5626 §4.4.1 CRLF keepalives and empty datagrams.
            edge.stats.keepalives += 1
            return
        source = addr[0]
        if self.dual_stack and source.startswith("::ffff:") and "." in source:
            source = source[7:]
        flood = edge.flood
        if flood is not None and source in flood.banned and self._banned(flood, source):
            return
        if edge.fast_path and len(data) <= edge.max_datagram:
            if data[:8] == b"SIP/2.0 ":
                if self._fast_response(data, source):
                    return
            elif self._fast(data, addr, source):
                return
        try:
            msg = parse(data, max_size=edge.config.max_datagram, limits=edge.limits)
        except SipParseError as exc:
            self._bad_request(exc, addr, data=data)
            return
        if source is not addr[0]:
            addr = (source, addr[1])
        try:
            if type(msg) is Response:
                self._relay_response(msg, source)
            elif source in edge.trusted:
                self._from_pbx(msg, addr)  # type: ignore[arg-type]
            else:
                self._from_outside(msg, addr, data)  # type: ignore[arg-type]
        except SipParseError as exc:
            # A header parsed lazily (Via, Route, ...) turned out malformed.
            if type(msg) is Response:
                edge.stats.parse_errors += 1
                edge.stats.decision("drop", "bad_request")
            else:
                self._bad_request(exc, addr, msg, data)  # type: ignore[arg-type]

    def _banned(self, flood: FloodGuard, source: str) -> bool:
        """Drop a datagram from a banned source, unless the ban has run out
        or a trunk (or the PBX side) admits the source now."""
        if self.edge.exempt(source):
            flood.lift(source)
            return False
        if flood.is_banned(source):
            flood.dropped += 1
            return True
        return False

    def _rejected(self, data: bytes, source: str, port: int, reason: str, method: str | bytes | None,
                  host: str | None, trunk_sid: str | None) -> None:
        """A request from ``source`` was refused (answered 4xx, or an initial
        request dropped): count it towards a flood ban, log it."""
        edge = self.edge
        flood = edge.flood
        if flood is not None:
            flood.rejected(source)
        deny_log = edge.deny_log
        if deny_log is not None:
            deny_log.record(source, port, reason, method or "-", host, trunk_sid, data)

    def _fast(self, data: bytes, addr: tuple, source: str) -> bool:
        """The common requests from outside, judged and answered or relayed
        from the datagram's bytes without a Request (sipgate.sip.fast):
        denied INVITE/CANCEL -> 403, the ACK of sipgate's own response,
        admitted INVITE/CANCEL and in-dialog ACK/BYE relayed to the PBX.
        False: not handled, take the full path (which reaches the same
        result for everything handled here).  ``source`` is ``addr[0]``
        with an IPv4-mapped address unwrapped."""
        edge = self.edge
        if source in edge.trusted:
            return False
        stats = edge.stats
        if len(data) > 3 and data[0] == 65 and data[1] == 67 and data[2] == 75 and data[3] == 32 \
                and not self._anywhere(edge.table).admits(source):  # ("ACK ")
            # An ACK is never answered, and one from a source no trunk
            # admits is never relayed: whatever it says, it ends here.
            stats.forbidden_drops += 1
            return True
        s = scan(data, edge.limits, edge.scan_limits)
        if s is None:
            return False
        via_host = s[VIA_HOST]
        if ":" in via_host and via_host != source:
            # An IPv6 sent-by that is not the source's own text: the full
            # parser checks the literal (a malformed one is a 400).
            return False
        to_tag = s[TO_TAG]
        method: bytes = s[METHOD]  # (typed: the comparisons below are memcmp, not rich comparisons)
        if method == b"ACK" and to_tag is not None and len(to_tag) == OWN_TAG_LENGTH and to_tag.startswith(b"sg") \
                and to_tag == to_tag_for(s, edge.tag_key):
            # The ACK of sipgate's own final response (§17.1.1.3).
            stats.absorbed_acks += 1
            return True
        table = edge.table
        ctx = self.ctx
        if to_tag is not None:
            # In-dialog: the trunk from sipgate's own Route, else the host.
            route = sipgate_route(s, ctx.own_hosts)
            if route is None:
                return False
            pop, sgt = route
            judge = self._judge_sid(sgt, table) if sgt is not None else self._judge(s[HOST], table)
            if judge is None or not judge.admits(source) or s[MAX_FORWARDS] == 0:
                return False
            return self._fast_relay(s, data, source, addr[1], None, pop, "in_dialog")
        if method == b"ACK":
            return False
        judge = self._judge(s[HOST], table)
        if judge is None:
            return False
        trunk = judge.trunk
        if judge.admits(source):
            if s[MAX_FORWARDS] == 0:
                return False
            route = sipgate_route(s, ctx.own_hosts)
            if route is None:
                return False
            rr = self.local.rr_prefix_b + trunk.sid.encode() + b">" if method == b"INVITE" else None
            return self._fast_relay(s, data, source, addr[1], rr, route[0], "admitted")
        stats.forbidden_replies += 1
        port = addr[1] if s[RPORT] is not None or s[VIA_PORT] is None else s[VIA_PORT]
        self._send(forbidden_response(s, edge.tag_key,
                                      edge.forbidden_listed if judge.listed else edge.forbidden_unlisted),
                   (addr[0], port))
        if edge.flood is not None or edge.deny_log is not None:
            self._rejected(data, source, addr[1], "forbidden", method, s[HOST], trunk.sid)
        return True

    def _judge(self, host: str, table: AdmissionTable) -> _Judge | None:
        """The _Judge of the trunk ``host`` names in ``table`` (the one in
        force), or None when it names none."""
        judge = self._kept(host, table)
        return judge if judge is not None else self._keep(host, trunk_for_host(host, table, self.ctx))

    def _judge_sid(self, sgt: bytes, table: AdmissionTable) -> _Judge | None:
        """The _Judge of the trunk an sgt= parameter names in ``table``, or
        None when it names none (in-dialog requests)."""
        judge = self._kept(sgt, table)
        return judge if judge is not None else self._keep(sgt, table.by_sid.get(sgt.decode("ascii", "replace")))

    def _kept(self, key: str | bytes, table: AdmissionTable) -> _Judge | None:
        """The _Judge kept for ``key`` (a Request-URI host, or an sgt= SID as
        bytes, never equal to a host) while ``table`` is in force."""
        if table is not self.judged:
            self.judges = {}
            self.judged = table
        return self.judges.get(key)

    def _anywhere(self, table: AdmissionTable) -> _Judge:
        """The _Judge of ``table``'s any_trunk (kept while it is in force)."""
        judge = self.anywhere
        if judge is None or table is not self.anywhere_of:
            judge = self.anywhere = _Judge(None, table.any_trunk)
            self.anywhere_of = table
        return judge

    def _keep(self, key: str | bytes, trunk: TrunkEntry | None) -> _Judge | None:
        """A _Judge of ``trunk`` kept for ``key``; None for no trunk (not kept)."""
        if trunk is None:
            return None
        judge = _Judge(trunk, trunk.matcher)
        if len(self.judges) >= _JUDGES_MAX:
            self.judges = {}
        self.judges[key] = judge
        return judge

    def _fast_relay(self, s: tuple, data: bytes, source: str, port: int, rr: bytes | None, pop: bool,
                    reason: str) -> bool:
        edge = self.edge
        if len(s[VIAS]) >= edge.limits.max_vias:
            return False  # (no room for sipgate's Via: the full path answers 483)
        out = relay_request_bytes(s, data, edge.tag_key, self.local.via_prefix_b, source, port, rr, pop)
        if out is None:
            return False
        stats = edge.stats
        stats.decision("admit", reason)
        self._send(out, edge.pbx)
        stats.relayed_requests["to_pbx"] += 1
        return True

    def _fast_response(self, data: bytes, source: str) -> bool:
        """A response whose top Via is ours, relayed from the bytes (see
        sipgate.sip.fast.relay_response_bytes); False: take the full path."""
        r = relay_response_bytes(data, self.edge.limits)
        if r is None:
            return False
        out, top_host, top_port, host, port, branch, material = r
        local = self.local
        if top_host != local.host or (top_port or 5060) != local.port:
            return False
        edge = self.edge
        from_pbx = source in edge.trusted
        if not from_pbx and (host not in edge.trusted or not branch_matches(branch, material, edge.tag_key)):
            return False
        if not _unicast(host):
            return False
        self._send(out, (host, port))
        edge.stats.relayed_responses["from_pbx" if from_pbx else "to_pbx"] += 1
        return True

    def _reply(self, request: Request, status: int, phrase: str, warning: str | None,
               addr: tuple, unsupported: tuple[str, ...] = ()) -> None:
        """A stateless response, sent where RFC 3261 §18.2.2 / RFC 3581 say."""
        headers = []
        if unsupported:
            headers.append(("Unsupported", ", ".join(unsupported)))
        if warning:
            headers.append(("Warning", warning))
        if self.edge.server_header:
            headers.append(self.edge.server_header)
        data = build_response(request, status, phrase,
                              to_tag=derive_to_tag(request, self.edge.secret), headers=headers)
        via = request.top_via
        # The reply goes back to the packet's source address; its port is the
        # source port when the client asked for rport (RFC 3581) or
        # sent-by says nothing, else the sent-by port.
        port = addr[1] if via.rport is not None or via.port is None else via.port
        self._send(data, (addr[0], port))

    def _from_outside(self, request: Request, addr: tuple, data: bytes = b"") -> None:
        edge = self.edge
        # Whatever the decision, acting on it needs the top Via (a reply is
        # routed by it, a relay stamps it): a malformed one ends here, as a
        # parse error, before anything is counted as decided.
        request.top_via  # noqa: B018
        decision = decide(request, addr[0], edge.table, self.ctx)
        if type(decision) is Admit and self._no_via_room(request):
            decision = _NO_VIA_ROOM if request.method != "ACK" else _DROP_NO_VIA_ROOM
        stats = edge.stats
        stats.decision(decision.result, decision.reason)
        if type(decision) is Admit:
            local = self.local
            rr = None
            if decision.reason == "admitted" and request.method in DIALOG_CREATING:
                rr = f"{local.rr_prefix}{decision.trunk.sid}>"
            data = relay_request(
                request,
                via=local.via_prefix + compute_branch(request, edge.secret),
                source=(addr[0], addr[1]),
                record_route=rr,
                pop_route=decision.pop_route,
            )
            self._send(data, edge.pbx)
            stats.relayed_requests["to_pbx"] += 1
        elif type(decision) is Drop:
            if decision.reason == "no_trunk" and request.method != "ACK" and request.to_tag is None:
                self._refused(request, addr, data, decision)
            return
        elif type(decision) is Reject:
            self._reply(request, decision.status, decision.phrase, decision.warning, addr, decision.unsupported)
            if decision.reason in _REFUSALS:
                self._refused(request, addr, data, decision)
        else:  # (Answer: an OPTIONS keepalive)
            self._reply(request, decision.status, decision.phrase, None, addr)  # type: ignore[union-attr]

    def _refused(self, request: Request, addr: tuple, data: bytes, decision: Any) -> None:
        edge = self.edge
        if edge.flood is None and edge.deny_log is None:
            return
        trunk = getattr(decision, "trunk", None)
        try:
            host = request.request_uri.host
        except SipParseError:
            host = None
        self._rejected(data, addr[0], addr[1], decision.reason, request.method, host,
                       trunk.sid if trunk is not None else None)

    def _from_pbx(self, request: Request, addr: tuple) -> None:
        """Requests from the trusted side are routed, not judged (§16.4-16.6)."""
        stats = self.edge.stats
        method = request.method
        own = self.ctx.own_hosts
        if request.to_tag is None and method == "OPTIONS" and request.request_uri.host in own:
            stats.decision("answer", "keepalive")
            self._reply(request, 200, "OK", None, addr)
            return
        routes = request.values("route")
        pop = False
        target = None
        if routes:
            top = parse_uri(parse_name_addr(routes[0]).uri)
            if top.host in own:
                pop = True
                if len(routes) > 1:
                    target = parse_uri(parse_name_addr(routes[1]).uri)
            else:
                target = top
        if target is None:
            target = request.request_uri
        host = target.params.get("maddr") or target.host
        if parse_address(host) is None or host in own:
            # sipgate routes by IP literal only: no DNS on the receive path.
            if method != "ACK":
                stats.decision("reject", "unroutable")
                self._reply(request, 502, "Bad Gateway",
                            '399 sipgate "next hop is not an IP address"', addr)
            else:
                stats.decision("drop", "not_ours")
            return
        if request.max_forwards == 0 or self._no_via_room(request):
            if method != "ACK":
                stats.decision("reject", "too_many_hops")
                self._reply(request, 483, "Too Many Hops", None, addr)
            return
        data = relay_request(
            request,
            via=self.local.via_prefix + compute_branch(request, self.edge.secret),
            source=(addr[0], addr[1]),
            pop_route=pop,
        )
        self._send(data, (host, target.port or 5060))
        stats.relayed_requests["from_pbx"] += 1

    def _relay_response(self, response: Response, source: str) -> None:
        """Pop our Via and pass the response to the next one (§16.7, §18.2.2)."""
        stats = self.edge.stats
        try:
            via = response.top_via
        except SipParseError:
            stats.parse_errors += 1
            return
        if via.host != self.local.host or (via.port or 5060) != self.local.port:
            stats.decision("drop", "not_ours")
            return
        relayed = relay_response(response)
        if relayed is None:
            return
        data, dest = relayed
        edge = self.edge
        if not _unicast(dest[0]):
            # A next Via naming a broadcast, multicast or unspecified
            # address (RFC 4475 §3.3.10): nobody to send it to.
            stats.decision("drop", "not_ours")
            return
        from_pbx = source in edge.trusted
        if not from_pbx and (dest[0] not in edge.trusted or not self._our_branch(response, via)):
            # A response from outside may only travel towards the PBX, and
            # only when its top branch is the one sipgate computed for the
            # Via below it: never let a forged Via turn the edge into a
            # reflector, nor a forged response reach the PBX.
            stats.decision("drop", "not_ours")
            return
        self._send(data, dest)
        stats.relayed_responses["from_pbx" if from_pbx else "to_pbx"] += 1

    def _our_branch(self, response: Response, top: Any) -> bool:
        """The response's top branch is the one sipgate gave the request
        whose Via is the next one (proxy.via_branch): it went out through
        sipgate.  RFC 2543 Vias (no magic cookie) cannot be checked."""
        elements = response.values("via")
        if len(elements) < 2:
            return False
        expected = via_branch(parse_via(elements[1]), self.edge.secret)
        return expected is not None and top.branch == expected

    def _bad_request(self, exc: SipParseError, addr: tuple, request: Request | None = None,
                     data: bytes = b"") -> None:
        """400 (or the error's status) when a reply can be built, else drop."""
        edge = self.edge
        stats = edge.stats
        stats.parse_errors += 1
        if request is None:
            request = exc.partial
        if addr[0] not in edge.trusted and (edge.flood is not None or edge.deny_log is not None):
            source = addr[0]
            if self.dual_stack and source.startswith("::ffff:") and "." in source:
                source = source[7:]
            method = request.method if request is not None else None
            if method != "ACK":
                self._rejected(data, source, addr[1], "bad_request", method, None, None)
        if request is None or request.method == "ACK" or addr[0] in self.edge.trusted:
            stats.decision("drop", "bad_request")
            return
        try:
            if not all(request.first(name) for name in _REQUIRED_FOR_REPLY) or not self._reply_fits(request):
                raise SipParseError(400, "Bad Request", "cannot build a response")
            warning = '399 sipgate "' + exc.detail.replace('"', "'")[:200] + '"'
            self._reply(request, exc.status, exc.reason, warning, addr)
        except SipParseError:
            stats.decision("drop", "bad_request")
            return
        stats.decision("reject", "bad_request")


    def _no_via_room(self, request: Request) -> bool:
        """The request already has as many Via values as sipgate accepts:
        relayed with one more, the next hop (or sipgate itself, for the
        response) would have to refuse it."""
        return len(request.values("via")) >= self.edge.limits.max_vias

    def _reply_fits(self, request: Request) -> bool:
        """A stateless reply copies Via, From, To, Call-ID and CSeq: never
        build one that would copy more Vias or longer lines than the
        limits allow (it would reflect an oversized request)."""
        limits = self.edge.limits
        longest = limits.max_header_line
        vias = 0
        for key, _, value in request.headers:
            if key in _COPIED:
                if len(value) > longest:
                    return False
                if key == "via":
                    vias += 1 + value.count(",")
        return vias <= limits.max_vias or len(request.values("via")) <= limits.max_vias


_COPIED: Final = frozenset(_REQUIRED_FOR_REPLY)
# A relay that would carry more Via values than max_vias: answered 483
# (each Via is a hop), an ACK dropped.
_NO_VIA_ROOM: Final = Reject(483, "Too Many Hops", "too_many_hops", '399 sipgate "too many Via header field values"')
_DROP_NO_VIA_ROOM: Final = Drop("too_many_hops")


def _unicast(host: str) -> bool:
    """``host`` (from a Via) is not the limited broadcast, an unspecified
    or a multicast address (224.0.0.0/4, ff00::/8)."""
    if host == "255.255.255.255" or host == "0.0.0.0" or host == "::":
        return False
    first = host.partition(".")[0]
    if first.isdigit() and 224 <= int(first) <= 239 and host.count(".") == 3:
        return False
    return not (":" in host and host[:2].lower() == "ff")


def make_socket(listener: Listener, buffer_size: int, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking UDP socket with generous buffers.

    Bursts of thousands of datagrams must not overflow the kernel queue while
    the loop is busy; Linux caps the request at net.core.rmem_max/wmem_max.
    """
    family = socket.AF_INET6 if ":" in listener.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, buffer_size)
            except OSError:
                pass
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and listener.host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((listener.host, listener.port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# Datagrams read per readiness callback at most: a burst is answered in one
# wake-up, and timers, signals and the API still get the loop within ~1 ms.
READ_BATCH: Final = 64
# recv_batch(fd, count), send_batch(fd, items) and send_batch6(fd, items)
# from the C extension sipgate/transport/_mmsg.c (one recvmmsg / sendmmsg per
# batch, IPv4 and IPv6 sockets), or None: the compiled build only, as its
# freshness guard decides (sipgate.native).
_recv_batch: Any = None
_send_batch: Any = None
_send_batch6: Any = None
if native.status()[0]:
    try:
        from sipgate.transport._mmsg import recv_batch as _recv_batch  # type: ignore[no-redef,import-not-found]
        from sipgate.transport._mmsg import send_batch as _send_batch  # type: ignore[no-redef,import-not-found]
        from sipgate.transport._mmsg import send_batch6 as _send_batch6  # type: ignore[no-redef,import-not-found]
    except ImportError:  # (a build from before the extension existed)
        _recv_batch = _send_batch = _send_batch6 = None
# While a batch read with recvmmsg is handled, replies and relays wait in a
# list and go out with one sendmmsg every SEND_FLUSH datagrams and at the
# end of the batch: a reply waits for at most SEND_FLUSH - 1 others.
SEND_FLUSH: Final = 16
# Datagrams held while the socket's send buffer is full (EAGAIN) at most;
# beyond it a datagram is dropped and counted, as the kernel would drop it.
SEND_BACKLOG: Final = 10_000


class SocketTransport:
    """The listener's socket served straight from the event loop's reader
    callback: ``recvfrom`` until the queue is empty (at most READ_BATCH per
    wake-up) and ``sendto`` at once, falling back to a bounded backlog that
    the writer callback flushes when the send buffer is full.

    It replaces the loop's datagram transport for the SIP listeners: under
    uvloop that transport converts each peer address to a tuple and back
    again per datagram and takes one loop iteration per datagram, ~2 µs of
    a ~10 µs floor per datagram (benchmarks/bench_floor.py).  It offers what
    EdgeProtocol and the server use of a DatagramTransport: ``sendto``,
    ``close``, ``is_closing``, ``get_extra_info``.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, protocol: EdgeProtocol) -> None:
        self.loop = loop
        self.sock = sock
        self.fd = sock.fileno()
        self.protocol = protocol
        self.backlog: list[tuple[bytes, Any]] = []
        self.closed = False
        self.dropped = 0
        self._recvfrom = sock.recvfrom
        self._sendto = sock.sendto
        # One recvmmsg / sendmmsg per batch where the extension is built.
        family = sock.family
        self.batch: Any = _recv_batch if family == socket.AF_INET or family == socket.AF_INET6 else None
        self.send_batch: Any = None
        if self.batch is not None:
            self.send_batch = _send_batch if family == socket.AF_INET else _send_batch6
        self.collecting = False  # (sends wait in pending: see _read_batches)
        self.pending: list[tuple[bytes, Any]] = []

    def start(self) -> None:
        self.protocol.connection_made(self)  # type: ignore[arg-type]
        self.loop.add_reader(self.fd, self.readable)

    def readable(self) -> None:
        self.read(READ_BATCH)

    def drain(self, limit: int = 100_000) -> int:
        """Handle every datagram already waiting in the socket (shutdown:
        what arrived before SIGTERM is answered, not lost); returns how many."""
        return self.read(limit)

    def read(self, limit: int) -> int:
        """Handle the datagrams waiting in the socket, at most ``limit``;
        returns how many."""
        if self.batch is not None:
            return self._read_batches(limit)
        recvfrom = self._recvfrom
        protocol = self.protocol
        handled = 0
        while handled < limit and not self.closed:
            try:
                data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                protocol.error_received(exc)
                break
            protocol.datagram_received(data, addr)
            handled += 1
        return handled

    def _read_batches(self, limit: int) -> int:
        """read() with one recvmmsg per batch of up to READ_BATCH datagrams:
        a batch shorter than asked for means the queue was empty, which
        also saves the recvfrom that would fail with EAGAIN."""
        recv_batch = self.batch
        fd = self.fd
        protocol = self.protocol
        handled = 0
        self.collecting = self.send_batch is not None
        try:
            while handled < limit and not self.closed:
                want = min(limit - handled, READ_BATCH)
                try:
                    batch = recv_batch(fd, want)
                except OSError as exc:
                    protocol.error_received(exc)
                    break
                for data, addr in batch:
                    if self.closed:
                        break
                    protocol.datagram_received(data, addr)
                    handled += 1
                self._flush()
                if len(batch) < want:
                    break
        finally:
            self.collecting = False
            self._flush()
        return handled

    def _flush(self) -> None:
        """Send what waits in pending, in order: sendmmsg for runs of IP
        literals of the socket's family, sendto for anything else, the
        backlog once the socket's buffer is full."""
        items = self.pending
        if not items:
            return
        self.pending = []
        send_batch = self.send_batch
        i = 0
        while i < len(items):
            if self.closed:
                return  # (the socket is gone, as for a sendto after close)
            if self.backlog:  # (behind what already waits, in order)
                for data, addr in items[i:]:
                    self._hold(data, addr)
                return
            try:
                sent = send_batch(self.fd, items[i:] if i else items)
            except (BlockingIOError, InterruptedError):  # (the buffer is full: the writer sends the rest)
                for data, addr in items[i:]:
                    self._hold(data, addr)
                self.loop.add_writer(self.fd, self.writable)
                return
            except OSError as exc:  # (the first one could not be sent)
                self.protocol.error_received(exc)
                i += 1
                continue
            if sent == 0:  # (not a literal send_batch takes: sendto resolves it)
                self._send_now(*items[i])
                i += 1
            i += sent

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if self.collecting:
            self.pending.append((data, addr))
            if len(self.pending) >= SEND_FLUSH:
                self._flush()
            return
        self._send_now(data, addr)

    def _send_now(self, data: bytes, addr: Any) -> None:
        if self.backlog:
            self._hold(data, addr)
            return
        try:
            self._sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            if not self.closed:
                self._hold(data, addr)
                self.loop.add_writer(self.fd, self.writable)
        except OSError as exc:
            self.protocol.error_received(exc)

    def _hold(self, data: bytes, addr: Any) -> None:
        if len(self.backlog) >= SEND_BACKLOG:
            self.dropped += 1
            self.protocol.edge.stats.send_errors += 1
            return
        self.backlog.append((data, addr))

    def writable(self) -> None:
        backlog = self.backlog
        sent = 0
        while sent < len(backlog):
            data, addr = backlog[sent]
            try:
                self._sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.protocol.error_received(exc)
            sent += 1
        del backlog[:sent]
        if not backlog:
            self.loop.remove_writer(self.fd)

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self.sock
        if name == "sockname":
            return self.sock.getsockname()
        return default

    def close(self) -> None:
        """Stop reading and writing (what the backlog still holds is lost,
        as a closing datagram transport loses it) and close the socket."""
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.fd)
        if self.backlog:
            self.loop.remove_writer(self.fd)
            self.backlog.clear()
        self.sock.close()


async def open_listener(edge: Edge, listener: Listener, reuse_port: bool = False,
                        sock: socket.socket | None = None) -> tuple[SocketTransport, EdgeProtocol]:
    """Bind ``listener`` (or use ``sock``, already bound for it) and serve
    it on the running loop.

    A port of 0 binds an ephemeral port; the returned protocol's
    ``listener`` then carries the real one.
    """
    if sock is None:
        sock = make_socket(listener, edge.config.socket_buffer, reuse_port)
    port = sock.getsockname()[1]
    if port != listener.port:
        listener = Listener(listener.host, port, listener.advertise, listener.default_trunk)
    protocol = EdgeProtocol(edge, listener)
    transport = SocketTransport(asyncio.get_running_loop(), sock, protocol)
    transport.start()
    return transport, protocol
