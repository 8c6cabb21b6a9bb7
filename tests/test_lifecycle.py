"""A real `sipgate serve` through its life: health, readiness, SIGHUP, SIGTERM.

* /-/healthy answers as soon as the process runs; /-/ready only once the
  table is compiled and every listener bound, and not while the store
  cannot be reached at start (the process waits for it, then serves).
* SIGHUP rereads the config file: run-time settings apply at once, a
  broken file changes nothing (the log says why), a key that needs a
  restart is named in the log, new API accounts work at once.
* SIGTERM: every datagram that arrived before it is answered, the deny log
  is written out, the exit status is 0, within the shutdown timeout.
"""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from helpers import (
    DEMO_SEED,
    DENIED,
    Process,
    Serving,
    UdpPeer,
    basic,
    metric,
    request,
    write_config,
)
from sipgate.sip import parse


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_healthy_and_ready_once_serving(sipgate_edge):
    assert get(sipgate_edge.metrics_port, "/-/healthy") == (200, "sipgate is healthy\n")
    assert get(sipgate_edge.metrics_port, "/-/ready") == (200, "sipgate is ready\n")
    assert metric(sipgate_edge, "sipgate_ready") == 1
    status, text = get(sipgate_edge.metrics_port, "/metrics")
    assert status == 200 and "sipgate_decisions_total" in text


def test_not_ready_while_the_store_cannot_be_reached_at_start(tmp_path):
    with UdpPeer("127.0.0.1") as pbx, UdpPeer(DENIED) as denied:
        config = write_config(tmp_path, pbx.address[1])
        missing = tmp_path / "not-yet"
        config.write_text(config.read_text().replace(str(tmp_path / "edge.db"), str(missing / "edge.db")))
        proc = Process(["serve", "--config", str(config), "--seed", str(DEMO_SEED)])
        try:
            port = int(proc.wait_for(r"metrics on http://127\.0\.0\.1:(\d+)").group(1))
            proc.wait_for(r"not ready, retrying")
            assert get(port, "/-/healthy")[0] == 200
            status, text = get(port, "/-/ready")
            assert status == 503 and "store" in text, text
            assert not any("SIP/UDP listening" in line for line in proc.log)
            missing.mkdir()  # the store can be opened now
            sip_port = int(proc.wait_for(r"SIP/UDP listening on 127\.0\.0\.1:(\d+)").group(1))
            deadline = time.monotonic() + 10
            while get(port, "/-/ready")[0] != 200:
                assert time.monotonic() < deadline, "never ready"
                time.sleep(0.1)
            denied.send(request(via_host=f"{DENIED}:{denied.address[1]}"), ("127.0.0.1", sip_port))
            assert parse(denied.recv()[0]).status == 403
        finally:
            assert proc.stop() == 0


def test_sigterm_while_waiting_for_the_store_exits_cleanly(tmp_path):
    config = write_config(tmp_path, 5070)
    config.write_text(config.read_text().replace(str(tmp_path / "edge.db"), str(tmp_path / "never" / "edge.db")))
    proc = Process(["serve", "--config", str(config)])
    try:
        proc.wait_for(r"not ready, retrying")
    finally:
        started = time.monotonic()
        assert proc.stop() == 0
    assert time.monotonic() - started < 5


def test_a_serve_that_never_starts_is_stopped_by_the_harness(tmp_path):
    """The tests' own harness: a `sipgate serve` that never binds its
    listener (the store's directory is missing) fails Serving in bounded
    time with its log, and is stopped, not left behind."""
    config = write_config(tmp_path, 5070)
    config.write_text(config.read_text().replace(str(tmp_path / "edge.db"), str(tmp_path / "never" / "edge.db")))
    seen: list[Serving] = []

    class Watched(Serving):
        def started(self, timeout: float) -> None:
            seen.append(self)
            super().started(timeout)

    started = time.monotonic()
    with pytest.raises(AssertionError, match="not ready, retrying"):
        Watched(["serve", "--config", str(config)], timeout=5)
    assert time.monotonic() - started < 15
    assert seen and seen[0].proc.poll() == 0  # SIGTERM by PID: a clean exit
    assert not seen[0]._reader.is_alive()


def _hup_and_wait(server: Serving, *expect: str) -> None:
    """SIGHUP, then read the log until each pattern has matched, in order
    (the last one being the line that ends the reload)."""
    start = len(server.log)
    server.signal(signal.SIGHUP)
    for pattern in expect:
        m = server.wait_for(pattern, start=start)
        start = next(i for i in range(start, len(server.log)) if m.string is server.log[i]) + 1


def test_sighup_applies_run_time_settings_and_keeps_a_broken_file_out(tmp_path):
    with UdpPeer("127.0.0.1") as pbx, UdpPeer(DENIED) as denied:
        path = write_config(tmp_path, pbx.address[1])
        good = path.read_text()
        server = Serving(["serve", "--config", str(path), "--seed", str(DEMO_SEED)])
        edge = ("127.0.0.1", server.sip_port)

        def unknown_domain(call_id: str) -> int | None:
            denied.send(request(ruri="sip:+1555@nobody.example", via_host=f"{DENIED}:{denied.address[1]}",
                                call_id=call_id, branch=f"z9hG4bK-{call_id}"), edge)
            try:
                return parse(denied.recv(0.4)[0]).status
            except TimeoutError:
                return None

        try:
            assert unknown_domain("before") == 404
            # A run-time setting: unknown hosts are now dropped silently.
            path.write_text(good.replace("[sip]\n", '[sip]\nunknown_host = "drop"\n', 1))
            _hup_and_wait(server, r"SIGHUP: config .* applied")
            assert unknown_domain("after") is None
            # A broken file: nothing changes, the log says why.
            path.write_text(good.replace("[sip]\n", '[sip]\nunknown_host = "maybe"\n', 1))
            _hup_and_wait(server, r"SIGHUP: keeping the running config: .*sip\.unknown_host")
            assert unknown_domain("still-dropped") is None
            # A key that needs a restart: named, its running value kept.
            path.write_text(good.replace('[api]\nlisten = "127.0.0.1:0"', '[api]\nlisten = "127.0.0.1:1"'))
            _hup_and_wait(server, r"SIGHUP: api\.listen changed; it takes effect at the next restart",
                          r"SIGHUP: config .* applied")
            assert unknown_domain("reject-again") == 404  # (the rest of that file applied)
            # A new API account works at once.
            new_sid, new_token = "AC" + "9" * 32, "hup-token"
            path.write_text(good + f'[[accounts]]\nsid = "{new_sid}"\nauth_token = "{new_token}"\n')
            _hup_and_wait(server, r"SIGHUP: config .* applied")
            auth = basic(new_sid, new_token)
            req = urllib.request.Request(f"http://127.0.0.1:{server.api_port}/v1/Trunks",
                                         headers={"Authorization": auth})
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.status == 200
            assert server.proc.poll() is None
        finally:
            assert server.stop() == 0


def test_sigterm_answers_every_datagram_sent_before_it_and_writes_the_deny_log(tmp_path):
    deny_log = tmp_path / "deny.log"
    with UdpPeer("127.0.0.1") as pbx, UdpPeer(DENIED) as denied:
        path = write_config(tmp_path, pbx.address[1],
                            extra=f'[log]\ndeny_log = "{deny_log}"\ndeny_log_burst = 1000\n')
        server = Serving(["serve", "--config", str(path), "--seed", str(DEMO_SEED)])
        edge = ("127.0.0.1", server.sip_port)
        n = 100
        for i in range(n):
            denied.send(request(via_host=f"{DENIED}:{denied.address[1]}", call_id=f"term-{i}",
                                branch=f"z9hG4bK-term-{i}"), edge)
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 7  # lifecycle.shutdown_timeout (5 s) and a margin
        call_ids = set()
        denied.sock.settimeout(0.5)
        try:
            while True:
                answer = parse(denied.sock.recvfrom(65535)[0])
                assert answer.status == 403
                call_ids.add(answer.first("call-id"))
        except TimeoutError:
            pass
    assert call_ids == {f"term-{i}" for i in range(n)}
    lines = [line for line in Path(deny_log).read_text().splitlines() if "event=deny" in line]
    assert len(lines) == n, lines[-3:]
    assert all(f"src={DENIED} " in line for line in lines)
