"""Every Prometheus metric sipgate exports, defined in one place.

The receive path counts into plain Python integers on an ``EdgeStats``
object (an attribute increment costs tens of nanoseconds; a
prometheus_client ``Counter.inc()`` with its lock, or a ``.labels()`` lookup,
costs around a microsecond).  ``EdgeCollector`` turns those integers into
metric families when Prometheus scrapes.  The event loop is the only writer;
a scrape reads from another thread and at worst sees a count one datagram
old, which Prometheus tolerates by design.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["DECISION_BUCKETS", "EdgeCollector", "EdgeStats", "LatencyHistogram", "make_registry"]

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
        self.counts[bisect_left(self.bounds, seconds)] += 1
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
        self.decisions: dict[tuple[str, str], int] = dict.fromkeys(DECISION_KINDS, 0)
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
        self.decisions[key] = self.decisions.get(key, 0) + 1


class EdgeCollector(Collector):
    """Exports an ``EdgeStats`` as Prometheus metric families."""

    def __init__(self, stats: EdgeStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats
        decisions = CounterMetricFamily(
            "sipgate_decisions", "SIP requests judged by the edge, by result and reason.",
            labels=["result", "reason"])
        for (result, reason), n in list(s.decisions.items()):
            decisions.add_metric([result, reason], n)
        yield decisions

        buckets = s.latency.cumulative()
        hist = HistogramMetricFamily(
            "sipgate_decision_duration_seconds",
            "Time from datagram received to reply or relay sent.")
        hist.add_metric([], buckets, s.latency.total)
        yield hist

        yield _counter("sipgate_datagrams_received", "UDP datagrams received.", s.datagrams_received)
        yield _counter("sipgate_datagrams_sent", "UDP datagrams sent (replies and relays).", s.datagrams_sent)
        yield _counter("sipgate_received_bytes", "Bytes of UDP payload received.", s.bytes_received)
        for name, table, help_text in (
            ("sipgate_relayed_requests", s.relayed_requests, "SIP requests relayed, by direction."),
            ("sipgate_relayed_responses", s.relayed_responses, "SIP responses relayed, by direction."),
        ):
            family = CounterMetricFamily(name, help_text, labels=["direction"])
            for direction, n in table.items():
                family.add_metric([direction], n)
            yield family
        yield _counter("sipgate_parse_errors", "Datagrams that did not parse as SIP.", s.parse_errors)
        yield _counter("sipgate_internal_errors",
                       "Datagrams whose handling raised unexpectedly (a bug: alert on it).", s.internal_errors)
        yield _counter("sipgate_send_errors",
                       "Errors reported by the UDP socket (e.g. ICMP port unreachable from the PBX).",
                       s.send_errors)
        yield _counter("sipgate_keepalives", "Keepalive datagrams (CRLF) received and ignored.", s.keepalives)
        yield _counter("sipgate_table_reload_failures",
                       "Table compilations that failed (the previous table stays in force).",
                       s.table_reload_failures)
        yield _gauge("sipgate_table_generation", "Store revision the admission table was compiled from.",
                     s.table_generation)
        yield _gauge("sipgate_table_entries", "IP access control entries in the admission table.",
                     s.table_entries)
        yield _gauge("sipgate_table_trunks", "Trunks in the admission table.", s.table_trunks)
        yield _gauge("sipgate_table_compiled_timestamp_seconds",
                     "Unix time the admission table in force was swapped in.", s.table_compiled_at)
        yield _gauge("sipgate_table_compile_duration_seconds",
                     "How long compiling the admission table in force took.", s.table_compile_seconds)
        yield _gauge("sipgate_start_time_seconds", "Unix time the process started.", s.started_at)
        yield _gauge("sipgate_ready", "1 when the admission table is compiled and every SIP listener bound.",
                     s.ready)
        yield _gauge("sipgate_pbx_reachable",
                     "0 when the last OPTIONS ping to the PBX was refused (port closed), else 1.",
                     s.pbx_reachable)
        yield _counter("sipgate_pbx_unreachable", "OPTIONS pings to the PBX refused (ICMP port unreachable).",
                       s.pbx_unreachable)
        yield _gauge("sipgate_store_up",
                     "0 while the store cannot be read (the last good table keeps enforcing), else 1.",
                     s.store_up)
        yield _gauge("sipgate_store_revision", "Latest store revision the edge has read.", s.store_revision)
        hist = HistogramMetricFamily(
            "sipgate_change_enforcement_seconds",
            "From an API write's commit to the admission table compiled from it being in force.")
        hist.add_metric([], s.enforcement.cumulative(), s.enforcement.total)
        yield hist

        flood = s.flood
        yield _gauge("sipgate_flood_bans_active", "Sources banned by the flood defence right now.",
                     len(flood.banned) if flood is not None else 0)
        yield _gauge("sipgate_flood_tracked_sources", "Sources with a live rejection window (bounded).",
                     flood.tracked if flood is not None else 0)
        yield _counter("sipgate_flood_bans", "Flood bans started.", flood.bans if flood is not None else 0)
        yield _counter("sipgate_flood_dropped_datagrams",
                       "Datagrams from banned sources dropped unanswered.",
                       flood.dropped if flood is not None else 0)
        deny = s.deny_log
        yield _counter("sipgate_deny_log_lines", "Lines written to the deny log (denials, summaries, bans).",
                       deny.lines if deny is not None else 0)
        yield _counter("sipgate_deny_log_suppressed",
                       "Denials not written to the deny log by its per-source rate limit.",
                       deny.suppressed if deny is not None else 0)

        requests = CounterMetricFamily("sipgate_api_requests", "API requests, by method, route and status code.",
                                       labels=["method", "route", "code"])
        for (method, route, code), n in list(s.api_requests.items()):
            requests.add_metric([method, route, code], n)
        yield requests
        hist = HistogramMetricFamily("sipgate_api_request_duration_seconds",
                                     "API request duration, by route.", labels=["route"])
        for route, latency in list(s.api_latency.items()):
            hist.add_metric([route], latency.cumulative(), latency.total)
        yield hist


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def make_registry(stats: EdgeStats) -> CollectorRegistry:
    """A registry exporting ``stats`` plus the process and platform metrics."""
    from prometheus_client import PlatformCollector, ProcessCollector

    registry = CollectorRegistry()
    registry.register(EdgeCollector(stats))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry
