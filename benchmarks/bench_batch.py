"""CPU per denied call through ``sipgate serve`` with and without its batched
system calls (``sipgate/transport/_mmsg.c``: one recvmmsg / sendmmsg per
batch), for an IPv4 or an IPv6 listener, side by side in one run.

A SIPp caller floods denied INVITEs (uac_403: INVITE, 403, ACK) at a fixed
rate from a source no list admits (127.0.0.3, or ::1 for IPv6) at a
``sipgate serve`` on the demo seed, pinned like bench_sip.py (SIPp on core 0,
sipgate on core 1).  "batched" is the compiled build as it runs; "recvfrom"
is the same build started with the extension's functions set to None, so
SocketTransport reads with recvfrom and writes with sendto.  Rounds
alternate (ABBA); each round starts a fresh sipgate, warms it up with 1,000
calls and measures one step; CPU is utime + stime from /proc over the step,
per successful call.  Prints one line per round, and appends the table
(every round, the medians, machine and versions) to ``benchmarks/RESULTS.md``
(``--results``; ``-`` prints it only).

    .venv/bin/python benchmarks/bench_batch.py [--family 6] [--rate 3000] [--calls 9000] [--rounds 4]
        [--results benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCENARIO = HERE / "scenarios" / "uac_403.xml"
DEMO_SEED = ROOT / "config" / "demo-seed.toml"
DOMAIN = "demo.sipgate.test"
TICK = os.sysconf("SC_CLK_TCK")
# sipgate serve, with the batched functions removed first for "recvfrom".
SERVE = ("import sys\n"
         "if sys.argv[1] == 'recvfrom':\n"
         "    import sipgate.transport.udp as u\n"
         "    u._recv_batch = u._send_batch = u._send_batch6 = None\n"
         "from sipgate.cli import main\n"
         "sys.exit(main(['serve', '--config', sys.argv[2], '--seed', sys.argv[3]]))\n")


def free_port(family: int, host: str) -> int:
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Sipgate:
    """One ``sipgate serve`` on a fresh store, pinned to core 1, stopped by PID."""

    def __init__(self, mode: str, workdir: Path, listen: str, port: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=workdir))
        config = self.dir / "sipgate.toml"
        config.write_text(
            "[sip]\n"
            f'listen = [{{ address = "{listen}", default_trunk = "{DOMAIN}" }}]\n'
            f'pbx = "127.0.0.1:{free_port(socket.AF_INET, "127.0.0.1")}"\n'
            f'[store]\nurl = "sqlite:{self.dir / "edge.db"}"\n'
            '[metrics]\nlisten = "127.0.0.1:0"\n[api]\nlisten = "127.0.0.1:0"\n'
            "[flood]\nenabled = false\n")
        self.log = self.dir / "sipgate.log"
        cmd = [sys.executable, "-c", SERVE, mode, str(config), str(DEMO_SEED)]
        if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
            cmd = ["taskset", "-c", "1", *cmd]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                         cwd=ROOT)
        deadline = time.monotonic() + 30
        while f":{port}," not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sipgate did not start:\n" + self.log.read_text()[-2000:])
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def flood(pid: int, target: str, source: str, family: int, rate: int, calls: int, workdir: Path
          ) -> tuple[float, int, int, int]:
    """One SIPp step: (CPU µs of pid per successful call, successful, failed,
    retransmissions)."""
    stat = workdir / f"stat-{time.monotonic_ns()}.csv"
    cmd = ["sipp", target, "-i", source, "-p", str(free_port(family, source)), "-sf", str(SCENARIO),
           "-key", "trunk_domain", DOMAIN, "-r", str(rate), "-m", str(calls), "-l", str(max(rate, 200)),
           "-buff_size", "4194304", "-nostdin", "-timeout", f"{calls // rate + 20}s",
           "-trace_stat", "-stf", str(stat)]
    if shutil.which("taskset") and (os.cpu_count() or 1) >= 2:
        cmd = ["taskset", "-c", "0", *cmd]
    before = cpu_seconds(pid)
    subprocess.run(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=calls / rate + 60)
    used = cpu_seconds(pid) - before
    rows = list(csv.reader(stat.open(), delimiter=";"))
    head, last = rows[0], rows[-1]

    def col(name: str) -> int:
        return int(float(last[head.index(name)]))
    ok = col("SuccessfulCall(C)")
    return used / max(ok, 1) * 1e6, ok, col("FailedCall(C)"), col("Retransmissions(C)")


def sipp_version() -> str:
    out = subprocess.run(["sipp", "-v"], capture_output=True, text=True, timeout=10)
    m = re.search(r"SIPp v?([\d.]+[^\s,]*)", out.stdout + out.stderr)
    return m.group(1).rstrip(".") if m else "?"


def report(args: argparse.Namespace, rounds: list[tuple[int, str, float, int, int, int]]) -> str:
    """The run as a RESULTS.md section."""
    from sipgate import native

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    medians = {mode: statistics.median(us for _, m, us, *_ in rounds if m == mode) for mode in ("batched", "recvfrom")}
    lower = sum(1 for r in range(args.rounds)
                if next(us for n, m, us, *_ in rounds if n == r and m == "batched")
                < next(us for n, m, us, *_ in rounds if n == r and m == "recvfrom"))
    lines = [
        "",
        f"## {dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%MZ} — batched system calls, IPv{args.family} "
        f"({commit.stdout.strip() or 'uncommitted'})",
        "",
        f"`benchmarks/bench_batch.py --family {args.family} --rate {args.rate} --calls {args.calls} "
        f"--rounds {args.rounds}` on {platform.machine()}, {os.cpu_count()} cores, {cpu}; Python "
        f"{platform.python_version()}, SIPp {sipp_version()}; sipgate {native.status()[1]}. Denied calls "
        f"(SIPp `uac_403`) at a {'`[::1]`' if args.family == 6 else '`127.0.0.1`'} listener, SIPp on core 0 and "
        "sipgate on core 1; a fresh sipgate per round, 1,000 warm-up calls, then the step; CPU of sipgate "
        "(utime + stime) per successful call. \"recvfrom\": the same build with the batched functions removed.",
        "",
        "| round | mode | CPU / call | successful | failed | retransmissions |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {n + 1} | {mode} | {us:.1f} µs | {ok:,} | {failed} | {retrans} |"
              for n, mode, us, ok, failed, retrans in rounds]
    lines += ["", f"Medians: batched {medians['batched']:.1f} µs, recvfrom {medians['recvfrom']:.1f} µs per call, "
              f"ratio {medians['batched'] / medians['recvfrom']:.2f}; batched lower in {lower} of "
              f"{args.rounds} rounds."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", type=int, choices=(4, 6), default=6)
    ap.add_argument("--rate", type=int, default=3000)
    ap.add_argument("--calls", type=int, default=9000)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"), help="append here ('-': stdout only)")
    args = ap.parse_args(argv)
    if not 1 <= args.rounds <= 20 or not 1 <= args.rate <= 100_000 or not 1 <= args.calls <= 1_000_000:
        ap.error("--rounds 1-20, --rate 1-100000, --calls 1-1000000")
    if shutil.which("sipp") is None:
        print("no sipp (Debian's sip-tester)", file=sys.stderr)
        return 1
    if args.family == 6:
        family, source, host = socket.AF_INET6, "::1", "::1"
    else:
        family, source, host = socket.AF_INET, "127.0.0.3", "127.0.0.1"
    port = free_port(family, host)
    listen = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
    rounds: list[tuple[int, str, float, int, int, int]] = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        workdir = Path(tmp)
        for r in range(args.rounds):
            for mode in (("recvfrom", "batched") if r % 2 == 0 else ("batched", "recvfrom")):
                edge = Sipgate(mode, workdir, listen, port)
                try:
                    flood(edge.proc.pid, listen, source, family, 1000, 1000, workdir)  # warm-up
                    us, ok, failed, retrans = flood(edge.proc.pid, listen, source, family, args.rate, args.calls,
                                                    workdir)
                finally:
                    edge.stop()
                rounds.append((r, mode, us, ok, failed, retrans))
                print(f"round {r + 1} {mode:>8}: {us:6.1f} µs/call  ({ok:,} successful, {failed} failed, "
                      f"{retrans} retransmissions)", flush=True)
    text = report(args, rounds)
    print(text)
    if args.results != "-":
        with open(args.results, "a") as out:
            out.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
