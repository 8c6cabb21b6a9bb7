"""SIPp side by side: sipgate and Kamailio on the same table, in the same run.

For each table size (``--sizes``, default 10, 10,000 and 1,000,000 random
entries over four trunks, see ``table.py``) and each filter (``sipgate serve``
and Kamailio 5.6 with ``permissions``, see ``peer_kamailio.py``), on the same
machine, with the same SIPp scenarios (``benchmarks/scenarios``), it
measures:

1. **Denied flood**: SIPp ``uac_403`` from 127.0.0.3 (INVITE, 403, ACK), the
   rate stepped up; the highest step with 0 failed calls and 0 unanswered
   INVITEs, and the filter's CPU per call.
   With ``--ceiling`` (the default) ``responder.c`` runs the same ladder in
   a filter's place: SIPp's own ceiling that hour.
   1b. The same from 40,000/s with two SIPp callers and nothing pinned
   (``spread()``), on machines with 2+ cores: one caller on one core stops
   near 60,000/s here, before the filters do.  The targets' denied rate is
   the higher of the two ladders; their CPU per call is the pinned one's.
2. **Admitted calls**: SIPp ``uac_call`` from 127.0.0.2 -> filter -> SIPp
   ``uas_no180`` (INVITE/200/ACK/BYE/200; ACK and BYE come back through the
   filter by its Record-Route), the rate stepped up; the highest step with 0
   failed calls, CPU per call, SIPp's own CPU per call (uac + uas: at about
   one core's second per second SIPp is what fails the step); and the
   latency the filter adds: the same calls at a modest fixed rate through
   the filter and straight to the uas.  With ``--ceiling`` the uac also
   calls the uas straight in the same ladder: SIPp's own ceiling for calls.

Both filters of a size are started one after the other and kept up; each
runs 2. (latency), 3. and 4. (single captures) on its own, then the denied
and the admitted ladders run side by side: at each rate every entrant
(filters and SIPp alone) runs its step before the next rate, in ABBA order,
so a drift of the shared machine during the ladders (a neighbour's load
comes and goes over minutes) favours none of them; then the alternated
latency rounds (4.) and the py-spy profile (5.).
3. **Mixed**: 90 % denied (one SIPp from 127.0.0.3) and 10 % admitted calls
   (one SIPp from 127.0.0.2) at once, the total rate stepped up; the highest
   step at which the admitted calls keep 0 failures.
4. **Latency from a loopback capture** (when ``tcpdump`` is installed):
   datagram in -> 403 out (denied, at 1,000 and 10,000 calls/s) and INVITE
   in -> INVITE relayed to the PBX (admitted, at 1,000 calls/s), p50 / p99 /
   p99.9 in µs, matched by Call-ID.  SIPp itself times in whole milliseconds.
   The denied calls at 1,000/s (issue 4's latency target) are measured last,
   with both filters up (each idle but for its own rounds) in
   ``LATENCY_ROUNDS`` rounds that alternate between them (ABBA); the medians of the
   rounds' percentiles are reported, beside every round.  At this rate the
   filter's core sleeps between datagrams, and the wake-up of that idle
   (virtual) CPU is most of the latency and most of its variation: on a
   shared VM a single capture per filter, minutes apart, compares the
   machine's moods more than the filters.
6. **Workers**: when ``sipgate serve --help`` offers ``--workers``, the
   denied flood again with N = 1, 2 (two SIPp callers; the workers share
   one set of sockets, so any of them can take any datagram).

CPU placement (``--pin``, the default on 2+ cores): SIPp and tcpdump run on
core 0 and each filter, every process and thread of it, on the other cores,
the same for both filters (see PLACEMENT below for why).

Pass criteria of a step: SIPp's stat CSV (last row, cumulative) shows every
planned call created (``TotalCallCreated``), every one successful
(``SuccessfulCall(C)``), ``FailedCall(C)`` 0 and ``Retransmissions(C)`` 0 (a
retransmitted INVITE is one the filter left unanswered for 500 ms), and the
achieved call rate (successful calls over SIPp's run time, start to last
answer) at least 80 % of the step's: with 0 retransmissions no request
waited 500 ms, so this catches only SIPp itself falling short.  A step is bounded in time
(``--step-seconds`` of traffic, SIPp's ``-timeout``, and a Python deadline
after which SIPp is stopped by PID) and stepping stops at the first failing
step (a failing step is run once more before it counts: the machine is
shared and one stall of another process fails a step).  When even the lowest
step fails, lower rates are tried (down to 100/s).

CPU: utime + stime from ``/proc/PID/stat`` of the filter's process tree
(every thread of every process; Kamailio's main process and its children,
sipgate and any worker it forks), the delta across the step divided by the
step's successful calls; it holds when SIPp, not the filter, is the
bottleneck.  Clock ticks are 10 ms, so a step is made long enough to count
hundreds of them.

SIPp is driven with ``subprocess`` here, not through pysipp
(``sipgate/sippkit.py``, used by the tests): a benchmark needs the exact
command line it runs (``-buff_size``, ``-l``, ``-timeout``) in the open, no
pysipp defaults (``-l 1``, ``-recv_timeout``) to override, and SIPp agents
started with as little delay as possible; the outcome is read the same way
as the tests read it, from SIPp's stat CSV with ``sippkit.parse_outcome``.

Every process this script starts (filters, SIPp agents, tcpdump) is stopped
by its PID in a ``finally``; every loop is bounded in count and time.  Only
loopback addresses (127.0.0.0/8) are used.  The Markdown report goes to
stdout (``benchmarks/run`` appends it to RESULTS.md); progress to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

import peer_kamailio  # noqa: E402
import table as tables  # noqa: E402
from peer_kamailio import cpu_seconds, wait_answering  # noqa: E402

from sipgate import native  # noqa: E402
from sipgate.sippkit import parse_outcome  # noqa: E402

SCENARIOS = HERE / "scenarios"
ALLOWED, DENIED = tables.ALLOWED, tables.DENIED
BUFF = 4194304

DENIED_STEPS = [2000, 5000, 10000, 12500, 15000, 20000, 25000, 30000, 40000, 50000, 60000]
ADMITTED_STEPS = [1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 10000, 12000, 14000, 16000, 20000]
MIXED_STEPS = [5000, 7500, 10000, 15000, 20000, 30000, 40000, 50000, 60000]
FALLBACK_STEPS = [1000, 500, 200, 100]
# The denied ladder again with two SIPp callers and nothing pinned (see
# spread()): from where one caller on one core stops, up past the target.
SPREAD_STEPS = [40000, 50000, 60000, 70000]
SPREAD_LABEL = "two callers on every core"
LATENCY_RATE = 200          # calls/s for the SIPp latency comparison
LATENCY_ROUNDS = 7          # alternated capture rounds per filter, denied calls at 1,000/s

# CPU placement (--pin, the default with 2+ cores): SIPp and tcpdump on
# core 0, the filter (every process and thread of it) on the others, for
# both filters alike.  Unpinned, the scheduler puts a woken filter on SIPp's
# core, and each reply the filter sends wakes SIPp there, which preempts it:
# measured at 1,000 denied calls/s, one involuntary context switch per call
# for single-process sipgate (48 in 2,000 calls for Kamailio, whose two
# children dodge it), doubling its reply latency.  Pinned, each filter gets
# one whole core and the load generator the other, whatever its design.
# Each sipgate process's own account of its build (its log), by work directory.
RECEIVE_PATHS: dict[str, str] = {}
PLACEMENT: dict[str, set[int] | None] = {"load": None, "filter": None}


def placed(role: str):
    """A preexec_fn putting the child (and all it starts) on ``role``'s cores."""
    return peer_kamailio.pinned(PLACEMENT[role])


def _place(procs: list, cpus: set[int]) -> None:
    """Every thread of every process of ``procs`` (filters) on ``cpus``."""
    for f in procs:
        for pid in f.pids():
            try:
                tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
            except OSError:
                continue  # (gone)
            for tid in tids:
                try:
                    os.sched_setaffinity(tid, cpus)
                except OSError:
                    pass


@contextlib.contextmanager
def spread(procs: list):
    """Inside: SIPp agents started unpinned and ``procs`` (running
    filters) moved onto every core; after: the --pin placement again.

    One SIPp caller is one process on one core: on this machine it tops out
    near the denied target (55,000-58,000 calls/s against responder.c,
    about 17 µs of SIPp CPU per call), while a filter's core is idle half
    the time at that rate. Two callers and a filter free to run anywhere
    use what both cores have (measured here: responder.c, sipgate and
    Kamailio all passed 60,000 so, one pinned caller failed it). The
    filter then shares its cores with the load, the same for every entrant."""
    saved = dict(PLACEMENT)
    PLACEMENT["load"] = None
    if saved["filter"] is not None:
        _place(procs, set(range(os.cpu_count() or 1)))
    try:
        yield
    finally:
        PLACEMENT.update(saved)
        if saved["filter"] is not None:
            _place(procs, saved["filter"])


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# SIPp
# --------------------------------------------------------------------------

@dataclass
class SippRun:
    name: str
    stats: dict[str, str]
    created: int
    successful: int
    failed: int
    retrans: int
    seconds: float           # SIPp's own StartTime -> CurrentTime of its last stat row
    exit_code: int | None
    logdir: Path

    @property
    def achieved(self) -> float:
        return self.successful / self.seconds if self.seconds > 0 else 0.0

    def under_ms(self, bound: int) -> float | None:
        """Share of calls SIPp timed (INVITE -> final response) under ``bound``
        ms, from its response-time repartition (``1, 2, 5, ...`` ms buckets)."""
        buckets = {k: int(v or 0) for k, v in self.stats.items() if k.startswith("ResponseTimeRepartition1_")}
        total = sum(buckets.values())
        if not total:
            return None
        below = 0
        for k, v in buckets.items():
            m = re.fullmatch(r"ResponseTimeRepartition1_<(\d+)", k)
            if m and int(m.group(1)) <= bound:
                below += v
        return below / total


def _stat_seconds(stats: dict[str, str]) -> float:
    try:
        start = float(stats["StartTime"].split("\t")[-1])
        end = float(stats["CurrentTime"].split("\t")[-1])
        return max(end - start, 0.0)
    except (KeyError, ValueError, IndexError):
        return 0.0


class Sipp:
    """One SIPp agent run directly with subprocess (see the module docstring)."""

    def __init__(self, name: str, scenario: str, local: tuple[str, int], remote: tuple[str, int] | None,
                 logdir: Path, *, rate: float | None = None, calls: int | None = None,
                 limit: int | None = None, timeout: float = 30.0, keys: dict[str, str] | None = None,
                 extra: list[str] | None = None) -> None:
        self.name = name
        self.logdir = logdir / name
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.stat_file = self.logdir / "stat.csv"
        self.screen_file = self.logdir / "screen.log"
        cmd = ["sipp"]
        if remote:
            cmd.append(f"{remote[0]}:{remote[1]}")
        cmd += ["-sf", str(SCENARIOS / f"{scenario}.xml"), "-i", local[0], "-p", str(local[1]),
                "-buff_size", str(BUFF), "-nostdin", "-timeout", f"{int(timeout)}s",
                "-trace_stat", "-stf", str(self.stat_file), "-fd", "1",
                "-trace_screen", "-screen_file", str(self.screen_file),
                "-trace_err", "-error_file", str(self.logdir / "errors.log")]
        if rate:
            cmd += ["-r", str(int(rate))]
        if calls:
            cmd += ["-m", str(int(calls))]
        if limit:
            cmd += ["-l", str(int(limit))]
        for k, v in (keys or {}).items():
            cmd += ["-key", k, v]
        cmd += extra or []
        self.cmd = cmd
        self.deadline = time.monotonic() + timeout + 3
        self._err = open(self.logdir / "stderr.log", "w")
        self.proc = subprocess.Popen(cmd, cwd=self.logdir, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._err, preexec_fn=placed("load"))

    def wait(self) -> SippRun:
        try:
            self.proc.wait(timeout=max(self.deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            pass
        return self.stop()

    def stop(self) -> SippRun:
        """Stop by PID: SIGUSR1 (soft: calls in progress end, stats written),
        SIGTERM, SIGKILL."""
        for sig, grace in ((signal.SIGUSR1, 4.0), (signal.SIGTERM, 2.0), (signal.SIGKILL, 5.0)):
            if self.proc.poll() is not None:
                break
            try:
                self.proc.send_signal(sig)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                continue
        self._err.close()
        stats, calls, _ = parse_outcome(self.stat_file, self.screen_file)

        def num(col: str) -> int:
            try:
                return int(float(stats.get(col, 0) or 0))
            except ValueError:
                return 0
        return SippRun(self.name, stats, calls["total_calls"], calls["successful_calls"],
                       calls["failed_calls"], num("Retransmissions(C)"), _stat_seconds(stats),
                       self.proc.poll(), self.logdir)


def sipp_version() -> str:
    out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=10)
    m = re.search(r"SIPp v?([\d.]+[^\s,]*)", out.stdout + out.stderr)
    return m.group(1).rstrip(".") if m else "?"


# --------------------------------------------------------------------------
# Filters
# --------------------------------------------------------------------------

class SipgateFilter(peer_kamailio.ManagedProcess):
    name = "sipgate"

    def __init__(self, table: tables.Table, seed: Path, workdir: Path, pbx_port: int,
                 workers: int | None = None) -> None:
        self.table, self.seed, self.pbx_port, self.workers = table, seed, pbx_port, workers
        self.workdir = workdir / (f"sipgate-w{workers}" if workers else "sipgate")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.load_seconds = 0.0
        self.metrics_port: int | None = None

    def start(self) -> "SipgateFilter":
        config = self.workdir / "sipgate.toml"
        config.write_text(
            "[sip]\n"
            f'listen = ["127.0.0.1:{self.port}"]\n'
            f'pbx = "127.0.0.1:{self.pbx_port}"\n'
            f"socket_buffer = {BUFF}\n"
            'secret = "bench-secret"\n'
            "[store]\n"
            f'url = "sqlite:{self.workdir / "edge.db"}"\n'
            "poll_interval = 2.0\n"
            "[metrics]\nenabled = true\nlisten = \"127.0.0.1:0\"\n"
            "[api]\nenabled = false\n"
            # The benchmark floods from one source on purpose: measure the
            # filter, not the flood ban (the Kamailio config has no pike).
            "[flood]\nenabled = false\n")
        cmd = [sys.executable, "-m", "sipgate.cli", "serve", "--config", str(config), "--seed", str(self.seed)]
        if self.workers:
            cmd += ["--workers", str(self.workers)]
        self.log_path = self.workdir / "sipgate.log"
        self._log = open(self.log_path, "w")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, preexec_fn=placed("filter"))
        try:
            wait_answering("127.0.0.1", self.port, self.proc, 1800.0, source=ALLOWED)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"sipgate: {exc}; log:\n{self.log_tail()}") from exc
        self.load_seconds = time.monotonic() - t0
        deadline = time.monotonic() + 10  # metrics start right after the SIP listeners
        while self.metrics_port is None and time.monotonic() < deadline:
            if m := re.search(r"metrics on http://127\.0\.0\.1:(\d+)", self.log_path.read_text(errors="replace")):
                self.metrics_port = int(m.group(1))
            else:
                time.sleep(0.1)
        # Which build this process runs, as it says itself: a source edited
        # during a run makes the processes started after it run the sources.
        if m := re.search(r"receive path: ([^\n]+)", self.log_path.read_text(errors="replace")):
            RECEIVE_PATHS[f"{self.workdir.parent.name}/{self.workdir.name}"] = m.group(1).strip()
        return self

    def histogram(self) -> dict[float, float]:
        """sipgate_decision_duration_seconds buckets (le -> cumulative count)."""
        if not self.metrics_port:
            return {}
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        except OSError:
            return {}
        out: dict[float, float] = {}
        for m in re.finditer(r'^sipgate_decision_duration_seconds_bucket\{le="([^"]+)"\} (\S+)$', text, re.M):
            out[float(m.group(1))] = float(m.group(2))
        return out


class Responder(peer_kamailio.ManagedProcess):
    """``responder.c`` in the filter's place (on the filter's cores): a 403
    for every INVITE, one recvmmsg and one sendmmsg per batch, nothing
    else. The denied flood against it is how far SIPp's own caller gets on
    this machine that day: the ceiling of the denied column for any filter."""

    name = "responder"

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        binary = workdir / "responder"
        cc = shutil.which("cc") or shutil.which("gcc")
        if cc is None:
            raise RuntimeError("no C compiler (cc)")
        subprocess.run([cc, "-O2", "-o", str(binary), str(HERE / "responder.c")], check=True,
                       capture_output=True, timeout=120)
        self.port = free_port()
        self.log_path = workdir / "responder.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([str(binary), "127.0.0.1", str(self.port)], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self._log, preexec_fn=placed("filter"))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not _udp_bound("127.0.0.1", self.port) and self.alive():
            time.sleep(0.02)
        if not self.alive():
            self.stop()
            raise RuntimeError("responder exited at start")

    def histogram(self) -> dict[float, float]:
        return {}


class Direct:
    """No filter: the uac calls the uas (the PBX port) straight. Its
    admitted ladder is SIPp's own ceiling for full calls on its core that
    day, the ceiling of the admitted column for any filter."""

    name = "SIPp alone"

    def __init__(self, pbx_port: int) -> None:
        self.port = pbx_port

    def pids(self) -> list[int]:
        return []

    def alive(self) -> bool:
        return True


class KamailioFilter:
    name = "kamailio"

    def __init__(self, table: tables.Table, workdir: Path, pbx_port: int) -> None:
        self.port = free_port()
        self.k = peer_kamailio.Kamailio(table, ("127.0.0.1", self.port), ("127.0.0.1", pbx_port),
                                        workdir=workdir / "kamailio", start_timeout=1800.0,
                                        cpus=PLACEMENT["filter"])
        self.load_seconds = 0.0

    def start(self) -> "KamailioFilter":
        self.k.start()
        self.load_seconds = self.k.load_seconds
        return self

    def pids(self) -> list[int]:
        return self.k.pids()

    def alive(self) -> bool:
        return self.k.proc is not None and self.k.proc.poll() is None

    def log_tail(self) -> str:
        return self.k.log_tail()

    def histogram(self) -> dict[float, float]:
        return {}

    def stop(self) -> None:
        self.k.stop()


def histogram_quantiles(before: dict[float, float], after: dict[float, float],
                        qs: tuple[float, ...] = (0.5, 0.99, 0.999)) -> list[float | None]:
    """Upper bucket bounds (µs) of the quantiles of the delta histogram."""
    les = sorted(after)
    delta = [(le, after[le] - before.get(le, 0.0)) for le in les]
    total = delta[-1][1] if delta else 0
    out: list[float | None] = []
    for q in qs:
        found = None
        for le, c in delta:
            if total and c >= q * total:
                found = le * 1e6
                break
        out.append(found)
    return out


# --------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------

@dataclass
class Step:
    kind: str
    rate: int
    planned: int
    runs: list[SippRun]
    cpu_s: float
    ok: bool
    why: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def successful(self) -> int:
        return sum(r.successful for r in self.runs)

    @property
    def achieved(self) -> float:
        return sum(r.achieved for r in self.runs)

    @property
    def cpu_us_per_call(self) -> float | None:
        return self.cpu_s / self.successful * 1e6 if self.successful else None

    @property
    def sipp_us_per_call(self) -> float | None:
        """SIPp's own CPU (every agent of the step) per successful call."""
        sipp = self.extra.get("sipp_cpu")
        return sipp / self.successful * 1e6 if sipp is not None and self.successful else None


def children_cpu() -> float:
    """utime + stime of this process's reaped children: across a step, the
    SIPp agents it started and waited for (filters, tcpdump and the
    responder are never stopped, so never reaped, during a step)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def judge(run: SippRun, planned: int, rate: float) -> str:
    """'' when the run passes, else what failed."""
    problems = []
    if run.failed:
        problems.append(f"{run.failed} failed")
    if run.created < planned:
        problems.append(f"{planned - run.created} not created")
    unanswered = run.created - run.successful - run.failed
    if unanswered > 0:
        problems.append(f"{unanswered} unanswered")
    if run.retrans:
        problems.append(f"{run.retrans} retransmissions")
    if run.achieved < 0.8 * rate:
        problems.append(f"{run.achieved:,.0f}/s achieved")
    return ", ".join(problems)


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.seq = 0

    def logdir(self) -> Path:
        self.seq += 1
        return self.workdir / "sipp" / f"{self.seq:04d}"

    def calls_for(self, rate: int) -> int:
        return max(int(rate * self.args.step_seconds), 50)

    def sipp_timeout(self) -> float:
        return self.args.step_seconds + 5  # a healthy step ends within ~0.5 s of its traffic

    def uac(self, name: str, scenario: str, source: str, remote: tuple[str, int], rate: int, calls: int,
            logdir: Path, domain: str) -> Sipp:
        return Sipp(name, scenario, (source, free_port(source)), remote, logdir, rate=rate, calls=calls,
                    limit=max(rate, 200), timeout=self.sipp_timeout(), keys={"trunk_domain": domain})

    def uas(self, logdir: Path, port: int) -> Sipp:
        s = Sipp("uas", "uas_no180", ("127.0.0.1", port), None, logdir, timeout=self.sipp_timeout() + 30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and s.proc.poll() is None:  # bound before the callers start
            if _udp_bound("127.0.0.1", port):
                break
            time.sleep(0.02)
        if s.proc.poll() is not None:
            raise RuntimeError(f"SIPp uas exited at start: {(s.logdir / 'stderr.log').read_text()[-500:]}")
        return s

    # -- 1. denied flood ---------------------------------------------------
    def denied_step(self, f, rate: int, domain: str, sources: int = 1) -> Step:
        logdir = self.logdir()
        calls = self.calls_for(rate)
        per = [calls // sources + (1 if i < calls % sources else 0) for i in range(sources)]
        pids = f.pids()
        cpu0, sipp0 = cpu_seconds(pids), children_cpu()
        agents: list[Sipp] = []  # (filled inside the try: an interrupt between two starts stops the first)
        try:
            for i in range(sources):
                agents.append(self.uac(f"uac403-{i}", "uac_403", DENIED, ("127.0.0.1", f.port),
                                       max(rate // sources, 1), per[i], logdir, domain))
            runs = [a.wait() for a in agents]
        finally:
            for a in agents:
                if a.proc.poll() is None:
                    a.stop()
        cpu = cpu_seconds(pids) - cpu0
        sipp = children_cpu() - sipp0
        why = "; ".join(w for r, n in zip(runs, per) if (w := judge(r, n, rate / sources)))
        if not f.alive():
            why = (why + "; " if why else "") + "filter died"
        return Step("denied", rate, calls, runs, cpu, not why, why, {"sipp_cpu": sipp})

    def ladder(self, steps: list[int], run_step, label: str) -> tuple[Step | None, Step | None, list[Step]]:
        """Step up until the first failure; if the first step fails, step down
        (one entrant of :meth:`alternated_ladders`)."""
        return self.alternated_ladders(steps, [(label, run_step)])[0]

    def alternated_ladders(self, steps: list[int], entrants: list[tuple[str, object]], label: str = "",
                           fallback: list[int] = FALLBACK_STEPS) -> list[tuple[Step | None, Step | None, list[Step]]]:
        """Ladders of several entrants (``(name, run_step)``) side by side:
        each rate of ``steps`` is run for every entrant still climbing
        before the next rate, in ABBA order (A B C, C B A, A B C, ...), so a
        drift of the machine during the ladders favours none of them. An
        entrant stops at its first step that fails twice in a row (the
        machine is shared: one stall fails a step); one whose first step
        fails steps down through ``fallback`` until one passes. Per
        entrant, in ``entrants``' order: (best step, first failing step,
        every step)."""
        best: list[Step | None] = [None] * len(entrants)
        fail: list[Step | None] = [None] * len(entrants)
        done: list[list[Step]] = [[] for _ in entrants]
        climbing = set(range(len(entrants)))
        for n, rate in enumerate(steps):
            order = list(range(len(entrants)))
            for i in (order[::-1] if n % 2 else order):
                if i not in climbing:
                    continue
                name, run_step = entrants[i]
                for attempt in (1, 2):  # a failing step is run once more: the machine is shared
                    st = run_step(rate)  # type: ignore[operator]
                    done[i].append(st)
                    sipp = st.sipp_us_per_call
                    log(f"  {name}{' ' + label if label else ''} {rate:>6}/s: {'ok' if st.ok else 'FAIL ' + st.why}; "
                        f"achieved {st.achieved:,.0f}/s; cpu {fmt_us(st.cpu_us_per_call)}/call"
                        + ("" if sipp is None else f"; SIPp {fmt_us(sipp)}/call")
                        + (" (retry)" if attempt == 2 else ""))
                    if st.ok:
                        break
                if st.ok:
                    best[i] = st
                else:
                    fail[i] = st
                    climbing.discard(i)
            if not climbing:
                break
        for i, (name, run_step) in enumerate(entrants):
            if best[i] is not None:
                continue
            for rate in fallback:
                if rate >= steps[0]:
                    continue
                st = run_step(rate)  # type: ignore[operator]
                done[i].append(st)
                log(f"  {name}{' ' + label if label else ''} {rate:>6}/s: {'ok' if st.ok else 'FAIL ' + st.why}")
                if st.ok:
                    best[i] = st
                    break
        return [(best[i], fail[i], done[i]) for i in range(len(entrants))]

    # -- 5. where sipgate's CPU goes -----------------------------------------
    def profile(self, f, kind: str, rate: int, domain: str, pbx_port: int) -> dict | None:
        """Run one more ``kind`` step at ``rate`` with py-spy sampling the
        filter's first process (``--native``, so that the mypyc-compiled
        functions appear by source line too; it pauses the filter for each of
        its 100 samples a second, so the step may fail where it passed); the
        share of samples per function, self and inclusive."""
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        if not Path(spy).exists():
            return None
        out = self.logdir()
        out.mkdir(parents=True, exist_ok=True)
        raw = out / "py-spy.txt"
        seconds = max(int(self.args.step_seconds), 1)
        rec = subprocess.Popen([spy, "record", "--native", "-r", "100", "-f", "raw",
                                "-o", str(raw), "-d", str(seconds + 1), "-p", str(f.pids()[0])],
                               stdout=subprocess.DEVNULL, stderr=open(out / "py-spy.log", "w"),
                               preexec_fn=placed("load"))
        try:
            time.sleep(0.5)
            st = (self.denied_step(f, rate, domain) if kind == "denied"
                  else self.admitted_step(f, rate, domain, pbx_port))
            rec.wait(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            rec.kill()
            rec.wait(5)
        finally:
            if rec.poll() is None:
                rec.terminate()
                rec.wait(5)
        if not raw.exists():
            return {"error": (out / "py-spy.log").read_text()[-300:]}
        total = 0
        own: dict[str, int] = {}
        inclusive: dict[str, int] = {}
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = [_frame_name(x) for x in stack.split(";")]
            if not any("sipgate/" in x for x in frames):
                continue  # another thread (executor, store), idle in a wait
            total += n
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for name in set(frames):
                inclusive[name] = inclusive.get(name, 0) + n
        return {"kind": kind, "rate": rate, "ok": st.ok, "samples": total, "own": own, "inclusive": inclusive}

    # -- 2. admitted calls ---------------------------------------------------
    def admitted_step(self, f, rate: int, domain: str, pbx_port: int) -> Step:
        logdir = self.logdir()
        calls = self.calls_for(rate)
        sipp0 = children_cpu()
        uas = self.uas(logdir, pbx_port)
        try:
            pids = f.pids()
            cpu0 = cpu_seconds(pids)
            uac = self.uac("uac", "uac_call", ALLOWED, ("127.0.0.1", f.port), rate, calls, logdir, domain)
            try:
                run = uac.wait()
            finally:
                if uac.proc.poll() is None:
                    uac.stop()
            cpu = cpu_seconds(pids) - cpu0
        finally:
            served = uas.stop()
        why = judge(run, calls, rate)
        if not f.alive():
            why = (why + "; " if why else "") + "filter died"
        return Step("admitted", rate, calls, [run], cpu, not why, why,
                    {"uas": served, "sipp_cpu": children_cpu() - sipp0})

    def latency_pair(self, f, domain: str, pbx_port: int) -> dict:
        """Same calls through the filter and straight to the uas (SIPp times, ms)."""
        rate = LATENCY_RATE
        calls = self.calls_for(rate)
        out = {}
        for label, remote in (("via", ("127.0.0.1", f.port)), ("direct", ("127.0.0.1", pbx_port))):
            logdir = self.logdir()
            uas = self.uas(logdir, pbx_port)
            try:
                uac = self.uac("uac", "uac_call", ALLOWED, remote, rate, calls, logdir, domain)
                run = uac.wait()
            finally:
                uas.stop()
            out[label] = run
        return out

    # -- 3. mixed ------------------------------------------------------------
    def mixed_step(self, f, total: int, domain: str, pbx_port: int) -> Step:
        logdir = self.logdir()
        denied_rate, admitted_rate = total * 9 // 10, total // 10
        dcalls, acalls = self.calls_for(denied_rate), self.calls_for(admitted_rate)
        uas = self.uas(logdir, pbx_port)
        try:
            pids = f.pids()
            cpu0 = cpu_seconds(pids)
            agents: list[Sipp] = []  # (filled inside the try: an interrupt between two starts stops the first)
            try:
                agents.append(self.uac("uac403", "uac_403", DENIED, ("127.0.0.1", f.port), denied_rate, dcalls,
                                       logdir, domain))
                agents.append(self.uac("uac", "uac_call", ALLOWED, ("127.0.0.1", f.port), admitted_rate, acalls,
                                       logdir, domain))
                denied, admitted = [a.wait() for a in agents]
            finally:
                for a in agents:
                    if a.proc.poll() is None:
                        a.stop()
            cpu = cpu_seconds(pids) - cpu0
        finally:
            uas.stop()
        why_a = judge(admitted, acalls, admitted_rate)
        why_d = judge(denied, dcalls, denied_rate)
        ok = not why_a and f.alive()
        return Step("mixed", total, dcalls + acalls, [denied, admitted], cpu, ok,
                    "admitted: " + why_a if why_a else ("" if f.alive() else "filter died"),
                    {"denied_why": why_d})

    # -- 4. capture ------------------------------------------------------------
    def capture(self, f, kind: str, rate: int, domain: str, pbx_port: int) -> dict | None:
        tcpdump = shutil.which("tcpdump")
        if not tcpdump:
            return None
        logdir = self.logdir()
        logdir.mkdir(parents=True, exist_ok=True)
        pcap = logdir / "capture.pcap"
        calls = self.calls_for(rate)
        flt = f"udp and port {f.port}"
        cap = subprocess.Popen([tcpdump, "-i", "lo", "-n", "-s", "2048", "-B", "65536", "-w", str(pcap), flt],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=open(logdir / "tcpdump.log", "w"), preexec_fn=placed("load"))
        uas = None
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and "listening on" not in (logdir / "tcpdump.log").read_text():
                if cap.poll() is not None:
                    return {"error": (logdir / "tcpdump.log").read_text()[-300:]}
                time.sleep(0.05)
            if kind == "admitted":
                uas = self.uas(logdir, pbx_port)
                run = self.uac("uac", "uac_call", ALLOWED, ("127.0.0.1", f.port), rate, calls, logdir, domain).wait()
            else:
                run = self.uac("uac403", "uac_403", DENIED, ("127.0.0.1", f.port), rate, calls, logdir,
                               domain).wait()
            time.sleep(0.3)
        finally:
            if uas is not None:
                uas.stop()
            if cap.poll() is None:
                cap.send_signal(signal.SIGINT)
                try:
                    cap.wait(10)
                except subprocess.TimeoutExpired:
                    cap.kill()
                    cap.wait(5)
        lat = capture_latencies(pcap, f.port, pbx_port, kind)
        lat["sipp"] = judge(run, calls, rate) or "ok"
        return lat

    def alternated_captures(self, up: list[tuple], domain: str, rounds: int, kind: str = "denied",
                            rate: int = 1000) -> dict[int, dict]:
        """``rounds`` captures of each filter in ``up`` ((filter, pbx port)
        pairs, all running), alternating between them in ABBA order (A B,
        B A, A B, ...: a drift of the machine over the rounds favours
        neither); per filter (by its index in ``up``): the median of the
        rounds' p50 / p99 / p99.9, the rounds themselves, and sipgate's
        histogram over all its rounds."""
        got: dict[int, list[dict]] = {i: [] for i in range(len(up))}
        before = [f.histogram() for f, _ in up]
        for n in range(rounds):
            order = list(enumerate(up))
            for i, (f, pbx_port) in (order[::-1] if n % 2 else order):
                c = self.capture(f, kind, rate, domain, pbx_port)
                log(f"  capture {f.name} {kind} {rate}/s, round {n + 1}/{rounds}: {brief(c)}")
                if c is not None:
                    got[i].append(c)
        out: dict[int, dict] = {}
        for i, (f, _) in enumerate(up):
            ok = [c for c in got[i] if "error" not in c and c.get("p99") is not None]
            if not ok:
                out[i] = got[i][0] if got[i] else {"error": "no capture"}
                continue
            med = {q: statistics.median(c[q] for c in ok if c[q] is not None) for q in ("p50", "p99", "p999")}
            out[i] = {"n": sum(c["n"] for c in ok), "requests": sum(c["requests"] for c in ok), **med,
                      "sipp": next((c["sipp"] for c in got[i] if c.get("sipp", "ok") != "ok"), "ok"),
                      "rounds": [(c["p50"], c["p99"], c["p999"]) for c in ok],
                      "places": by_place([x for c in ok for x in c["placed"]]),
                      "failed_rounds": len(got[i]) - len(ok)}
            if before[i]:
                out[i]["hist"] = histogram_quantiles(before[i], f.histogram())
        return out


# mypyc's C names of the compiled modules' functions: CPyDef_<module>___<name>,
# with a method as <Class>___<method>.
_MYPYC_MODULES = {"fast": "sipgate/sip/fast.py", "udp": "sipgate/transport/udp.py"}
_MYPYC_NAME = re.compile(r"CPy(?:Def|Py)_([A-Za-z0-9]+)___(\w+)")


def _frame_name(frame: str) -> str:
    """py-spy's "function (file:line)" without the line; a mypyc-compiled
    function ("CPyDef_fast___scan (__native__native.c:1897)") under its
    Python name and module; other native frames by their library."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    m = _MYPYC_NAME.fullmatch(name)
    if m is not None and m.group(1) in _MYPYC_MODULES:
        cls, sep, method = m.group(2).partition("___")
        return f"{cls + '.' + method if sep else cls} ({_MYPYC_MODULES[m.group(1)]})"
    path, colon, line = where.rpartition(":")
    if not (colon and line.isdigit()):
        path = where
    if "sipgate/" in path:
        path = "sipgate/" + path.rpartition("sipgate/")[2]
    else:
        path = Path(path).name
    return f"{name} ({path})"


def _udp_bound(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
        return False


# --------------------------------------------------------------------------
# pcap
# --------------------------------------------------------------------------

_CALL_ID = re.compile(rb"\r\n(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]+)", re.I)


def read_pcap(path: Path):
    """(timestamp s, src port, dst port, payload) of every UDP/IPv4 packet."""
    data = path.read_bytes()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    link_len = {1: 14, 113: 16, 276: 20, 0: 4, 101: 0, 12: 0}.get(linktype)
    if link_len is None:
        raise ValueError(f"{path}: unsupported link type {linktype}")
    off = 24
    hdr = struct.Struct(endian + "IIII")
    while off + 16 <= len(data):
        sec, frac, incl, _orig = hdr.unpack_from(data, off)
        off += 16
        pkt = data[off:off + incl]
        off += incl
        ip = pkt[link_len:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        sport, dport = struct.unpack_from("!HH", ip, ihl)
        yield sec + frac / (1e9 if nano else 1e6), sport, dport, ip[ihl + 8:]


# INVITEs that reach the filter within BURST_GAP of the one before form a
# burst: SIPp sends the calls of a 1,000/s step a few at a time (4, at
# times 8, in the runs so far), so a filter's reply to the first of a burst
# and to the last of it meet different queues.  The report splits the
# denied 1,000/s latency by that place (PLACES: label, first, last place).
BURST_GAP = 50e-6
PLACES = (("1st", 0, 0), ("2nd-4th", 1, 3), ("5th+", 4, None))


def burst_places(arrivals: list[float]) -> list[int]:
    """The place of each arrival (times in s, in order) in its burst, 0 first."""
    places: list[int] = []
    prev: float | None = None
    place = 0
    for ts in arrivals:
        place = place + 1 if prev is not None and ts - prev < BURST_GAP else 0
        places.append(place)
        prev = ts
    return places


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile of sorted ``values`` (nearest rank below), None if empty."""
    return values[min(int(q * len(values)), len(values) - 1)] if values else None


def capture_latencies(pcap: Path, filter_port: int, pbx_port: int, kind: str) -> dict:
    """Per Call-ID: request in -> 403 out (denied) or INVITE in -> INVITE to
    the PBX (admitted), first occurrences; percentiles in µs, and every
    latency with the request's place in its burst (``placed``)."""
    start: dict[bytes, float] = {}
    took: dict[bytes, float] = {}
    for ts, sport, dport, payload in read_pcap(pcap):
        m = _CALL_ID.search(payload)
        if not m:
            continue
        cid = m.group(1).strip()
        if dport == filter_port and payload.startswith(b"INVITE "):
            start.setdefault(cid, ts)
        elif cid in start and cid not in took and sport == filter_port and (
                (kind == "denied" and payload.startswith(b"SIP/2.0 403"))
                or (kind == "admitted" and dport == pbx_port and payload.startswith(b"INVITE "))):
            took[cid] = (ts - start[cid]) * 1e6
    places = dict(zip(start, burst_places(list(start.values()))))
    lat = sorted(took.values())
    return {"n": len(lat), "requests": len(start), "p50": pct(lat, 0.5), "p99": pct(lat, 0.99),
            "p999": pct(lat, 0.999), "placed": [(places[cid], v) for cid, v in took.items()]}


def brief(c: dict | None) -> dict | None:
    """A capture's result for the log: without the per-call latencies."""
    return c if c is None else {k: v for k, v in c.items() if k != "placed"}


def by_place(placed: list[tuple[int, float]]) -> dict:
    """Pooled (place, µs) pairs: p50 / p99 of all, and per PLACES group its
    share of the calls, p50 and p99."""
    every = sorted(v for _, v in placed)
    out: dict = {"all": (1.0, pct(every, 0.5), pct(every, 0.99))}
    for label, lo, hi in PLACES:
        group = sorted(v for place, v in placed if place >= lo and (hi is None or place <= hi))
        out[label] = (len(group) / max(len(placed), 1), pct(group, 0.5), pct(group, 0.99))
    return out


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def fmt_us(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f} µs" if v >= 10 else f"{v:.1f} µs"


def fmt_rate(st: Step | None, fail: Step | None, done: list[Step]) -> str:
    if st is None:
        return f"< {min(s.rate for s in done):,}" if done else "n/a"
    return f"{st.rate:,}"


def fmt_fail(fail: Step | None, steps: list[int], best: Step | None) -> str:
    if fail is None:
        return f"none up to {steps[-1]:,}/s (ladder top)" if best is not None else "-"
    return f"{fail.rate:,}/s: {fail.why}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default=None, help="comma-separated table sizes (default 10,10000,1000000)")
    ap.add_argument("--quick", action="store_true", help="smoke version: sizes 10,10000, 2 s steps")
    ap.add_argument("--filters", default="sipgate,kamailio")
    ap.add_argument("--step-seconds", type=float, default=None, help="traffic per step (default 5, --quick 2)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, SIPp CSVs)")
    ap.add_argument("--ceiling", action=argparse.BooleanOptionalAction, default=True,
                    help="SIPp alone in the ladders (benchmarks/responder.c for denied calls, uac -> uas straight for admitted ones) and responder.c in the latency rounds: SIPp's ceiling that hour")
    ap.add_argument("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2,
                    help="SIPp and tcpdump on core 0, the filter on the others (default with 2+ cores)")
    args = ap.parse_args(argv)
    # `kill PID` ends a run as Ctrl-C does, through the finally clauses that
    # stop every filter, SIPp agent and tcpdump by PID (a run started in the
    # background by a script has SIGINT ignored, so kill is the way there).
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if args.pin:
        PLACEMENT["load"] = {0}
        PLACEMENT["filter"] = set(range(1, os.cpu_count() or 2))
    sizes = [int(s) for s in (args.sizes or ("10,10000" if args.quick else "10,10000,1000000")).split(",")]
    if args.step_seconds is None:
        args.step_seconds = 2.0 if args.quick else 5.0
    filters = [x.strip() for x in args.filters.split(",") if x.strip()]
    if "kamailio" in filters:
        peer_kamailio.ensure_installed()
    help_text = subprocess.run([sys.executable, "-m", "sipgate.cli", "serve", "--help"], cwd=ROOT,
                               capture_output=True, text=True, timeout=60).stdout
    has_workers = "--workers" in help_text
    tcpdump = shutil.which("tcpdump")

    workdir = Path(tempfile.mkdtemp(prefix="bench-sip-"))
    bench = Bench(args, workdir)
    results: list[dict] = []
    worker_rows: list[tuple] = []
    ceilings: dict[int, dict[str, tuple]] = {}  # SIPp alone, per size: "denied" (responder), "admitted" (direct)
    responder: Responder | None = None
    started = time.monotonic()
    try:
        if args.ceiling:
            try:
                responder = Responder(workdir / "ceiling")  # up (idle between its steps) until the end
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                log(f"SIPp's ceiling skipped: {exc}")
        for size in sizes:
            t = tables.generate(size)
            seed = tables.write_seed(t, workdir / f"seed-{size}.toml")
            domain = t.domains[1]
            started_filters: list = []  # every filter started for this size: stopped in the finally
            up: list[tuple] = []  # (filter, its result, PBX port) of those whose tests ran: kept up, idle
            try:
                for name in filters:
                    pbx_port = free_port()
                    sizedir = workdir / f"{name}-{size}"
                    f = (SipgateFilter(t, seed, sizedir, pbx_port) if name == "sipgate"
                         else KamailioFilter(t, sizedir, pbx_port))
                    started_filters.append(f)
                    log(f"{name}: loading {t.rows:,} rows")
                    try:
                        f.start()
                        log(f"{name}: up in {f.load_seconds:.1f} s on 127.0.0.1:{f.port} (pids {f.pids()})")
                        r: dict = {"filter": name, "size": size, "load": f.load_seconds,
                                   "procs": len(f.pids())}
                        r["latency"] = bench.latency_pair(f, domain, pbx_port)
                        log(f"  SIPp INVITE->200 under 1 ms: via {r['latency']['via'].under_ms(1)}, direct "
                            f"{r['latency']['direct'].under_ms(1)}")
                        r["mixed"] = bench.ladder(MIXED_STEPS,
                                                  lambda rate: bench.mixed_step(f, rate, domain, pbx_port),
                                                  f"{name} {size} mixed")
                        caps = {}
                        if tcpdump:
                            # (denied at 1,000/s: in the alternated rounds below)
                            for kind, rate in (("denied", 10000), ("admitted", 1000)):
                                h0 = f.histogram()
                                caps[(kind, rate)] = c = bench.capture(f, kind, rate, domain, pbx_port)
                                if c is not None and h0:
                                    c["hist"] = histogram_quantiles(h0, f.histogram())
                                log(f"  capture {kind} {rate}/s: {brief(c)}")
                        r["capture"] = caps
                        results.append(r)
                        up.append((f, r, pbx_port))
                    except Exception as exc:  # one filter's failure must not lose the others' numbers
                        log(f"{name} {size}: ERROR {exc}")
                        results.append({"filter": name, "size": size, "error": str(exc).splitlines()[0]})
                        f.stop()
                alive = []
                for f, r, pbx_port in up:
                    if f.alive():
                        alive.append((f, r, pbx_port))
                    else:
                        r["error"] = "the filter died before its denied and admitted ladders"
                # The denied and admitted ladders, every filter of the size
                # (and SIPp alone) side by side, rate by rate in ABBA order.
                try:
                    lone = [] if responder is None or not responder.alive() else [responder]
                    got = bench.alternated_ladders(DENIED_STEPS, [
                        (x.name, lambda rate, x=x: bench.denied_step(x, rate, domain))
                        for x in lone + [f for f, _, _ in alive]], f"{size} denied")
                    if lone:
                        ceilings.setdefault(size, {})["denied"] = got.pop(0)
                    for (_f, r, _p), res in zip(alive, got):
                        r["denied"] = res
                    if (os.cpu_count() or 1) >= 2:
                        entrants = lone + [f for f, _, _ in alive]
                        with spread(entrants):
                            got = bench.alternated_ladders(SPREAD_STEPS, [
                                (x.name, lambda rate, x=x: bench.denied_step(x, rate, domain, sources=2))
                                for x in entrants], f"{size} denied, {SPREAD_LABEL}", fallback=[])
                        if lone:
                            ceilings.setdefault(size, {})["denied_spread"] = got.pop(0)
                        for (_f, r, _p), res in zip(alive, got):
                            r["denied_spread"] = res
                    direct = [Direct(free_port())] if args.ceiling else []
                    got = bench.alternated_ladders(ADMITTED_STEPS, [
                        (x.name, lambda rate, x=x, pbx=pbx: bench.admitted_step(x, rate, domain, pbx))
                        for x, pbx in [(d, d.port) for d in direct] + [(f, p) for f, _, p in alive]],
                        f"{size} admitted")
                    if direct:
                        ceilings.setdefault(size, {})["admitted"] = got.pop(0)
                    for (_f, r, _p), res in zip(alive, got):
                        r["admitted"] = res
                except Exception as exc:
                    log(f"{size} ladders: ERROR {exc}")
                    for _f, r, _p in alive:
                        if "denied" not in r or "admitted" not in r:
                            r["error"] = f"ladders: {str(exc).splitlines()[0]}"
                    alive = [x for x in alive if "error" not in x[1]]
                if tcpdump and alive:
                    alive = [(f, r, pbx_port) for f, r, pbx_port in alive if f.alive()]
                    # (the responder in the rounds too: the machine's own wake-up floor that hour)
                    lone = [] if responder is None or not responder.alive() else [(responder, 0)]
                    got = bench.alternated_captures(lone + [(f, pbx_port) for f, _, pbx_port in alive], domain,
                                                    LATENCY_ROUNDS)
                    if lone:
                        ceilings.setdefault(size, {})["capture"] = got.pop(0)
                        got = {i - 1: c for i, c in got.items()}
                    for i, (_f, r, _p) in enumerate(alive):
                        # (in the order the table shows: denied 1,000/s first)
                        r["capture"] = {("denied", 1000): got[i], **r["capture"]}
                for f, r, pbx_port in alive:
                    if f.name == "sipgate" and size == sizes[0] and f.alive():
                        r["profile"] = [
                            p for kind, st in (("denied", r["denied"][0]), ("admitted", r["admitted"][0]))
                            if st is not None and (p := bench.profile(f, kind, st.rate, domain, pbx_port))]
            finally:
                for f in started_filters:
                    f.stop()
            if has_workers and "sipgate" in filters and size == sizes[0]:
                for n in (1, 2):
                    pbx_port = free_port()
                    f = SipgateFilter(t, seed, workdir / f"workers-{size}", pbx_port, workers=n)
                    try:
                        f.start()
                        best, fail, done = bench.ladder(
                            DENIED_STEPS, lambda rate: bench.denied_step(f, rate, domain, sources=2),
                            f"sipgate --workers {n} denied")
                        worker_rows.append((n, size, len(f.pids()), best, fail, done))
                    except Exception as exc:
                        worker_rows.append((n, size, 0, None, None, []))
                        log(f"workers {n}: ERROR {exc}")
                    finally:
                        f.stop()
    finally:
        if responder is not None:
            responder.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"work directory kept: {workdir}")

    report(results, worker_rows, args, sizes, has_workers, tcpdump, time.monotonic() - started, ceilings)
    return 0 if all("error" not in r for r in results) else 1


@dataclass
class Verdict:
    """One of issue 4's targets at one table size: :func:`targets` prints
    it as a row, :func:`missed_notes` explains it when it is missed."""
    kind: str  # "denied" or "admitted" (the p99 is of denied calls)
    measure: str  # "rate" (with ``bar``, the rate it had to reach), "cpu" or "p99"
    target: str
    ours: float | None
    theirs: float | None
    ok: bool | None  # None: a figure is missing from the run
    ratio: str = ""
    bar: float = 0.0


def top_step(r: dict, kind: str) -> tuple[Step | None, str]:
    """The highest step of ``kind`` that ``r`` (a filter's result, or SIPp
    alone's ceilings) passed: for denied calls in either CPU layout, the
    pinned ladder's or the spread one's (then with SPREAD_LABEL)."""
    best, where = r.get(kind, (None,))[0], ""
    if kind == "denied":
        other = r.get("denied_spread", (None,))[0]
        if other is not None and (best is None or other.rate > best.rate):
            best, where = other, SPREAD_LABEL
    return best, where


def verdicts(s: dict, k: dict, alone: dict) -> list[Verdict]:
    """Issue 4's targets for sipgate's result ``s`` against Kamailio's ``k``
    at one table size (``alone``: SIPp alone's ceilings there), in the
    order the report lists them."""
    def lone(kind: str) -> str:
        best, where = top_step(alone, kind)
        return f"; SIPp alone: {best.rate:,}/s{f' with {where}' if where else ''}" if best is not None else ""

    def times(ours: float | None, theirs: float | None) -> str:
        return f"{ours / theirs:.2f}x Kamailio's" if ours and theirs else ""

    rows: list[Verdict] = []
    for kind in ("denied", "admitted"):
        st, kt = s[kind][0], k[kind][0]  # (CPU per call: the pinned ladder's, one core each)
        (top, where), (ktop, kwhere) = top_step(s, kind), top_step(k, kind)
        rate, other = (top.rate if top else 0), (ktop.rate if ktop else 0)
        at = (f"; sipgate's rate with {where}" if where else "") + (f"; Kamailio's with {kwhere}" if kwhere else "")
        if kind == "denied":
            rows.append(Verdict(kind, "rate", "denied: 60,000 calls/s, 0 failed", rate, other, rate >= 60000,
                                f"{rate / 60000:.0%} of the target{at}{lone(kind)}", 60000))
        rows.append(Verdict(kind, "rate", f"{kind} calls/s >= Kamailio's", rate, other, rate >= other and rate > 0,
                            (f"{rate / other:.2f}x Kamailio's" if other else "") + at + lone(kind), other))
        sc, kc = (st.cpu_us_per_call if st else None), (kt.cpu_us_per_call if kt else None)
        rows.append(Verdict(kind, "cpu", f"CPU per {kind} call < Kamailio's", sc, kc,
                            None if sc is None or kc is None else sc < kc, times(sc, kc)))
    sp, kp = latency(s).get("p99"), latency(k).get("p99")
    fp = (alone.get("capture") or {}).get("p99")
    rows.append(Verdict("denied", "p99", "denied p99 at 1,000/s (capture, median of alternated rounds) <= Kamailio's",
                        sp, kp, None if sp is None or kp is None else sp <= kp,
                        times(sp, kp) + (f"; responder.c: {fmt_us(fp)}" if fp else "")))
    return rows


def latency(r: dict) -> dict:
    """A filter's capture of denied calls at 1,000/s ({} without one)."""
    return r.get("capture", {}).get(("denied", 1000)) or {}


def targets(results: list[dict], ceilings: dict[int, dict[str, tuple]] | None = None) -> None:
    """Issue 4's targets against this run, per table size: met or by how much missed."""
    pairs = side_by_side(results, ceilings)
    if not pairs:
        return
    print("#### Issue 4's targets in this run\n")
    print("Computed from the tables below. \"Kamailio\" means Kamailio in this run, on the same table. "
          "\"SIPp alone\": the highest step SIPp itself passed at that size, side by side with the filters "
          "(denied: against `responder.c`; admitted: uac → uas straight), the most any filter can show.\n")
    print("| entries | target | sipgate | Kamailio | verdict |")
    print("| ---: | --- | ---: | ---: | --- |")
    for size, s, k, alone in pairs:
        for v in verdicts(s, k, alone):
            fmt = fmt_us if v.measure in ("cpu", "p99") else (lambda x: "n/a" if x is None else f"{x:,.0f}/s")
            verdict = "n/a" if v.ok is None else ("met" if v.ok else "missed") + (f" ({v.ratio})" if v.ratio else "")
            print(f"| {size:,} | {v.target} | {fmt(v.ours)} | {fmt(v.theirs)} | {verdict} |")
    print("")
    notes = missed_notes(results, ceilings)
    if notes:
        print("**Where a target was missed**, from the same run: what bounded it (SIPp alone's ceiling, "
              "the latency rounds, the py-spy profile of section 5) and what to try next.\n")
        for note in notes:
            print(f"- {note}")
        print("")


def side_by_side(results: list[dict], ceilings: dict[int, dict[str, tuple]] | None) -> list[tuple]:
    """(size, sipgate's result, Kamailio's, SIPp alone's ceilings) for each
    table size where both filters have results, smallest first."""
    by = {(r["filter"], r["size"]): r for r in results if "error" not in r}
    return [(size, by[("sipgate", size)], by[("kamailio", size)], (ceilings or {}).get(size, {}))
            for size in sorted({size for _, size in by}) if ("sipgate", size) in by and ("kamailio", size) in by]


# The system calls and the event loop's wait as py-spy names them: time in
# the kernel (or idle), not in sipgate's own code.
KERNEL_FRAMES = ("sendmmsg", "recvmmsg", "epoll_pwait", "epoll_wait", "sendto", "recvfrom", "sendmsg", "recvmsg")


def profile_lines(prof: dict | None, n: int = 3) -> tuple[str, str]:
    """A profile's n largest self shares, and the largest outside the
    kernel's frames (sipgate's own code), as text; ("", "") without one."""
    if not prof or not prof.get("samples"):
        return "", ""
    total = prof["samples"]
    ranked = sorted(prof["own"].items(), key=lambda kv: (-kv[1], kv[0]))
    top = ", ".join(f"`{name}` {count / total:.0%}" for name, count in ranked[:n])
    own = next((f"`{name}` ({count / total:.0%} of the samples)" for name, count in ranked
                if name.split(" ")[0] not in KERNEL_FRAMES and not name.startswith("0x")), "")
    return top, own


def missed_notes(results: list[dict], ceilings: dict[int, dict[str, tuple]] | None = None) -> list[str]:
    """One line per missed target of issue 4 (the rows of :func:`verdicts`
    that were missed): by how much, what bounded it in this run, and the
    next thing to try, all from the run's own data."""
    profiles = {prof["kind"]: (r["size"], prof) for r in results if "error" not in r and r["filter"] == "sipgate"
                for prof in r.get("profile", ()) if "error" not in prof}
    notes: list[str] = []

    def profiled(kind: str) -> str:
        size, prof = profiles.get(kind, (None, None))
        top, own = profile_lines(prof)
        if not top:
            return "no py-spy profile in this run"
        return (f"the py-spy profile ({kind} calls at {prof['rate']:,}/s, {size:,} entries) puts the most self "
                f"samples in {top}; next to try: sipgate's own largest share, {own or 'none outside the kernel'}")

    def factor(v: Verdict) -> str:
        return f" ({v.ours / v.theirs:.2f}x)" if v.ours and v.theirs else ""

    for size, s, k, alone in side_by_side(results, ceilings):
        rows = verdicts(s, k, alone)
        for kind in ("denied", "admitted"):
            rates = [v for v in rows if v.kind == kind and v.measure == "rate"]
            if all(v.ok for v in rates):
                continue
            rate, other = int(rates[-1].ours or 0), int(rates[-1].theirs or 0)
            goal = int(max(v.bar for v in rates))
            fixed = [v for v in rates[:-1] if not v.ok]  # a fixed target (60,000/s) missed, beside Kamailio's
            best, where = top_step(alone, kind)
            lone = best.rate if best is not None else None
            spread_too = kind == "denied" and "denied_spread" in alone
            layout = (f"with {where}" if where else
                      "with one caller and with two on every core" if spread_too else "on its one core")
            what = (f"{kind} at {size:,} entries: sipgate {rate:,}/s against "
                    + "".join(f"the target {int(v.bar):,}/s and " for v in fixed) + f"Kamailio's {other:,}/s")
            if lone is not None and lone < goal and rate >= lone:
                notes.append(f"{what}. SIPp alone passed {lone:,}/s here, no more than sipgate: the load "
                             f"generator {layout}, not the filter, "
                             f"stopped below {goal:,}/s"
                             + (f" (Kamailio's {other:,} is a step SIPp alone failed: SIPp's margin decided it)"
                                if other > max(lone, rate) else "")
                             + "; next to try: more load than SIPp sends here"
                             + (" (a faster machine: two callers on every core were in this run)"
                                if spread_too else
                                " (a faster machine, or callers on more cores)") + ".")
            else:
                bound = f"SIPp alone passed {lone:,}/s, more than sipgate" if lone is not None else \
                    "no SIPp-alone ceiling measured (--no-ceiling)"
                notes.append(f"{what}. {bound}: the filter is the bound; {profiled(kind)}.")
        for v in rows:
            if v.measure == "cpu" and v.ok is False:
                notes.append(f"CPU per {v.kind} call at {size:,} entries: sipgate {fmt_us(v.ours)} against "
                             f"Kamailio's {fmt_us(v.theirs)}{factor(v)}; {profiled(v.kind)}.")
            elif v.measure == "p99" and v.ok is False:
                sr, kr = latency(s).get("rounds") or [], latency(k).get("rounds") or []
                lower = sum(1 for a, b in zip(sr, kr) if a[1] <= b[1])
                fp = (alone.get("capture") or {}).get("p99")
                notes.append(
                    f"denied p99 at 1,000/s at {size:,} entries: sipgate {fmt_us(v.ours)} against Kamailio's "
                    f"{fmt_us(v.theirs)}{factor(v)}; sipgate's p99 was the lower in {lower} of "
                    f"{min(len(sr), len(kr))} round pairs, its p50 {fmt_us(latency(s).get('p50'))} against "
                    f"{fmt_us(latency(k).get('p50'))}"
                    + (f", the C responder's p99 {fmt_us(fp)} in the same rounds (the machine's own wake-up)"
                       if fp else "")
                    + "; at this rate the filter's core sleeps between SIPp's bursts and the wake-up with cold "
                    "caches is the latency; next to try: fewer cache lines on the cold denied path "
                    "(`benchmarks/bench_cold.py --cachegrind` counts them).")
    return notes


def report(results, worker_rows, args, sizes, has_workers, tcpdump, elapsed, ceilings=None) -> None:
    p = print
    p(f"### SIPp side by side: sipgate vs Kamailio — {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"
      f"{' (quick)' if args.quick else ''}\n")
    p(f"SIPp {sipp_version()} (`-buff_size {BUFF}`), {peer_kamailio.version()} "
      f"(stateless, `permissions` + db_text, {os.cpu_count()} children), Python {platform.python_version()}; "
      f"tables: {', '.join(f'{s:,}' for s in sizes)} random entries over {tables.TRUNKS} trunks "
      f"(60/30/10 % /32, /24, /16) + 127.0.0.2/32 on each; {args.step_seconds:g} s of traffic per step; "
      f"run took {elapsed / 60:.1f} min.\n")
    if PLACEMENT["filter"] is not None:
        p(f"CPU placement (`--pin`): SIPp and tcpdump on core {sorted(PLACEMENT['load'])[0]}, each filter (all its "
          f"processes) on core(s) {','.join(map(str, sorted(PLACEMENT['filter'])))}: one core each, side by side.\n")
    else:
        p("CPU placement: none (`--no-pin`): SIPp, tcpdump and the filter share every core.\n")
    paths = set(RECEIVE_PATHS.values())
    if len(paths) > 1:
        p("**sipgate's receive path was not the same in every sipgate process of this run** (a source file "
          "changed during it, so the processes started later ran the sources): "
          + "; ".join(f"{where}: {what}" for where, what in sorted(RECEIVE_PATHS.items())) + ".\n")
    else:
        p(f"sipgate's receive path: {paths.pop() if paths else native.status()[1]}"
          f"{' (as every sipgate process of the run logged it)' if paths or RECEIVE_PATHS else ''}.\n")
    p("A step passes when SIPp's stat CSV shows every planned call created and successful, 0 failed, "
      "0 retransmissions (no INVITE left unanswered for 500 ms) and the call rate achieved (SIPp's run time, "
      "start to last answer) at least 80 % of the step's; "
      "stepping stops at the first step that fails twice in a row (both runs are under Every step). CPU: utime+stime of the filter's whole process tree "
      "(/proc) over the step, per successful call.\n")

    p("The denied and the admitted ladders run side by side: at each rate every filter of the table size "
      "(and SIPp alone, below) runs its step before the next rate, in ABBA order (sipgate, Kamailio; "
      "Kamailio, sipgate; ...), so a drift of the shared machine during the ladders favours neither. "
      "The latency pair, the mixed ladder and the single captures run per filter before them. "
      "SIPp CPU: utime+stime of the step's SIPp agents (the uac and, for admitted calls, the uas, all on "
      "their one core; in 1b two callers, unpinned) per successful call: at rate x SIPp CPU near one core's "
      "second, SIPp, not the filter, is what fails the step.\n")
    if ceilings:
        p("SIPp alone: in the same ladders, SIPp's own ceiling on its core that hour: the denied flood against "
          "`benchmarks/responder.c` (C, a 403 for every INVITE, one `recvmmsg` and one `sendmmsg` per batch, "
          "on the filter's core in a filter's place; its CPU is in the filter's column), and the admitted "
          "calls uac → uas straight, no filter between them. No filter can pass a step SIPp cannot drive "
          "alone.\n")

    targets(results, ceilings)

    p("#### 1–2. Denied flood and admitted calls\n")
    p("| filter | entries | load | denied calls/s (0 failed) | CPU / denied call | first failing denied step "
      "| admitted calls/s (0 failed) | CPU / admitted call | SIPp CPU / admitted call | first failing admitted step |")
    p("| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |")
    none = (None, None, [])
    rows = [({"filter": "SIPp alone", "size": size, "load": None, "denied": c.get("denied", none),
              "admitted": c.get("admitted", none), "denied_spread": c.get("denied_spread")})
             for size, c in (ceilings or {}).items()]
    ordered = sorted(rows + results, key=lambda r: r["size"])  # (stable: SIPp alone first in its size)
    for r in ordered:
        if "error" in r:
            p(f"| {r['filter']} | {r['size']:,} | | error: {r['error']} | | | | | | |")
            continue
        db, df, dd = r["denied"]
        ab, af, ad = r["admitted"]
        load = "" if r["load"] is None else f"{r['load']:.1f} s"
        p(f"| {r['filter']} | {r['size']:,} | {load} | {fmt_rate(db, df, dd) if dd else 'n/a'} | "
          f"{fmt_us(db.cpu_us_per_call if db else None)} | {fmt_fail(df, DENIED_STEPS, db) if dd else ''} | "
          f"{fmt_rate(ab, af, ad) if ad else 'n/a'} | "
          f"{fmt_us(ab.cpu_us_per_call if ab and r['load'] is not None else None)} | "
          f"{fmt_us(ab.sipp_us_per_call if ab else None)} | {fmt_fail(af, ADMITTED_STEPS, ab) if ad else ''} |")
    p("")
    spread_rows = [r for r in ordered if r.get("denied_spread")]
    if spread_rows:
        p(f"#### 1b. Denied flood, {SPREAD_LABEL}\n")
        p("The denied ladder again from 40,000/s, each filter (and SIPp alone against `responder.c`) side by "
          "side in ABBA order as above, with two SIPp callers (half the rate each) and nothing pinned: the "
          "callers run unpinned, and each filter may run on either core for these steps. "
          "One caller on one core stops near the target on this machine; two use what the filter's core "
          "leaves idle. Each filter shares the cores with the load here, so its CPU per call is not the "
          "one-core figure of the table above (the targets' CPU rows use that one).\n")
        p("| filter | entries | denied calls/s (0 failed) | CPU / denied call | SIPp CPU / denied call "
          "| first failing step |")
        p("| --- | ---: | ---: | ---: | ---: | --- |")
        for r in spread_rows:
            b, fl, d = r["denied_spread"]
            p(f"| {r['filter']} | {r['size']:,} | {fmt_rate(b, fl, d) if d else 'n/a'} | "
              f"{fmt_us(b.cpu_us_per_call if b else None)} | "
              f"{fmt_us(b.sipp_us_per_call if b else None)} | {fmt_fail(fl, SPREAD_STEPS, b) if d else ''} |")
        p("")

    p(f"#### 2. Latency of admitted calls as SIPp sees it ({LATENCY_RATE} calls/s)\n")
    p("SIPp times in whole milliseconds (its mean rounds to 0 here), so only its response-time repartition "
      "is shown: the share of calls whose INVITE → 200 took under 1 ms and under 2 ms, through the filter "
      "and straight uac → uas in the same run. The filter's own relay time, in µs, is in the capture table "
      "(section 4).\n")
    p("| filter | entries | via filter: < 1 ms | < 2 ms | direct: < 1 ms | < 2 ms | SIPp result via filter |")
    p("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        if "error" in r:
            continue
        via, direct = r["latency"]["via"], r["latency"]["direct"]
        share = lambda x: "n/a" if x is None else f"{x:.1%}"  # noqa: E731
        p(f"| {r['filter']} | {r['size']:,} | {share(via.under_ms(1))} | {share(via.under_ms(2))} | "
          f"{share(direct.under_ms(1))} | {share(direct.under_ms(2))} | "
          f"{judge(via, bench_calls(args, LATENCY_RATE), LATENCY_RATE) or 'ok'} |")
    p("")

    p("#### 3. Mixed: 90 % denied + 10 % admitted at once\n")
    p("| filter | entries | total calls/s with admitted 0 failed | denied part | admitted part | CPU / call "
      "| denied-part problems at that step | first failing step |")
    p("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
    for r in results:
        if "error" in r:
            continue
        b, fl, d = r["mixed"]
        p(f"| {r['filter']} | {r['size']:,} | {fmt_rate(b, fl, d)} | "
          f"{'' if b is None else f'{b.rate * 9 // 10:,}'} | {'' if b is None else f'{b.rate // 10:,}'} | "
          f"{fmt_us(b.cpu_us_per_call if b else None)} | {(b.extra.get('denied_why') or 'none') if b else ''} | "
          f"{fmt_fail(fl, MIXED_STEPS, b)} |")
    p("")

    p("#### 4. Latency from a loopback capture\n")
    if not tcpdump:
        p("Skipped: `tcpdump` is not installed (Debian package `tcpdump`; `benchmarks/run` installs it when "
          "it can).\n")
    else:
        p("Per Call-ID, from `tcpdump -i lo` timestamps: INVITE in → 403 out (denied), INVITE in → INVITE "
          "relayed to the PBX (admitted: the latency the filter adds to a call set-up). "
          "tcpdump runs on the same 2 cores. sipgate's own histogram (`sipgate_decision_duration_seconds`, "
          "upper bucket bounds) beside it; Kamailio has none. "
          f"Denied at 1,000/s: both filters up, {LATENCY_ROUNDS} capture rounds per filter alternating between "
          "them in ABBA order (sipgate, Kamailio, Kamailio, sipgate, ...), each of a step's length; p50 / p99 / p99.9 are the medians "
          "of the rounds' (every round is in the table after this one), matched is the sum of the rounds'. "
          "At this rate the filter's core is idle between datagrams and waking it up is most of the latency "
          "and of its variation from one round to the next.\n")
        floor = [{"filter": "responder.c", "size": size, "capture": {("denied", 1000): c["capture"]}}
                 for size, c in (ceilings or {}).items() if c.get("capture")]
        if floor:
            p("The `responder.c` rows: the C responder (see SIPp alone above) in the same alternated rounds, "
              "ABBA with the filters: the latency of the machine itself that hour, SIPp's send, the loopback "
              "and the wake-up of an idle core, with nearly nothing of a filter in it.\n")
        p("| filter | entries | traffic | calls/s | matched | p50 | p99 | p99.9 | sipgate histogram p50 / p99 / p99.9 "
          "| SIPp |")
        p("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | --- |")
        with_floor = sorted(floor + results, key=lambda r: r["size"])  # (stable: responder.c first in its size)
        for r in with_floor:
            if "error" in r:
                continue
            for (kind, rate), c in r["capture"].items():
                if c is None or "error" in c:
                    p(f"| {r['filter']} | {r['size']:,} | {kind} | {rate:,} | capture failed: "
                      f"{(c or {}).get('error', '')[:80]} | | | | | |")
                    continue
                hist = c.get("hist")
                h = " / ".join("n/a" if v is None else f"≤ {v:g} µs" for v in hist) if hist else "n/a"
                rounds = f" (median of {len(c['rounds'])} rounds)" if c.get("rounds") else ""
                p(f"| {r['filter']} | {r['size']:,} | {kind}{rounds} | {rate:,} | {c['n']:,}/{c['requests']:,} | "
                  f"{fmt_us(c['p50'])} | {fmt_us(c['p99'])} | {fmt_us(c['p999'])} | {h} | {c['sipp']} |")
        p("")
        rounds = [(r, c) for r in with_floor if "error" not in r
                  for c in [r["capture"].get(("denied", 1000))] if c and c.get("rounds")]
        if rounds:
            p("Denied at 1,000/s, every round (p50 / p99 / p99.9; round n of one filter ran next to round n of "
              "the other, sipgate first in odd rounds, Kamailio first in even ones"
              + ("; responder.c first in odd rounds, last in even ones" if floor else "") + "):\n")
            p("| filter | entries | " + " | ".join(f"round {i + 1}" for i in range(LATENCY_ROUNDS)) + " |")
            p("| --- | ---: |" + " ---: |" * LATENCY_ROUNDS)
            for r, c in rounds:
                cells = [" / ".join(fmt_us(v).replace(" µs", "") for v in x) + " µs" for x in c["rounds"]]
                cells += [""] * (LATENCY_ROUNDS - len(cells))
                p(f"| {r['filter']} | {r['size']:,} | " + " | ".join(cells) + " |")
            p("")
            p(f"Denied at 1,000/s by place in SIPp's burst, all rounds pooled. SIPp sends a step's calls a few at "
              f"a time: INVITEs reaching the filter within {BURST_GAP * 1e6:.0f} µs of the one before count as "
              "one burst. A filter that answers each INVITE before it reads the next (Kamailio) is fastest for "
              "the first of a burst and slower for each later one; one that reads what is queued and answers "
              "it with one `sendmmsg` (sipgate) answers a burst's INVITEs together. Each cell: share of the "
              "calls, p50 / p99.\n")
            p("| filter | entries | all: p50 / p99 | " + " | ".join(label for label, _, _ in PLACES) + " |")
            p("| --- | ---: | ---: |" + " ---: |" * len(PLACES))
            for r, c in rounds:
                pl = c.get("places") or {}
                cells = [f"{fmt_us(pl['all'][1])} / {fmt_us(pl['all'][2])}" if "all" in pl else "n/a"]
                cells += [f"{share:.0%}: {fmt_us(p50)} / {fmt_us(p99)}" if share else "none"
                          for share, p50, p99 in (pl.get(label, (0, None, None)) for label, _, _ in PLACES)]
                p(f"| {r['filter']} | {r['size']:,} | " + " | ".join(cells) + " |")
            p("")

    p("#### 6. sipgate --workers\n")
    if not has_workers:
        p("Skipped: `sipgate serve --help` shows no `--workers` option in this build.\n")
    else:
        p("Denied flood with two SIPp callers, at the smallest table size. The workers share one set of "
          "sockets (bound once, forked around them), so any worker can take any datagram"
          + (f"; pinned like the filters above, they share core(s) "
             f"{','.join(map(str, sorted(PLACEMENT['filter'])))}" if PLACEMENT["filter"] is not None else "")
          + ".\n")
        p("| workers | entries | processes | denied calls/s (0 failed) | CPU / denied call | first failing step |")
        p("| ---: | ---: | ---: | ---: | ---: | --- |")
        for n, size, procs, best, fail, done in worker_rows:
            p(f"| {n} | {size:,} | {procs} | {fmt_rate(best, fail, done)} | "
              f"{fmt_us(best.cpu_us_per_call if best else None)} | {fmt_fail(fail, DENIED_STEPS, best)} |")
        p("")

    profiles = [(r, prof) for r in results if "error" not in r for prof in r.get("profile", ())]
    if profiles:
        p("#### 5. Where sipgate's CPU goes (py-spy)\n")
        p("One more step at the highest passing rate with `py-spy record --native` sampling "
          "sipgate (100 Hz; each sample pauses it briefly): the share of samples in each function, self (where the sample landed) and "
          "inclusive (on the stack). Native frames are CPython's C code (`sre_*`: the regular expressions, "
          "`_PyObject_*`: allocation) and the system calls as libc shows them (`sendmsg`, `recvmsg`; an "
          "unnamed libc address is most often the event loop's `epoll_wait`); with the compiled "
          "receive path, mypyc's functions appear under their Python names.\n")
        for r, prof in profiles:
            if "error" in prof:
                p(f"{r['size']:,} entries: py-spy failed: {prof['error']}\n")
                continue
            total = prof["samples"] or 1
            p(f"**{prof['kind']} calls at {prof['rate']:,}/s, {r['size']:,} entries** "
              f"({prof['samples']:,} samples of sipgate's main thread"
              f"{'' if prof['ok'] else '; the step itself failed under the sampling'})\n")
            p("| self | function | | inclusive | function |")
            p("| ---: | --- | --- | ---: | --- |")
            own = sorted(prof["own"].items(), key=lambda kv: -kv[1])[:12]
            inc = sorted(((k, v) for k, v in prof["inclusive"].items()
                          if "sipgate/" in k and "sipgate/cli.py" not in k and "sipgate/server.py" not in k
                          and not k.startswith("0x")),
                         key=lambda kv: -kv[1])[:12]
            for i in range(max(len(own), len(inc))):
                a = own[i] if i < len(own) else ("", 0)
                b = inc[i] if i < len(inc) else ("", 0)
                p(f"| {a[1] / total:.1%} | `{a[0]}` | | {b[1] / total:.1%} | `{b[0]}` |")
            p("")

    p("<details><summary>Every step</summary>\n")
    p("| filter | entries | test | rate/s | planned | successful | achieved/s | CPU / call | SIPp CPU / call "
      "| result |")
    p("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")

    def step_row(who: str, size: int, kind: str, st: Step) -> None:
        p(f"| {who} | {size:,} | {kind} | {st.rate:,} | {st.planned:,} | {st.successful:,} | "
          f"{st.achieved:,.0f} | {fmt_us(st.cpu_us_per_call) if who != 'SIPp alone' or kind == 'denied' else 'n/a'} | "
          f"{fmt_us(st.sipp_us_per_call)} | {'ok' if st.ok else st.why} |")
    for size, c in (ceilings or {}).items():
        for kind in ("denied", "admitted"):
            for st in c.get(kind, none)[2]:
                step_row("SIPp alone", size, kind, st)
    for r in results:
        if "error" in r:
            continue
        for kind in ("denied", "admitted", "mixed"):
            for st in r[kind][2]:
                step_row(r["filter"], r["size"], kind, st)
    for n, size, _procs, _b, _f, done in worker_rows:
        for st in done:
            step_row(f"sipgate --workers {n}", size, "denied", st)
    p("\n</details>\n")


def bench_calls(args, rate: int) -> int:
    return max(int(rate * args.step_seconds), 50)


if __name__ == "__main__":
    sys.exit(main())
