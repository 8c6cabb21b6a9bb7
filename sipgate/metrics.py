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

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["DECISION_BUCKETS", "EdgeCollector", "EdgeStats", "LatencyHistogram", "serve_metrics"]

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


def _counter(name: str, help_text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, help_text, value=value)


def _gauge(name: str, help_text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value)


def serve_metrics(stats: EdgeStats, host: str, port: int) -> tuple[CollectorRegistry, Any]:
    """Expose ``stats`` (plus process metrics) on ``http://host:port/metrics``.

    Returns the registry and the server handle (``.shutdown()`` stops it).
    """
    from prometheus_client import ProcessCollector, PlatformCollector

    registry = CollectorRegistry()
    registry.register(EdgeCollector(stats))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return registry, server
