"""End to end with SIPp through pysipp: SIPp uac -> `sipgate serve` -> SIPp uas."""

from __future__ import annotations

import shutil

from helpers import ALLOWED, DEMO_DOMAIN, DENIED, metric
from sipgate import sippkit

if shutil.which("sipp") is None:  # bin/test installs it; never skip silently
    raise RuntimeError("sipp not found: run bin/test (installs Debian's sip-tester)")


def test_admitted_caller_completes_100_calls(sipgate_edge, pbx_port, tmp_path):
    edge = ("127.0.0.1", sipgate_edge.sip_port)
    uas = sippkit.run_uas(("127.0.0.1", pbx_port), "uas_no180", call_count=100, timeout=60, logdir=tmp_path / "uas")
    try:
        uac = sippkit.run_uac((ALLOWED, sippkit.free_udp_port(ALLOWED)), edge, "uac_trunk",
                              call_count=100, rate=50, limit=20, timeout=60,
                              keys={"trunk_domain": DEMO_DOMAIN}, logdir=tmp_path / "uac")
    finally:
        served = uas.wait(timeout=15)
    assert uac.successful_calls == 100, uac.describe()
    assert uac.failed_calls == 0, uac.describe()
    assert served.successful_calls == 100, served.describe()
    assert metric(sipgate_edge, "sipgate_decisions_total", '{reason="admitted",result="admit"}') == 100
    # ACK and BYE came back through sipgate (Record-Route) and were checked in-dialog.
    assert metric(sipgate_edge, "sipgate_decisions_total", '{reason="in_dialog",result="admit"}') == 200
    assert metric(sipgate_edge, "sipgate_internal_errors_total") == 0


def test_denied_caller_gets_403_and_pbx_sees_nothing(sipgate_edge, pbx_port, tmp_path):
    edge = ("127.0.0.1", sipgate_edge.sip_port)
    uas = sippkit.run_uas(("127.0.0.1", pbx_port), "uas_no180", timeout=60, trace_msg=True,
                          logdir=tmp_path / "uas")
    try:
        uac = sippkit.run_uac((DENIED, sippkit.free_udp_port(DENIED)), edge, "uac_403",
                              call_count=100, rate=100, limit=50, timeout=60,
                              keys={"trunk_domain": DEMO_DOMAIN}, logdir=tmp_path / "uac")
    finally:
        served = uas.stop()
    assert uac.successful_calls == 100, uac.describe()  # every INVITE got its 403
    assert uac.failed_calls == 0, uac.describe()
    assert served.received("INVITE") == [] and served.total_calls == 0, served.describe()
    assert metric(sipgate_edge, "sipgate_decisions_total", '{reason="forbidden",result="reject"}') == 100
    # Every ACK (of those 403s) dropped unparsed: the source is admitted by no trunk.
    assert metric(sipgate_edge, "sipgate_decisions_total", '{reason="forbidden",result="drop"}') == 100
    assert metric(sipgate_edge, "sipgate_relayed_requests_total", '{direction="to_pbx"}') == 0


def test_quick_start_builtin_scenarios(sipgate_edge, pbx_port, tmp_path):
    """The README's demo: SIPp's built-in uas and uac, addressed to the edge's IP."""
    edge = ("127.0.0.1", sipgate_edge.sip_port)
    uas = sippkit.run_uas(("127.0.0.1", pbx_port), "uas", call_count=20, timeout=60, logdir=tmp_path / "uas")
    try:
        ok = sippkit.run_uac((ALLOWED, sippkit.free_udp_port(ALLOWED)), edge, "uac",
                             call_count=20, rate=20, timeout=60, logdir=tmp_path / "ok")
        no = sippkit.run_uac((DENIED, sippkit.free_udp_port(DENIED)), edge, "uac",
                             call_count=5, rate=20, timeout=30, recv_timeout_ms=2000,
                             logdir=tmp_path / "no")
    finally:
        served = uas.wait(timeout=15)
    assert ok.successful_calls == 20 and ok.failed_calls == 0, ok.describe()
    assert served.successful_calls == 20, served.describe()
    # The built-in uac does not expect a 403: every call fails, none reaches the PBX.
    assert no.successful_calls == 0 and no.failed_calls == 5, no.describe()
    assert metric(sipgate_edge, "sipgate_decisions_total", '{reason="forbidden",result="reject"}') == 5
