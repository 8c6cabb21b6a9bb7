"""`sipgate serve --workers N`: worker processes sharing the SIP socket."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from helpers import (ALLOWED, DEMO_DOMAIN, DEMO_SEED, DENIED, Serving, UdpPeer, basic, held_while_stopped, metric,
                     request, write_config)
from sipgate.sip import parse


def children_of(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def workers_of(pid: int) -> tuple[int, list[int]]:
    """--workers: the supervisor worker 0 (``pid``) forked, and the workers
    it forked in turn."""
    (supervisor,) = children_of(pid)
    return supervisor, children_of(supervisor)


def gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True  # exited; its parent has not reaped it yet
        time.sleep(0.05)
    return False


def test_second_worker_serves_the_shared_socket_and_stops_with_the_first(tmp_path):
    with UdpPeer("127.0.0.1") as pbx, UdpPeer(DENIED) as denied, UdpPeer(ALLOWED) as allowed:
        server = Serving(["serve", "--config", str(write_config(tmp_path, pbx.address[1])), "--seed", str(DEMO_SEED),
                          "--workers", "2"])
        try:
            server.wait_for(r"\(worker 1\)")
            supervisor, workers = workers_of(server.proc.pid)
            assert len(workers) == 1, workers
            edge = ("127.0.0.1", server.sip_port)
            # Freeze worker 0: whatever is answered now, worker 1 answered,
            # reading the same socket on the same port.
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                for i in range(20):
                    denied.send(request(via_host=f"{DENIED}:{denied.address[1]}", call_id=f"w-{i}"), edge)
                    assert parse(denied.recv()[0]).status == 403
                allowed.send(request(via_host=f"{ALLOWED}:{allowed.address[1]}", call_id="w-ok"), edge)
                relayed = parse(pbx.recv()[0])
                assert relayed.method == "INVITE" and relayed.request_uri.host == DEMO_DOMAIN
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            # And worker 0 still answers once resumed (either may take it).
            denied.send(request(via_host=f"{DENIED}:{denied.address[1]}", call_id="w-last"), edge)
            assert parse(denied.recv()[0]).status == 403
        finally:
            assert server.stop() == 0
        assert all(gone(pid) for pid in [supervisor, *workers])


def test_workers_die_with_worker_zero(tmp_path):
    with UdpPeer("127.0.0.1") as pbx:
        server = Serving(["serve", "--config", str(write_config(tmp_path, pbx.address[1])), "--workers", "3"])
        try:
            server.wait_for(r"\(worker 2\)")
            supervisor, workers = workers_of(server.proc.pid)
            assert len(workers) == 2, workers
        finally:
            server.proc.kill()  # SIGKILL: no cleanup in worker 0 at all
            server.proc.wait(10)
        assert all(gone(pid) for pid in [supervisor, *workers]), "a worker outlived worker 0"


def two_workers(tmp_path: Path, pbx_port: int) -> Serving:
    """`sipgate serve --workers 2` on the demo seed, its revision poll 60 s
    away (only a wake-up brings a change in time), both workers serving."""
    config = write_config(tmp_path, pbx_port)
    config.write_text(config.read_text().replace("poll_interval = 0.1", "poll_interval = 60"))
    server = Serving(["serve", "--config", str(config), "--seed", str(DEMO_SEED), "--workers", "2"])
    try:
        server.wait_for(r"\(worker 1\)")
    except BaseException:
        server.stop()
        raise
    return server


def demo_addresses(server: Serving) -> str:
    """The IpAddresses URL of the demo list on ``server``'s API."""
    import json
    import urllib.request

    from helpers import ACCOUNT_SID

    lists = f"http://127.0.0.1:{server.api_port}/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
    with urllib.request.urlopen(urllib.request.Request(f"{lists}.json", headers={"Authorization": basic()}),
                                timeout=10) as resp:
        return f"{lists}/{json.load(resp)['ip_access_control_lists'][0]['sid']}/IpAddresses.json"


def test_a_write_through_the_api_is_enforced_by_every_worker_at_once(tmp_path):
    """Worker 0 wakes the others (SIGUSR1) after an API write; with their
    revision poll 60 s away, every INVITE from the newly listed address is
    relayed, whichever worker the kernel hands it to."""
    import urllib.parse
    import urllib.request

    source = "127.0.0.11"
    with UdpPeer("127.0.0.1") as pbx, UdpPeer(source) as caller:
        server = two_workers(tmp_path, pbx.address[1])
        try:
            edge = ("127.0.0.1", server.sip_port)
            addresses = demo_addresses(server)
            for i in range(10):  # before: both workers refuse it
                caller.send(request(via_host=f"{source}:{caller.address[1]}", call_id=f"pre-{i}",
                                    branch=f"z9hG4bK-pre-{i}"), edge)
                assert parse(caller.recv()[0]).status == 403
            body = urllib.parse.urlencode({"FriendlyName": "new", "IpAddress": source}).encode()
            with urllib.request.urlopen(urllib.request.Request(addresses, data=body,
                                                               headers={"Authorization": basic()}), timeout=10) as r:
                assert r.status == 201
            # No pause: the 2xx waited for the other worker too.
            for i in range(40):
                caller.send(request(via_host=f"{source}:{caller.address[1]}", call_id=f"post-{i}",
                                    branch=f"z9hG4bK-post-{i}"), edge)
                relayed = parse(pbx.recv()[0])
                assert relayed.first("call-id") == f"post-{i}"
            assert caller.nothing(0.3)  # no 403 from a worker still on the old table
        finally:
            assert server.stop() == 0


def test_an_api_write_waits_for_every_worker_to_enforce_it(tmp_path):
    """The 2xx of a write is held while worker 1 is stopped (SIGSTOP) and
    sent once it has the change in force: right after it, with worker 0
    frozen, worker 1 relays the newly listed source.  A worker that stays
    stopped holds the 2xx for WORKER_ACK_TIMEOUT at most, and the log names
    it, then no other write until it runs again; one that has exited, not
    at all."""
    import urllib.parse
    import urllib.request

    from sipgate.server import WORKER_ACK_TIMEOUT

    with UdpPeer("127.0.0.1") as pbx, UdpPeer("127.0.0.12") as first, UdpPeer("127.0.0.13") as second:
        server = two_workers(tmp_path, pbx.address[1])
        try:
            _, (worker,) = workers_of(server.proc.pid)
            edge = ("127.0.0.1", server.sip_port)
            addresses = demo_addresses(server)

            def add(source: str) -> tuple[int, float]:
                """POST an IpAddress: (the status, when the answer came)."""
                body = urllib.parse.urlencode({"FriendlyName": source, "IpAddress": source}).encode()
                with urllib.request.urlopen(urllib.request.Request(addresses, data=body,
                                                                   headers={"Authorization": basic()}),
                                            timeout=30) as r:
                    return r.status, time.monotonic()

            def relayed_by_worker_1(caller: UdpPeer, call_id: str) -> bool:
                os.kill(server.proc.pid, signal.SIGSTOP)  # (worker 1 answers)
                try:
                    caller.send(request(via_host=f"{caller.address[0]}:{caller.address[1]}", call_id=call_id,
                                        branch=f"z9hG4bK-{call_id}"), edge)
                    return parse(pbx.recv()[0]).first("call-id") == call_id
                finally:
                    os.kill(server.proc.pid, signal.SIGCONT)

            # Worker 1 stopped throughout: the 2xx after the bound, logged;
            # while it stays stopped (its slot unchanged) the next write does
            # not wait for it again, but is counted.
            os.kill(worker, signal.SIGSTOP)
            try:
                started = time.monotonic()
                status, at = add("127.0.0.13")
                assert status == 201 and WORKER_ACK_TIMEOUT <= at - started < WORKER_ACK_TIMEOUT + 3
                assert any("not yet enforcing revision" in line and f"pid {worker}" in line for line in server.log)
                assert metric(server, "sipgate_enforce_timeouts_total") == 1  # (SipgateEnforcementBehind)
                started = time.monotonic()
                status, at = add("127.0.0.17")
                assert status == 201 and at - started < 1.0
                assert metric(server, "sipgate_enforce_timeouts_total") == 2
                assert sum("not yet enforcing revision" in line for line in server.log) == 1
            finally:
                os.kill(worker, signal.SIGCONT)
            time.sleep(0.5)  # (once running it takes the wake-up it missed)
            assert relayed_by_worker_1(second, "late")
            # Running again, it is waited for again: stopped, then continued,
            # the 2xx comes after that.
            assert held_while_stopped(worker, lambda: add("127.0.0.12"))[0] == 201
            assert relayed_by_worker_1(first, "ack-1")
            # A worker that has exited has nothing to enforce: no wait (its
            # replacement starts a second later, from the store as it is).
            os.kill(worker, signal.SIGKILL)
            assert gone(worker)
            started = time.monotonic()
            status, at = add("127.0.0.14")
            assert status == 201 and at - started < WORKER_ACK_TIMEOUT / 2
            server.wait_for(rf"worker 1 \(pid {worker}\) killed by SIGKILL")
        finally:
            assert server.stop() == 0


def test_sighup_to_worker_zero_reaches_every_worker(tmp_path):
    """`systemctl reload` signals the main process: every worker must
    apply the file, not just worker 0 (here: sip.unknown_host 404 -> drop,
    seen from worker 1 while worker 0 is frozen)."""
    with UdpPeer("127.0.0.1") as pbx, UdpPeer(ALLOWED) as caller:
        config = write_config(tmp_path, pbx.address[1])
        server = Serving(["serve", "--config", str(config), "--seed", str(DEMO_SEED), "--workers", "2"])
        try:
            server.wait_for(r"\(worker 1\)")
            _, (worker,) = workers_of(server.proc.pid)
            edge = ("127.0.0.1", server.sip_port)

            def unknown(call_id: str) -> bytes:
                return request(ruri="sip:1@nobody.example", via_host=f"{ALLOWED}:{caller.address[1]}",
                               call_id=call_id)

            os.kill(server.proc.pid, signal.SIGSTOP)  # (worker 1 answers)
            try:
                caller.send(unknown("before"), edge)
                assert parse(caller.recv()[0]).status == 404
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            config.write_text(config.read_text().replace("[sip]\n", '[sip]\nunknown_host = "drop"\n', 1))
            os.kill(server.proc.pid, signal.SIGHUP)
            server.wait_for(r"applied \(worker 1\)")
            assert any("applied (worker 0)" in line for line in server.log)
            assert not any("next restart" in line for line in server.log), "".join(server.log)
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                for i in range(5):
                    caller.send(unknown(f"after-{i}"), edge)
                assert caller.nothing(0.5)  # dropped by worker 1 too
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            assert Path(f"/proc/{worker}").exists()  # (and it is still running)
        finally:
            assert server.stop() == 0


def test_a_worker_that_dies_is_started_again_with_the_config_in_force(tmp_path):
    """The supervisor replaces a worker that dies (SIGKILL here, as the
    OOM killer would send it): the new one serves the shared socket with
    the table as it is and the config file as it is (rewritten and applied
    by SIGHUP since the start), and sipgate_worker_restarts_total counts
    it.  One that dies again soon after it started waits twice as long
    before its next start, and a stop meanwhile starts nothing."""
    import urllib.parse
    import urllib.request

    source = "127.0.0.15"
    with UdpPeer("127.0.0.1") as pbx, UdpPeer(ALLOWED) as caller, UdpPeer(source) as listed:
        config = write_config(tmp_path, pbx.address[1])
        server = Serving(["serve", "--config", str(config), "--seed", str(DEMO_SEED), "--workers", "2"])
        replacement = 0
        try:
            server.wait_for(r"\(worker 1\)")
            supervisor, (worker,) = workers_of(server.proc.pid)
            edge = ("127.0.0.1", server.sip_port)
            config.write_text(config.read_text().replace("[sip]\n", '[sip]\nunknown_host = "drop"\n', 1))
            os.kill(server.proc.pid, signal.SIGHUP)
            server.wait_for(r"applied \(worker 1\)")
            os.kill(worker, signal.SIGKILL)
            server.wait_for(rf"worker 1 \(pid {worker}\) killed by SIGKILL after [\d.]+ s; starting it again in 1 s")
            replacement = int(server.wait_for(r"worker 1 started again \(pid (\d+)\)").group(1))
            since = next(i for i, line in enumerate(server.log) if "started again" in line)
            server.wait_for(r"SIP/UDP listening on .*\(worker 1\)", start=since)
            assert children_of(supervisor) == [replacement]
            body = urllib.parse.urlencode({"FriendlyName": "late", "IpAddress": source}).encode()
            with urllib.request.urlopen(urllib.request.Request(demo_addresses(server), data=body,
                                                               headers={"Authorization": basic()}), timeout=10) as r:
                assert r.status == 201
            os.kill(server.proc.pid, signal.SIGSTOP)  # (the replacement answers)
            try:
                listed.send(request(via_host=f"{source}:{listed.address[1]}", call_id="after"), edge)
                assert parse(pbx.recv()[0]).first("call-id") == "after"
                caller.send(request(ruri="sip:1@nobody.example", via_host=f"{ALLOWED}:{caller.address[1]}",
                                    call_id="unknown"), edge)
                assert caller.nothing(0.5)  # dropped: the file's unknown_host, not the start's 404
                caller.send(request(via_host=f"{ALLOWED}:{caller.address[1]}", call_id="demo"), edge)
                assert parse(pbx.recv()[0]).first("call-id") == "demo"
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            deadline = time.monotonic() + 5
            while metric(server, "sipgate_worker_restarts_total") != 1:  # (copied twice a second)
                assert time.monotonic() < deadline, "sipgate_worker_restarts_total never 1"
                time.sleep(0.1)
            os.kill(replacement, signal.SIGKILL)
            server.wait_for(rf"worker 1 \(pid {replacement}\) killed by SIGKILL after [\d.]+ s; "
                            r"starting it again in 2 s")
        finally:
            assert server.stop() == 0
        assert all(gone(pid) for pid in [supervisor, worker, replacement])
        assert sum("started again" in line for line in server.log) == 1, server.output()


def test_worker_zero_serves_on_when_the_supervisor_dies(tmp_path):
    """Without the supervisor the other workers stop (they die with it)
    and the slots say nothing any more: worker 0 logs it, its API writes
    wait for no one, and it still serves and stops cleanly."""
    import urllib.parse
    import urllib.request

    source = "127.0.0.16"
    with UdpPeer("127.0.0.1") as pbx, UdpPeer(source) as listed:
        server = two_workers(tmp_path, pbx.address[1])
        try:
            supervisor, (worker,) = workers_of(server.proc.pid)
            os.kill(supervisor, signal.SIGKILL)
            assert gone(worker), "a worker outlived the supervisor"
            started = time.monotonic()
            body = urllib.parse.urlencode({"FriendlyName": "alone", "IpAddress": source}).encode()
            with urllib.request.urlopen(urllib.request.Request(demo_addresses(server), data=body,
                                                               headers={"Authorization": basic()}), timeout=10) as r:
                assert r.status == 201
            assert time.monotonic() - started < 2
            server.wait_for(rf"worker supervisor \(pid {supervisor}\) exited")
            listed.send(request(via_host=f"{source}:{listed.address[1]}", call_id="alone"),
                        ("127.0.0.1", server.sip_port))
            assert parse(pbx.recv()[0]).first("call-id") == "alone"
        finally:
            assert server.stop() == 0


def run_supervised(script: str, pid_file: Path, seconds: float) -> tuple[int, str, str]:
    """Run ``script`` (a supervise() call) in a Python process of its own
    until a worker has written ``pid_file`` and ``seconds`` have passed,
    then SIGTERM it: (that worker's PID, its stdout, its stderr).  It runs
    in a process group of its own: if this fails, the group (the
    supervisor's PID) is killed, the test's workers with it."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", script, str(pid_file)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        started = time.monotonic()
        written = ""  # (the worker opens the file, then writes its PID: wait for the PID)
        while not written or time.monotonic() - started < seconds:
            assert time.monotonic() - started < seconds + 10, "no worker started"
            time.sleep(0.05)
            written = pid_file.read_text() if pid_file.exists() else ""
        worker = int(written)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    except BaseException:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        raise
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return worker, out, err


SUPERVISED = """
import logging, os, signal, sys, time
logging.basicConfig(level="INFO", stream=sys.stderr, format="%(message)s")
from sipgate.workers import Slots, supervise
slots = Slots(3)
def start(n, again):
    if n == 1:  # dies at once, every time
        time.sleep(0.05)
        return 3
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # worker 2 will not stop
    with open(sys.argv[1], "w") as fh:
        fh.write(str(os.getpid()))
    while True:
        time.sleep(1)
code = supervise(slots, start, stop_timeout=1.0, first=0.2, longest=0.8)
print(code, slots.restarts, slots.pid(1), slots.pid(2))
"""


def test_supervise_backs_off_a_worker_that_keeps_dying_and_kills_one_that_will_not_stop(tmp_path):
    """sipgate.workers.supervise in a process of its own: a worker that
    exits right after each start is started again after 0.2, 0.4, 0.8,
    0.8 s (doubling, capped); on SIGTERM a worker that ignores it is
    killed after stop_timeout, and supervise returns with every slot
    empty."""
    worker, out, err = run_supervised(SUPERVISED, tmp_path / "worker2.pid", 3.5)
    delays = [float(d) for d in re.findall(r"worker 1 \(pid \d+\) exited with status 3 after "
                                           r"[\d.]+ s; starting it again in ([\d.]+) s", err)]
    assert delays[:4] == [0.2, 0.4, 0.8, 0.8], err
    assert f"worker 2 (pid {worker}) still running 1 s after SIGTERM: SIGKILL" in err
    code, restarts, pid1, pid2 = map(int, out.split())
    assert (code, pid1, pid2) == (0, 0, 0)
    assert restarts == err.count("worker 1 started again") >= 4
    assert gone(worker)


FORK_FAILS = """
import logging, os, signal, sys, time
logging.basicConfig(level="INFO", stream=sys.stderr, format="%(message)s")
from sipgate.workers import Slots, supervise
real_fork, failures = os.fork, [2]
def fork():  # (root ignores RLIMIT_NPROC: the two EAGAINs are made here)
    if failures[0]:
        failures[0] -= 1
        raise BlockingIOError(11, "Resource temporarily unavailable")
    return real_fork()
os.fork = fork
slots = Slots(2)
def start(n, again):
    with open(sys.argv[1], "w") as fh:
        fh.write(str(os.getpid()))
    while True:
        time.sleep(1)
code = supervise(slots, start, stop_timeout=2.0, first=0.2, longest=0.8)
print(code, slots.pid(1))
"""


def test_supervise_tries_again_when_fork_fails(tmp_path):
    """fork() failing (EAGAIN) does not end the supervisor: it tries again
    with the same back-off as for a worker that dies."""
    worker, out, err = run_supervised(FORK_FAILS, tmp_path / "worker1.pid", 0.0)
    assert "cannot start worker 1 ([Errno 11] Resource temporarily unavailable); trying again in 0.2 s" in err, err
    assert "trying again in 0.4 s" in err and f"worker 1 started again (pid {worker})" in err, err
    assert out.split() == ["0", "0"]
    assert gone(worker)
