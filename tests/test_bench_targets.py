"""The benchmark report's notes on missed targets (benchmarks/bench_sip.py):
each missed target gets one line naming what bounded it in the run (SIPp
alone's ceiling, the filter, the latency rounds) and what to try next,
and a met target gets none."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_sip  # noqa: E402


def step(kind: str, rate: int, cpu_us: float) -> bench_sip.Step:
    """A passing step of ``rate`` calls over one second, ``cpu_us`` of filter CPU per call."""
    run = bench_sip.SippRun("uac", {}, rate, rate, 0, 0, 1.0, 0, Path("."))
    return bench_sip.Step(kind, rate, rate, [run], cpu_us * rate / 1e6, True)


def result(name: str, size: int, denied: tuple[int, float], admitted: tuple[int, float],
           p99: float, rounds: list[float], profile: list | None = None) -> dict:
    r = {"filter": name, "size": size,
         "denied": (step("denied", *denied), None, []),
         "admitted": (step("admitted", *admitted), None, []),
         "capture": {("denied", 1000): {"p50": p99 / 3, "p99": p99,
                                         "rounds": [(v / 3, v, v * 2) for v in rounds]}}}
    if profile is not None:
        r["profile"] = profile
    return r


PROFILE = {"kind": "denied", "rate": 40000, "ok": True, "samples": 200,
           "own": {"sendmmsg (libc.so.6)": 100, "epoll_pwait (libc.so.6)": 40,
                   "Py_DECREF (object.h)": 30, "scan (sipgate/sip/_walk.c)": 20, "0x7f00 (libc.so.6)": 10},
           "inclusive": {}}


def ceiling(denied: int, admitted: int, p99: float) -> dict:
    return {"denied": (step("denied", denied, 8.0), None, []),
            "admitted": (step("admitted", admitted, 0.0), None, []),
            "capture": {"p99": p99}}


def test_every_target_met_gives_no_note():
    results = [result("sipgate", 10, (60000, 9.0), (15000, 40.0), 150, [150] * 7, [PROFILE]),
               result("kamailio", 10, (60000, 13.0), (15000, 50.0), 160, [160] * 7)]
    assert bench_sip.missed_notes(results, {10: ceiling(60000, 15000, 100)}) == []


def test_a_rate_that_sipp_alone_could_not_send_is_laid_on_sipp():
    results = [result("sipgate", 10, (40000, 12.0), (12000, 49.0), 300, [300] * 7, [PROFILE]),
               result("kamailio", 10, (40000, 18.0), (14000, 71.0), 320, [320] * 7)]
    notes = bench_sip.missed_notes(results, {10: ceiling(40000, 12000, 200)})
    assert len(notes) == 2, notes
    denied, admitted = notes
    assert denied.startswith("denied at 10 entries: sipgate 40,000/s against the target 60,000/s")
    assert "SIPp alone passed 40,000/s here, no more than sipgate" in denied
    assert "the load generator on its one core, not the filter" in denied
    assert "next to try: more load than SIPp sends here (a faster machine, or callers on more cores)" in denied
    assert "a step SIPp alone failed" not in denied  # (Kamailio's 40,000 is no more than sipgate's)
    assert admitted.startswith("admitted at 10 entries: sipgate 12,000/s against Kamailio's 14,000/s")
    assert "Kamailio's 14,000 is a step SIPp alone failed" in admitted


def test_a_rate_below_sipp_alone_points_at_the_profile():
    results = [result("sipgate", 10, (30000, 12.0), (15000, 40.0), 300, [300] * 7, [PROFILE]),
               result("kamailio", 10, (20000, 18.0), (15000, 50.0), 320, [320] * 7)]
    notes = bench_sip.missed_notes(results, {10: ceiling(40000, 15000, 200)})
    assert len(notes) == 1, notes
    assert "SIPp alone passed 40,000/s, more than sipgate: the filter is the bound" in notes[0]
    # The top self shares, then the largest one outside the system calls and the loop's wait.
    assert "`sendmmsg (libc.so.6)` 50%, `epoll_pwait (libc.so.6)` 20%, `Py_DECREF (object.h)` 15%" in notes[0]
    assert "next to try: sipgate's own largest share, `Py_DECREF (object.h)` (15% of the samples)" in notes[0]


def test_cpu_and_latency_misses_give_ratio_rounds_and_responder():
    results = [result("sipgate", 10000, (60000, 20.0), (15000, 60.0), 400,
                      [300, 500, 400, 450, 350, 420, 380], [PROFILE]),
               result("kamailio", 10000, (60000, 15.0), (15000, 50.0), 360,
                      [310, 400, 390, 440, 360, 410, 380])]
    notes = bench_sip.missed_notes(results, {10000: ceiling(60000, 15000, 210)})
    cpu = [n for n in notes if n.startswith("CPU per")]
    assert [n.split(":")[0] for n in cpu] == ["CPU per denied call at 10,000 entries",
                                             "CPU per admitted call at 10,000 entries"]
    assert "sipgate 20 µs against Kamailio's 15 µs (1.33x)" in cpu[0]
    # No admitted profile in the run: said so rather than a denied profile passed off as one.
    assert "no py-spy profile in this run" in cpu[1]
    (p99,) = [n for n in notes if n.startswith("denied p99")]
    assert "sipgate 400 µs against Kamailio's 360 µs (1.11x)" in p99
    assert "lower in 3 of 7 round pairs" in p99  # 300 <= 310, 350 <= 360 and a tie, 380 <= 380
    assert "the C responder's p99 210 µs" in p99


def test_no_ceiling_measured_is_said_so():
    results = [result("sipgate", 10, (30000, 12.0), (15000, 40.0), 300, [300] * 7),
               result("kamailio", 10, (40000, 18.0), (15000, 50.0), 320, [320] * 7)]
    (note,) = bench_sip.missed_notes(results, None)
    assert "no SIPp-alone ceiling measured" in note
    assert "no py-spy profile in this run" in note


def test_a_note_for_every_missed_row_and_none_for_met_ones():
    """The report's table rows and its notes come from the same verdicts:
    each kind of miss in the table has its note, a met table has none."""
    for s_denied, s_cpu, s_adm, s_p99 in [(60000, 9.0, 15000, 150), (50000, 9.0, 15000, 150),
                                          (60000, 20.0, 15000, 150), (60000, 9.0, 12000, 150),
                                          (60000, 9.0, 15000, 400), (40000, 20.0, 12000, 400)]:
        results = [result("sipgate", 10, (s_denied, s_cpu), (s_adm, 40.0), s_p99, [s_p99] * 7),
                   result("kamailio", 10, (50000, 13.0), (14000, 50.0), 300, [300] * 7)]
        _, s, k, alone = bench_sip.side_by_side(results, None)[0]
        missed = {(v.kind, v.measure) for v in bench_sip.verdicts(s, k, alone) if v.ok is False}
        noted = {("denied", "rate") if n.startswith("denied at") else ("admitted", "rate")
                 if n.startswith("admitted at") else ("denied", "cpu") if n.startswith("CPU per denied")
                 else ("denied", "p99") if n.startswith("denied p99") else ("?", n)
                 for n in bench_sip.missed_notes(results, None)}
        assert noted == missed, (s_denied, s_cpu, s_adm, s_p99)


def test_a_figure_missing_from_the_run_is_neither_met_nor_noted():
    results = [result("sipgate", 10, (60000, 9.0), (15000, 40.0), 150, [150] * 7),
               result("kamailio", 10, (50000, 13.0), (14000, 50.0), 300, [300] * 7)]
    results[0]["capture"] = {}
    _, s, k, alone = bench_sip.side_by_side(results, None)[0]
    (p99,) = [v for v in bench_sip.verdicts(s, k, alone) if v.measure == "p99"]
    assert p99.ok is None and p99.ours is None
    assert bench_sip.missed_notes(results, None) == []


def test_the_spread_ladder_counts_for_the_rate_and_is_named():
    """A denied rate passed only with two callers on every core meets the
    rate targets, and the row says where; CPU stays the pinned ladder's."""
    results = [result("sipgate", 10, (50000, 9.0), (15000, 40.0), 150, [150] * 7),
               result("kamailio", 10, (50000, 13.0), (14000, 50.0), 300, [300] * 7)]
    results[0]["denied_spread"] = (step("denied", 60000, 7.5), None, [])
    results[1]["denied_spread"] = (step("denied", 50000, 12.0), None, [])
    alone = ceiling(50000, 15000, 100)
    alone["denied_spread"] = (step("denied", 70000, 5.0), None, [])
    _, s, k, a = bench_sip.side_by_side(results, {10: alone})[0]
    rows = {(v.kind, v.measure, v.target): v for v in bench_sip.verdicts(s, k, a)}
    target = rows[("denied", "rate", "denied: 60,000 calls/s, 0 failed")]
    assert target.ok and target.ours == 60000
    assert "sipgate's rate with two callers on every core" in target.ratio
    assert "SIPp alone: 70,000/s with two callers on every core" in target.ratio
    assert rows[("denied", "cpu", "CPU per denied call < Kamailio's")].ours == 9.0
    assert bench_sip.missed_notes(results, {10: alone}) == []
    # Without it, the same run misses 60,000, and the note names the layout SIPp alone reached 70,000 in.
    del results[0]["denied_spread"]
    (note,) = bench_sip.missed_notes(results, {10: alone})
    assert note.startswith("denied at 10 entries: sipgate 50,000/s against the target 60,000/s")
    assert "SIPp alone passed 70,000/s, more than sipgate: the filter is the bound" in note


def test_sipp_alone_equal_in_both_layouts_is_said_so():
    results = [result("sipgate", 10, (50000, 9.0), (15000, 40.0), 150, [150] * 7),
               result("kamailio", 10, (50000, 13.0), (15000, 50.0), 300, [300] * 7)]
    results[0]["denied_spread"] = (step("denied", 50000, 7.5), None, [])
    alone = ceiling(50000, 15000, 100)
    alone["denied_spread"] = (step("denied", 50000, 5.0), None, [])
    (note,) = bench_sip.missed_notes(results, {10: alone})
    assert "the load generator with one caller and with two on every core, not the filter" in note
    assert "(a faster machine: two callers on every core were in this run)" in note
