"""The edge's plain-number counters (sipgate.stats), compiled with the
receive path when there is a build: the same results as the sources, which
test_native runs this file on too."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipgate import native
from sipgate.metrics import EdgeCollector
from sipgate.stats import DECISION_BUCKETS, DECISION_KINDS, EdgeStats, LatencyHistogram

seconds = st.floats(min_value=0.0, max_value=60.0, allow_nan=False)


def reference_counts(bounds: tuple[float, ...], values: list[float]) -> list[int]:
    """Per bucket: the values no larger than its bound and larger than the
    previous one (Prometheus ``le``), the last bucket +Inf."""
    counts = [0] * (len(bounds) + 1)
    for v in values:
        for i, bound in enumerate(bounds):
            if v <= bound:
                counts[i] += 1
                break
        else:
            counts[-1] += 1
    return counts


@given(st.lists(seconds, max_size=200))
def test_histogram_matches_a_reference(values):
    hist = LatencyHistogram()
    for v in values:
        hist.observe(v)
    assert hist.counts == reference_counts(DECISION_BUCKETS, values)
    assert hist.count == len(values)
    assert hist.total == pytest.approx(sum(values))
    cumulative = hist.cumulative()
    assert [le for le, _ in cumulative] == [repr(b) for b in DECISION_BUCKETS] + ["+Inf"]
    running = 0
    for (_, n), c in zip(cumulative, reference_counts(DECISION_BUCKETS, values)):
        running += c
        assert n == running


@given(st.lists(seconds, min_size=1, max_size=200), st.floats(min_value=0.01, max_value=1.0))
def test_quantile_is_the_upper_bound_of_its_bucket(values, q):
    hist = LatencyHistogram((0.001, 0.01, 0.1, 1.0))
    for v in values:
        hist.observe(v)
    bound = hist.quantile(q)
    ordered = sorted(values)
    # At least a fraction q of the values lie at or below the bound, and
    # the bucket below it holds fewer.
    assert sum(1 for v in ordered if v <= bound) >= q * len(values)
    lower = [b for b in (0.0, 0.001, 0.01, 0.1, 1.0) if b < bound]
    if lower and lower[-1] > 0:
        assert sum(1 for v in ordered if v <= lower[-1]) < q * len(values)


def test_a_bound_itself_lands_in_its_own_bucket():
    hist = LatencyHistogram((1.0, 2.0))
    for v in (1.0, 2.0, 2.0000001):
        hist.observe(v)
    assert hist.counts == [1, 1, 1]
    assert LatencyHistogram().quantile(0.5) == 0.0


def test_decisions_count_known_and_new_pairs():
    stats = EdgeStats()
    assert set(stats.decisions) == set(DECISION_KINDS) and not any(stats.decisions.values())
    stats.decision("reject", "forbidden")
    stats.decision("reject", "forbidden")
    stats.decision("drop", "something_new")
    assert stats.decisions[("reject", "forbidden")] == 2
    assert stats.decisions[("drop", "something_new")] == 1
    # The fast path's own fields add into the same pairs.
    stats.forbidden_replies += 3
    stats.forbidden_drops += 1
    stats.absorbed_acks += 2
    decisions = stats.decisions
    assert decisions[("reject", "forbidden")] == 5 and decisions[("drop", "forbidden")] == 1
    assert decisions[("drop", "ack_absorbed")] == 2 and decisions[("drop", "something_new")] == 1
    assert sum(decisions.values()) == 2 + 1 + 3 + 1 + 2


def test_counters_take_the_types_the_server_writes():
    """The compiled class checks attribute types at run time: every value
    the server, the reloader and the PBX probe store must fit."""
    stats = EdgeStats()
    stats.ready = 1
    stats.store_revision = 12
    stats.store_up = 0
    stats.pbx_reachable = 0
    stats.table_generation = 3
    stats.table_entries = 10
    stats.table_trunks = 2
    stats.table_compiled_at = 1.5
    stats.table_compile_seconds = 0  # an int where a float is declared
    stats.flood = object()
    stats.deny_log = None
    stats.api_request("GET", "/v1/Trunks", 200, 0.002)
    stats.api_request("GET", "/v1/Trunks", 200, 0.004)
    assert stats.api_requests[("GET", "/v1/Trunks", "200")] == 2
    assert stats.api_latency["/v1/Trunks"].count == 2
    stats.flood = None
    families = {m.name: m for m in EdgeCollector(stats).collect()}
    assert families["sipgate_ready"].samples[0].value == 1
    assert families["sipgate_table_compile_duration_seconds"].samples[0].value == 0


def test_compiled_with_the_receive_path_when_built():
    import sipgate.stats as stats_module

    compiled, _ = native.status()
    assert stats_module.__file__.endswith(".py") != compiled
