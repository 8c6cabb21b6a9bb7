"""Instructions per call through the receive path, counted by callgrind.

callgrind counts instructions, not seconds: the same binary on the same
input gives the same count on a busy VM and on a quiet one, so a change of
a few per cent in the receive path shows here when no SIPp run could tell
it from the machine's noise.  Two pairs of datagrams go straight into
``EdgeProtocol.datagram_received`` (10-entry table, the fast path, a
transport that keeps only the last datagram sent):

- admitted: the caller's INVITE relayed to the PBX, and the PBX's 200 OK
  relayed back to the caller;
- denied: an INVITE from an unlisted source answered 403, and its ACK;
- scanned: the denied pair from 1,000 unlisted sources in turn with the
  flood defence on at its defaults (as ``sipgate serve`` runs unless
  ``[flood] enabled = false``): each 403 counts towards its source's
  window, none reaches the ban.  (The SIPp benchmark turns the defence
  off: it floods from one source on purpose.)

Each pair runs ``--count`` times after a warm-up of 200, and once more with
a count of 0; the difference over the count is per pair (start-up, imports
and warm-up cancel out).  With ``--baseline REV`` the same runs at another
revision (a git worktree, its receive path compiled with ``sipgate native
build``), side by side.  Needs valgrind; appends to ``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/bench_instructions.py [--count 2000] [--baseline REV] [--results -]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import baseline_worktree, publish

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PAIRS = ("admitted", "denied", "scanned")
SCANNERS = 1000
WARM_UP = 200


def child(root: str, pair: str, count: int) -> None:
    """Run one pair ``count`` times against the sipgate under ``root``
    (imported before bench_receive, which would put this checkout first)."""
    sys.path.insert(0, root)
    from sipgate.config import FloodConfig, Listener, SipConfig
    from sipgate.flood import FloodGuard
    from sipgate.sip import fast
    from sipgate.transport import Edge, EdgeProtocol

    from bench_receive import INVITE, build_table, relayed_ok

    class Last:
        max_size = 65535
        data = b""

        def sendto(self, data: bytes, addr: tuple) -> None:
            self.data = data

    edge = Edge(SipConfig(listen=(Listener("127.0.0.1", 5060),), pbx=("127.0.0.1", 5070)))
    edge.install(build_table(10))
    proto = EdgeProtocol(edge, edge.config.listen[0])
    edge.fast_path = True
    if pair == "admitted":
        second, first_from, second_from = relayed_ok(proto, ("127.0.0.2", 5080)), ("127.0.0.2", 5080), ("127.0.0.1", 5070)
        want = (b"INVITE ", b"SIP/2.0 200 ")
    else:
        second = INVITE.replace(b"INVITE sip:", b"ACK sip:", 1).replace(b"CSeq: 1 INVITE", b"CSeq: 1 ACK")
        first_from = second_from = ("127.0.0.3", 5080)
        want = (b"SIP/2.0 403 ", b"SIP/2.0 403 ")  # (the ACK is absorbed: nothing new is sent)
    sources = [(first_from, second_from)]
    if pair == "scanned":
        flood = FloodConfig()
        edge.flood = FloodGuard(flood.density, flood.window, flood.ban_seconds, flood.max_sources,
                                exempt=edge.exempt)
        sources = [((f"127.1.{i >> 8}.{i & 255}", 5080),) * 2 for i in range(SCANNERS)]
    transport = Last()
    proto.connection_made(transport)  # type: ignore[arg-type]
    for i in range(WARM_UP + count):
        first_from, second_from = sources[i % len(sources)]
        proto.datagram_received(INVITE, first_from)
        assert transport.data.startswith(want[0]), transport.data[:40]
        proto.datagram_received(second, second_from)
        assert transport.data.startswith(want[1]), transport.data[:40]
    assert edge.stats.internal_errors == 0
    assert edge.flood is None or edge.flood.bans == 0
    print("compiled" if fast.__file__.endswith((".so", ".pyd")) else "pure")


def instructions(root: Path, pair: str, count: int) -> tuple[int, str]:
    """callgrind's instruction count of a child run, and how it ran."""
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, __file__, "--child", str(root), pair, str(count)],
        capture_output=True, text=True, timeout=1800, cwd=HERE,
        env={**os.environ, "PYTHONHASHSEED": "0"})  # (dict layouts, hence counts, repeat)
    found = re.search(r"refs:\s+([\d,]+)", run.stderr)
    if run.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run of {pair} at {root} failed:\n{run.stdout}{run.stderr[-2000:]}")
    return int(found.group(1).replace(",", "")), run.stdout.strip()


def per_pair(root: Path, pair: str, count: int) -> tuple[float, str]:
    total, mode = instructions(root, pair, count)
    base, _ = instructions(root, pair, 0)
    return (total - base) / count, mode


def report(args: argparse.Namespace, rows: list[tuple[str, str, float, float | None]]) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "sipgate"], cwd=ROOT, capture_output=True, text=True)
    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True).stdout.strip()
    here = (commit.stdout.strip() or "uncommitted") + (", sipgate/ has uncommitted changes" if dirty.stdout else "")
    lines = [
        "",
        f"## {dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%MZ} — instructions per call, callgrind ({here})",
        "",
        f"`benchmarks/bench_instructions.py --count {args.count}"
        f"{' --baseline ' + args.baseline if args.baseline else ''}` on {platform.machine()}; "
        f"Python {platform.python_version()}, {valgrind}. Instructions per pair of datagrams through "
        "`EdgeProtocol.datagram_received` (10 entries, fast path, no kernel): (count run - empty run) / count.",
        "",
        "| pair | build | instructions per pair" + (f" | at {args.baseline} | ratio |" if args.baseline else " |"),
        "| --- | --- | ---: |" + (" ---: | ---: |" if args.baseline else ""),
    ]
    labels = {"admitted": "admitted: INVITE relayed + its 200 relayed back",
              "denied": "denied: INVITE -> 403 + its ACK",
              "scanned": f"scanned: the denied pair from {SCANNERS:,} sources, flood defence on"}
    for pair, mode, now, then in rows:
        line = f"| {labels[pair]} | {mode} | {now:,.0f} |"
        if then is not None:
            line += f" {then:,.0f} | {now / then:.3f} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000, help="pairs per counted run (100-100000)")
    ap.add_argument("--baseline", help="a git revision to count beside this checkout")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"), help="append here ('-': stdout only)")
    ap.add_argument("--child", nargs=3, metavar=("ROOT", "PAIR", "COUNT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        root, pair, count = args.child
        child(root, pair, int(count))
        return 0
    if not 100 <= args.count <= 100_000:
        ap.error("--count 100-100000")
    if shutil.which("valgrind") is None:
        ap.error("needs valgrind (Debian: apt-get install valgrind)")
    if args.baseline:
        rev = subprocess.run(["git", "rev-parse", "--short", args.baseline], cwd=ROOT, capture_output=True, text=True)
        if rev.returncode != 0:
            ap.error(f"--baseline {args.baseline}: not a revision of this repository")
        args.baseline = rev.stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as tmp, \
            baseline_worktree(args.baseline, Path(tmp)) as baseline:
        if baseline is not None:
            subprocess.run([sys.executable, "-m", "sipgate", "native", "build"], cwd=baseline, check=True,
                           env={**os.environ, "PYTHONPATH": str(baseline)}, capture_output=True)
        rows = []
        for pair in PAIRS:
            now, mode = per_pair(ROOT, pair, args.count)
            then = None
            if baseline is not None:
                then, then_mode = per_pair(baseline, pair, args.count)
                if then_mode != mode:
                    raise SystemExit(f"{args.baseline} ran {then_mode}, this checkout {mode}: not comparable")
            print(f"{pair}: {now:,.0f}" + (f" (at {args.baseline}: {then:,.0f})" if then is not None else ""),
                  flush=True)
            rows.append((pair, mode, now, then))
    publish(report(args, rows), args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
