"""Short load tests (issue 4): SIPp floods through a real `sipgate serve`, bounded.

The benchmark (`benchmarks/run`) steps rates up to find limits; these only
check, in a few seconds each, that sustained SIPp traffic at a modest rate
goes through the whole stack with 0 failed calls and the right answers:

* a denied flood (2,000 calls at 1,000/s from 127.0.0.3): every INVITE gets
  its 403, every ACK is absorbed, the PBX (a SIPp uas) sees no INVITE;
* admitted full calls (1,000 calls at 500/s from 127.0.0.2): uac -> sipgate
  -> uas, ACK and BYE back through sipgate by its Record-Route.

Loopback only; every SIPp agent is bounded by SIPp's -timeout and stopped
by PID (sippkit); sipgate is stopped by PID (helpers.Serving).
"""

from __future__ import annotations

import shutil

from helpers import ALLOWED, DEMO_DOMAIN, DENIED, metric
from sipgate import sippkit

BUFF = ["-buff_size", "4194304"]  # SIPp's default 64 KiB drops bursts

if shutil.which("sipp") is None:  # bin/test installs it; never skip silently
    raise RuntimeError("sipp not found: run bin/test (installs Debian's sip-tester)")


def test_denied_flood_2000_calls_at_1000_per_second(sipgate_edge, pbx_port, tmp_path):
    uas = sippkit.run_uas(("127.0.0.1", pbx_port), "uas_no180", timeout=60, trace_msg=True,
                          extra_args=BUFF, logdir=tmp_path / "uas")
    try:
        uac = sippkit.run_uac((DENIED, sippkit.free_udp_port(DENIED)), ("127.0.0.1", sipgate_edge.sip_port), "uac_403",
                              call_count=2000, rate=1000, limit=1000, timeout=40,
                              keys={"trunk_domain": DEMO_DOMAIN}, extra_args=BUFF, logdir=tmp_path / "uac")
    finally:
        served = uas.stop()
    assert uac.total_calls == 2000, uac.describe()
    assert uac.successful_calls == 2000, uac.describe()  # each one got its 403
    assert uac.failed_calls == 0, uac.describe()
    assert served.received("INVITE") == [] and served.total_calls == 0, served.describe()
    assert metric(sipgate_edge, "sipgate_decisions_total", '{reason="forbidden",result="reject"}') >= 2000
    # Their ACKs: dropped unparsed, the source being admitted by no trunk.
    assert metric(sipgate_edge, "sipgate_decisions_total", '{reason="forbidden",result="drop"}') >= 2000
    # Neither an INVITE nor an ACK of the 403s went on to the PBX.
    assert metric(sipgate_edge, "sipgate_relayed_requests_total", '{direction="to_pbx"}') == 0
    assert metric(sipgate_edge, "sipgate_internal_errors_total") == 0


def test_admitted_1000_full_calls_at_500_per_second(sipgate_edge, pbx_port, tmp_path):
    uas = sippkit.run_uas(("127.0.0.1", pbx_port), "uas_no180", call_count=1000, timeout=60,
                          extra_args=BUFF, logdir=tmp_path / "uas")
    try:
        uac = sippkit.run_uac((ALLOWED, sippkit.free_udp_port(ALLOWED)), ("127.0.0.1", sipgate_edge.sip_port),
                              "uac_trunk", call_count=1000, rate=500, limit=500, timeout=40,
                              keys={"trunk_domain": DEMO_DOMAIN}, extra_args=BUFF, logdir=tmp_path / "uac")
    finally:
        served = uas.wait(timeout=20)
    assert uac.total_calls == 1000, uac.describe()
    assert uac.successful_calls == 1000, uac.describe()
    assert uac.failed_calls == 0, uac.describe()
    assert served.successful_calls == 1000 and served.failed_calls == 0, served.describe()
    assert metric(sipgate_edge, "sipgate_decisions_total", '{reason="admitted",result="admit"}') >= 1000
    # ACK and BYE of every call came back through sipgate (Record-Route).
    assert metric(sipgate_edge, "sipgate_decisions_total", '{reason="in_dialog",result="admit"}') >= 2000
    assert metric(sipgate_edge, "sipgate_internal_errors_total") == 0
