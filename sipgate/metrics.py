"""Every Prometheus metric sipgate exports, defined in one place.

The receive path counts into plain integers on an ``EdgeStats`` object
(sipgate.stats, compiled with the receive path: an increment is a struct
store, where a prometheus_client ``Counter.inc()`` with its lock, or a
``.labels()`` lookup, costs around a microsecond).  ``EdgeCollector`` turns
those integers into metric families when Prometheus scrapes.  The event loop
is the only writer; a scrape reads from another thread and at worst sees a
count one datagram old, which Prometheus tolerates by design.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from sipgate.stats import (
    API_BUCKETS,
    DECISION_BUCKETS,
    DECISION_KINDS,
    ENFORCEMENT_BUCKETS,
    EdgeStats,
    LatencyHistogram,
)

__all__ = ["API_BUCKETS", "DECISION_BUCKETS", "DECISION_KINDS", "ENFORCEMENT_BUCKETS", "EdgeCollector",
           "EdgeStats", "LatencyHistogram", "make_registry"]


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
            "Time from datagram received to reply or relay sent (or queued for its batch's sendmmsg).")
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
        yield _counter("sipgate_enforce_timeouts",
                       "API writes answered before every worker and node had them in force (one stopped or "
                       "stuck past the 5 s bound).", s.enforce_timeouts)
        yield _counter("sipgate_worker_restarts",
                       "--workers: workers started again after one exited (crashed, killed).", s.worker_restarts)
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
