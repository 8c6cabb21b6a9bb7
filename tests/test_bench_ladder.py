"""The benchmark's side-by-side ladders (benchmarks/bench_sip.py): every
entrant climbs as it would alone, and the rates interleave in ABBA order."""

import argparse
import sys
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_sip  # noqa: E402

STEPS = [1000, 2000, 3000, 5000, 8000]


def entrant(cap: int, flaky: frozenset, calls: list, name: str):
    """A step passes up to ``cap`` calls/s; the first try of a rate in
    ``flaky`` fails whatever the rate (a stall of the shared machine)."""
    tried: set[int] = set()

    def run(rate: int) -> bench_sip.Step:
        calls.append((name, rate))
        first = rate not in tried
        tried.add(rate)
        ok = rate <= cap and not (first and rate in flaky)
        return bench_sip.Step("denied", rate, rate, [], 0.0, ok, "" if ok else "failed")
    return run


def reference_ladder(steps: list[int], run):
    """One ladder, the plain way: up while a step passes (a failing step
    gets one more try), and when the first step fails, down through the
    fall-back rates below it until one passes."""
    done, best, fail = [], None, None
    for rate in steps:
        st = run(rate)
        done.append(st)
        if not st.ok:
            st = run(rate)
            done.append(st)
        if not st.ok:
            fail = st
            break
        best = st
    if best is None:
        for rate in (r for r in bench_sip.FALLBACK_STEPS if r < steps[0]):
            st = run(rate)
            done.append(st)
            if st.ok:
                best = st
                break
    return best, fail, done


def outline(result):
    best, fail, done = result
    return (best and best.rate, fail and fail.rate, [(s.rate, s.ok) for s in done])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 150, 500, 1000, 2500, 3000, 7000, 8000, 9000]),
                          st.frozensets(st.sampled_from(STEPS + bench_sip.FALLBACK_STEPS))),
                min_size=1, max_size=3))
def test_each_entrant_climbs_as_it_would_alone_in_abba_order(tmp_path_factory, specs):
    bench = bench_sip.Bench(argparse.Namespace(step_seconds=1.0), tmp_path_factory.mktemp("ladder"))
    calls: list = []
    together = bench.alternated_ladders(
        STEPS, [(f"e{i}", entrant(cap, flaky, calls, f"e{i}")) for i, (cap, flaky) in enumerate(specs)], "test")
    for i, (cap, flaky) in enumerate(specs):
        alone = reference_ladder(STEPS, entrant(cap, flaky, [], "alone"))
        assert outline(together[i]) == outline(alone)
        assert outline(bench.ladder(STEPS, entrant(cap, flaky, [], "one"), "one")) == outline(alone)
    # Before the fall-backs: rate by rate, entrants in order, then reversed.
    climbing = [(name, rate) for name, rate in calls if rate >= STEPS[0]]
    seen_rates = [rate for _, rate in climbing]
    assert seen_rates == sorted(seen_rates)
    for n, rate in enumerate(sorted(set(seen_rates))):
        names = [name for name, r in climbing if r == rate]
        order = [f"e{i}" for i in range(len(specs))]
        expected = [x for x in (order[::-1] if n % 2 else order) for _ in range(names.count(x))]
        assert names == expected
