"""The flood defence (sipgate.flood.FloodGuard) on its own, with a fake clock.

The end-to-end tests (a real `sipgate serve`, SIPp and raw sockets) are in
test_flood_e2e.py.
"""

from __future__ import annotations

import tracemalloc

from hypothesis import given, settings
from hypothesis import strategies as st

from sipgate.flood import FloodGuard


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard(clock: Clock, **kw) -> tuple[FloodGuard, list]:
    events: list = []
    g = FloodGuard(clock=clock, wall=lambda: 0.0,
                   on_ban=lambda s, until, n: events.append(("ban", s, n)),
                   on_unban=lambda s: events.append(("unban", s)), **kw)
    return g, events


def test_density_plus_one_rejections_in_the_window_start_a_ban():
    clock = Clock()
    g, events = guard(clock, density=30, window=2.0, ban_seconds=60.0)
    for _ in range(30):
        assert not g.rejected("192.0.2.1")
        clock.now += 0.01
    assert not g.is_banned("192.0.2.1")
    assert g.rejected("192.0.2.1")  # the 31st
    assert g.is_banned("192.0.2.1")
    assert events == [("ban", "192.0.2.1", 31)]
    assert g.bans == 1
    # Other sources are not affected.
    assert not g.is_banned("192.0.2.2")


def test_a_ban_runs_out_and_the_source_may_try_again():
    clock = Clock()
    g, events = guard(clock, density=3, window=1.0, ban_seconds=10.0)
    for _ in range(4):
        g.rejected("198.51.100.7")
    assert g.is_banned("198.51.100.7")
    clock.now += 9.9
    assert g.is_banned("198.51.100.7")
    clock.now += 0.2
    assert not g.is_banned("198.51.100.7")
    assert events[-1] == ("unban", "198.51.100.7")
    assert "198.51.100.7" not in g.banned
    # A fresh window: three more rejections do not ban it again.
    for _ in range(3):
        assert not g.rejected("198.51.100.7")


def test_sweep_ends_bans_that_ran_out_and_forgets_old_windows():
    clock = Clock()
    g, events = guard(clock, density=2, window=1.0, ban_seconds=5.0)
    for _ in range(3):
        g.rejected("203.0.113.1")
    g.rejected("203.0.113.2")
    assert g.sweep() == 1 and g.tracked == 1
    clock.now += 1.5
    assert g.sweep() == 1 and g.tracked == 0  # 203.0.113.2's window is over
    clock.now += 4.0
    assert g.sweep() == 0
    assert ("unban", "203.0.113.1") in events


def test_exempt_sources_are_never_banned():
    clock = Clock()
    admitted = {"127.0.0.2"}
    g, events = guard(clock, density=2, window=10.0, exempt=admitted.__contains__)
    for _ in range(100):
        assert not g.rejected("127.0.0.2")
    assert not g.banned and not events
    for _ in range(3):
        g.rejected("127.0.0.3")
    assert g.is_banned("127.0.0.3")


def test_tracked_sources_are_bounded_oldest_first():
    clock = Clock()
    g, _ = guard(clock, density=5, window=60.0, max_sources=100)
    for i in range(10_000):
        g.rejected(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
    assert g.tracked == 100
    # The youngest windows are the ones kept.
    assert "10.0.39.15" in g._windows and "10.0.0.0" not in g._windows


def test_bans_are_bounded_too():
    clock = Clock()
    g, events = guard(clock, density=1, window=60.0, ban_seconds=60.0, max_sources=16)
    for i in range(40):
        source = f"10.0.0.{i}"
        g.rejected(source)
        g.rejected(source)
        clock.now += 0.001
    assert len(g.banned) == 16
    assert sum(1 for e in events if e[0] == "ban") == 40
    # The bans ending first were released to make room, and said so.
    assert ("unban", "10.0.0.0") in events and "10.0.0.39" in g.banned


def test_memory_stays_flat_under_a_spoofed_source_flood():
    clock = Clock()
    g, _ = guard(clock, density=30, window=2.0, max_sources=1000)

    def flood(start: int, n: int) -> None:
        for i in range(start, start + n):
            g.rejected(f"{i >> 24 & 255}.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")

    flood(0, 5_000)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        flood(5_000, 100_000)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert g.tracked == 1000
    # What is held is the 1,000 windows kept (~230 bytes each: the key, the
    # window, the OrderedDict's node), not ~100k entries' worth (>10 MB).
    assert after - before < 1000 * 300, after - before


def test_configure_shrinks_the_bound_and_keeps_bans():
    clock = Clock()
    g, _ = guard(clock, density=1, window=60.0)
    for i in range(50):
        g.rejected(f"10.1.0.{i}")
    g.rejected("10.1.0.49")
    assert g.is_banned("10.1.0.49")
    g.configure(density=5, window=1.0, ban_seconds=1.0, max_sources=16)
    assert g.tracked <= 16 and g.is_banned("10.1.0.49")


# -- properties against a plain description of the rule ---------------------

# A schedule: (source index, seconds since the previous rejection).
schedules = st.lists(st.tuples(st.integers(0, 3), st.floats(0.0, 1.5, allow_nan=False)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(schedules, st.integers(1, 6), st.floats(0.2, 3.0))
def test_no_ban_without_density_plus_one_rejections_inside_one_window(schedule, density, window):
    """Safety: a source is banned only if some density + 1 of its rejections
    fall within less than ``window`` seconds (checked on the full history,
    with a sliding window, which the fixed windows can only be stricter than)."""
    clock = Clock()
    g, events = guard(clock, density=density, window=window, ban_seconds=1e9)
    times: dict[int, list[float]] = {}
    for source, gap in schedule:
        clock.now += gap
        name = f"192.0.2.{source}"
        if g.is_banned(name):
            continue
        times.setdefault(source, []).append(clock.now)
        banned = g.rejected(name)
        history = times[source]
        if banned:
            recent = history[-(density + 1):]
            assert len(recent) == density + 1 and recent[-1] - recent[0] < window


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.floats(0.5, 5.0), st.floats(0.0, 0.99))
def test_a_fresh_source_over_the_density_inside_one_window_is_banned(density, window, spread):
    """Liveness: density + 1 rejections from a source not seen before, all
    inside less than ``window`` seconds, start a ban on the last one."""
    clock = Clock()
    g, _ = guard(clock, density=density, window=window)
    step = window * spread / density
    results = []
    for _ in range(density + 1):
        results.append(g.rejected("198.51.100.1"))
        clock.now += step
    assert results == [False] * density + [True]
