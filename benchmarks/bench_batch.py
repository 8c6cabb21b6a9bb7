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
import datetime as dt
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from bench_sip import free_port, sipp_version  # noqa: E402
from common import publish  # noqa: E402
from peer_kamailio import cpu_seconds, pinned, stop_pid  # noqa: E402

from sipgate import native  # noqa: E402
from sipgate.sippkit import parse_outcome  # noqa: E402

SCENARIO = HERE / "scenarios" / "uac_403.xml"
DEMO_SEED = ROOT / "config" / "demo-seed.toml"
DOMAIN = "demo.sipgate.test"
# SIPp on core 0, sipgate on core 1, as bench_sip.py places them (2+ cores).
PINNED = (os.cpu_count() or 1) >= 2
# sipgate serve, with the batched functions removed first for "recvfrom".
SERVE = ("import sys\n"
         "if sys.argv[1] == 'recvfrom':\n"
         "    import sipgate.transport.udp as u\n"
         "    u._recv_batch = u._send_batch = u._send_batch6 = None\n"
         "from sipgate.cli import main\n"
         "sys.exit(main(['serve', '--config', sys.argv[2], '--seed', sys.argv[3]]))\n")


class Sipgate:
    """One ``sipgate serve`` on a fresh store, pinned to core 1, stopped by PID."""

    def __init__(self, mode: str, workdir: Path, listen: str, port: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=workdir))
        config = self.dir / "sipgate.toml"
        config.write_text(
            "[sip]\n"
            f'listen = [{{ address = "{listen}", default_trunk = "{DOMAIN}" }}]\n'
            f'pbx = "127.0.0.1:{free_port("127.0.0.1")}"\n'
            f'[store]\nurl = "sqlite:{self.dir / "edge.db"}"\n'
            '[metrics]\nlisten = "127.0.0.1:0"\n[api]\nlisten = "127.0.0.1:0"\n'
            "[flood]\nenabled = false\n")
        self.log = self.dir / "sipgate.log"
        cmd = [sys.executable, "-c", SERVE, mode, str(config), str(DEMO_SEED)]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                                         cwd=ROOT, preexec_fn=pinned({1} if PINNED else None))
        deadline = time.monotonic() + 30
        while f":{port}," not in self.log.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sipgate did not start:\n" + self.log.read_text()[-2000:])
            time.sleep(0.05)

    def stop(self) -> None:
        stop_pid(self.proc)


def flood(pid: int, target: str, source: str, rate: int, calls: int, workdir: Path) -> tuple[float, int, int, int]:
    """One SIPp step: (CPU µs of pid per successful call, successful, failed,
    retransmissions)."""
    stat = workdir / f"stat-{time.monotonic_ns()}.csv"
    cmd = ["sipp", target, "-i", source, "-p", str(free_port(source)), "-sf", str(SCENARIO),
           "-key", "trunk_domain", DOMAIN, "-r", str(rate), "-m", str(calls), "-l", str(max(rate, 200)),
           "-buff_size", "4194304", "-nostdin", "-timeout", f"{calls // rate + 20}s",
           "-trace_stat", "-stf", str(stat)]
    before = cpu_seconds([pid])
    subprocess.run(cmd, cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=calls / rate + 60, preexec_fn=pinned({0} if PINNED else None))
    used = cpu_seconds([pid]) - before
    stats, counts, _ = parse_outcome(stat, workdir / "no-screen-file")
    ok = counts["successful_calls"]
    return used / max(ok, 1) * 1e6, ok, counts["failed_calls"], int(float(stats.get("Retransmissions(C)") or 0))


def report(args: argparse.Namespace, rounds: list[tuple[int, str, float, int, int, int]]) -> str:
    """The run as a RESULTS.md section."""
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
    source, host = ("::1", "::1") if args.family == 6 else ("127.0.0.3", "127.0.0.1")
    port = free_port(host)
    listen = f"[{host}]:{port}" if args.family == 6 else f"{host}:{port}"
    rounds: list[tuple[int, str, float, int, int, int]] = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        workdir = Path(tmp)
        for r in range(args.rounds):
            for mode in (("recvfrom", "batched") if r % 2 == 0 else ("batched", "recvfrom")):
                edge = Sipgate(mode, workdir, listen, port)
                try:
                    flood(edge.proc.pid, listen, source, 1000, 1000, workdir)  # warm-up
                    us, ok, failed, retrans = flood(edge.proc.pid, listen, source, args.rate, args.calls, workdir)
                finally:
                    edge.stop()
                rounds.append((r, mode, us, ok, failed, retrans))
                print(f"round {r + 1} {mode:>8}: {us:6.1f} µs/call  ({ok:,} successful, {failed} failed, "
                      f"{retrans} retransmissions)", flush=True)
    publish(report(args, rounds), args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
