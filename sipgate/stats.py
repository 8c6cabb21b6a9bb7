"""The edge's counters and histograms as plain numbers (sipgate.metrics
exports them).

The receive path counts into an ``EdgeStats`` on every datagram, so this
module is compiled with the receive path (sipgate.native): there an
increment is a store into a C struct field and ``observe`` a native call,
where as Python each was an attribute lookup or an interpreted frame.  The
event loop is the only writer; a scrape reads from another thread and at
worst sees a count one datagram old.
"""

from __future__ import annotations

import time
from typing import Any

from sipgate._ints import i64

__all__ = ["API_BUCKETS", "DECISION_BUCKETS", "DECISION_KINDS", "ENFORCEMENT_BUCKETS", "EdgeStats",
           "LatencyHistogram"]

# Decision latency buckets, seconds: 5 µs to 10 ms.  A Python edge decides in
# tens of microseconds; the low buckets resolve that, the high ones show
# event-loop stalls.
DECISION_BUCKETS: tuple[float, ...] = (
    5e-6, 10e-6, 20e-6, 35e-6, 50e-6, 75e-6, 100e-6, 150e-6, 250e-6, 500e-6,
    1e-3, 2.5e-3, 5e-3, 10e-3,
)

# (result, reason) pairs the edge can report; pre-seeded so every series
# exists (with 0) from the first scrape and dashboards never see gaps.
DECISION_KINDS: tuple[tuple[str, str], ...] = (
    ("admit", "admitted"),
    ("admit", "in_dialog"),
    ("reject", "forbidden"),
    ("reject", "no_trunk"),
    ("reject", "too_many_hops"),
    ("reject", "bad_extension"),
    ("reject", "bad_request"),
    ("reject", "unroutable"),
    ("answer", "keepalive"),
    ("drop", "ack_absorbed"),
    ("drop", "forbidden"),
    ("drop", "no_trunk"),
    ("drop", "bad_request"),
    ("drop", "not_ours"),
    ("drop", "too_many_hops"),
)


# Change -> enforcement (an API write's commit to the new table in force):
# milliseconds when patched, seconds for a full compile of a large table.
ENFORCEMENT_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)
# API request duration: store writes commit and wait for the table swap.
API_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)


class LatencyHistogram:
    """A cumulative-on-export histogram with fixed bucket bounds."""

    __slots__ = ("bounds", "counts", "total", "count")

    def __init__(self, bounds: tuple[float, ...] = DECISION_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # last slot: +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        """Record one observation."""
        # bisect_left(bounds, seconds) as a loop: a few compiled compares
        # (a decision falls in the first buckets) instead of a call into
        # the bisect module, whose code is cold after an idle spell.
        bounds = self.bounds
        n: i64 = len(bounds)
        i: i64 = 0  # (machine integers: no tagged-int checks in the loop)
        while i < n and bounds[i] < seconds:
            i += 1
        self.counts[i] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus-style cumulative buckets, ending with +Inf."""
        out = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile ``q`` (for logs/tests)."""
        if not self.count:
            return 0.0
        target = q * self.count
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts):
            running += n
            if running >= target:
                return bound
        return float("inf")


class EdgeStats:
    """Counters and gauges of the SIP edge, as plain numbers."""

    def __init__(self) -> None:
        self.counted: dict[tuple[str, str], int] = dict.fromkeys(DECISION_KINDS, 0)
        # The fast path's denials, each a field of the compiled object (an
        # increment, where decision() hashes a tuple and rewrites a dict
        # entry: code and data that are cold after an idle spell).
        # ``decisions`` adds them in.
        self.forbidden_replies = 0  # ("reject", "forbidden")
        self.forbidden_drops = 0  # ("drop", "forbidden")
        self.absorbed_acks = 0  # ("drop", "ack_absorbed")
        self.latency = LatencyHistogram()
        self.datagrams_received = 0
        self.datagrams_sent = 0
        self.bytes_received = 0
        self.relayed_requests = {"to_pbx": 0, "from_pbx": 0}
        self.relayed_responses = {"to_pbx": 0, "from_pbx": 0}
        self.parse_errors = 0
        self.internal_errors = 0
        self.send_errors = 0
        self.keepalives = 0
        self.table_generation = 0
        self.table_entries = 0
        self.table_trunks = 0
        self.table_compiled_at = 0.0
        self.table_compile_seconds = 0.0
        self.table_reload_failures = 0
        self.started_at = time.time()
        # 1 once the table is compiled and every listener bound (/-/ready).
        self.ready = 0
        # The latest store revision the edge has read (the table lags it
        # while a compile runs; an alert watches the gap).
        self.store_revision = 0
        # 0 while the reloader cannot read the store (the last good table
        # keeps enforcing): sipgate_store_up.
        self.store_up = 1
        self.enforcement = LatencyHistogram(ENFORCEMENT_BUCKETS)
        # API writes answered before every worker and node had them in
        # force (one stopped or stuck past server.WORKER_ACK_TIMEOUT).
        self.enforce_timeouts = 0
        # --workers: workers the supervisor started again after one exited
        # (sipgate.workers.Slots, copied here by worker 0).
        self.worker_restarts = 0
        # (method, route template, status code) -> requests; route -> latency.
        self.api_requests: dict[tuple[str, str, str], int] = {}
        self.api_latency: dict[str, LatencyHistogram] = {}
        # sip.pbx_probe_interval: OPTIONS pings to the PBX (sipgate.pbxprobe).
        self.pbx_reachable = 1
        self.pbx_unreachable = 0
        # The flood guard and deny log in use (their own counters), if any.
        self.flood: Any = None
        self.deny_log: Any = None

    def api_request(self, method: str, route: str, code: int, seconds: float) -> None:
        """Count one API request and its duration."""
        key = (method, route, str(code))
        self.api_requests[key] = self.api_requests.get(key, 0) + 1
        hist = self.api_latency.get(route)
        if hist is None:
            hist = self.api_latency[route] = LatencyHistogram(API_BUCKETS)
        hist.observe(seconds)

    def decision(self, result: str, reason: str) -> None:
        """Count one decision (unknown pairs are added on first use)."""
        key = (result, reason)
        self.counted[key] = self.counted.get(key, 0) + 1

    @property
    def decisions(self) -> dict[tuple[str, str], int]:
        """Decisions by (result, reason): every DECISION_KINDS pair, and any
        other pair counted."""
        out = dict(self.counted)
        out[("reject", "forbidden")] += self.forbidden_replies
        out[("drop", "forbidden")] += self.forbidden_drops
        out[("drop", "ack_absorbed")] += self.absorbed_acks
        return out
