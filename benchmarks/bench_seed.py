"""How long a large seed takes to load, and what its parts cost, side by side.

A seed of N entries (benchmarks/table.py's: random IPv4 networks over four
trunks) is loaded into a fresh SQLite store with ``sipgate.store.seed``;
each of the parts that dominated it is timed next to what it replaced, in
the same run, alternating:

* the TOML parse: ``tomllib`` (the standard library, pure Python) against
  ``tomli`` (its upstream, compiled with mypyc in its wheels), the one the
  seed uses;
* the address check: ``validate._ip_entry`` (netaddr, every form) against
  ``validate.ip_entry`` (a strict dotted quad without netaddr, the rest
  through ``_ip_entry``), over the seed's own entries;
* the SIDs: one ``uuid4`` each against ``validate.new_sids``.

Then the whole ``load_seed``, timed ``--repeat`` times into fresh stores,
and with ``--baseline REV`` the same load by the sipgate of git revision
REV (a temporary worktree, in a subprocess), alternating with this one.
Medians; appended to ``benchmarks/RESULTS.md`` with machine and versions.

    .venv/bin/python benchmarks/bench_seed.py [--entries 100000,1000000] [--repeat 3]
        [--baseline REV] [--results benchmarks/RESULTS.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import tomli  # noqa: E402

import table as tables  # noqa: E402
from common import baseline_worktree, publish  # noqa: E402
from sipgate.store import open_store  # noqa: E402
from sipgate.store import validate as v  # noqa: E402
from sipgate.store.seed import load_seed  # noqa: E402


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def pairs(old: Callable[[], Any], new: Callable[[], Any], repeat: int) -> tuple[float, float]:
    """Median seconds of ``old`` and of ``new``, run alternately (ABBA)."""
    a: list[float] = []
    b: list[float] = []
    for r in range(repeat):
        if r % 2 == 0:
            a.append(timed(old))
            b.append(timed(new))
        else:
            b.append(timed(new))
            a.append(timed(old))
    return statistics.median(a), statistics.median(b)


# One load_seed in a subprocess, by the sipgate at sys.argv[1]: its seconds.
_BASELINE_LOAD = """
import sys, time
sys.path.insert(0, sys.argv[1])
from sipgate.store import open_store
from sipgate.store.seed import load_seed
store = open_store("sqlite:///" + sys.argv[3])
start = time.perf_counter()
load_seed(store, sys.argv[2])
print(time.perf_counter() - start)
store.close()
"""


def fresh(workdir: Path) -> Path:
    db = workdir / "seed.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return db


def load_by(tree: Path, seed: Path, workdir: Path) -> float:
    """Seconds of one load_seed by the sipgate in ``tree``, into a fresh store."""
    out = subprocess.run([sys.executable, "-c", _BASELINE_LOAD, str(tree), str(seed), str(fresh(workdir))],
                         capture_output=True, text=True, timeout=3600, check=True)
    return float(out.stdout.split()[-1])


def load(seed: Path, workdir: Path) -> float:
    """Seconds of one load_seed into a fresh SQLite store."""
    store = open_store(f"sqlite:///{fresh(workdir)}")
    try:
        start = time.perf_counter()
        report = load_seed(store, seed)
        seconds = time.perf_counter() - start
    finally:
        store.close()
    assert report.created.get("ip_addresses", 0) > 0, report
    return seconds


def measure(entries: int, repeat: int, workdir: Path, baseline: Path | None) -> dict[str, float]:
    seed = tables.write_seed(tables.generate(entries - tables.TRUNKS), workdir / f"seed-{entries}.toml")
    with open(seed, "rb") as fh:
        text = fh.read().decode()
    out: dict[str, float] = {}
    out["toml_old"], out["toml_new"] = pairs(lambda: tomllib.loads(text), lambda: tomli.loads(text), repeat)
    data = tomli.loads(text)
    rows = [(ip["ip_address"], ip.get("cidr_prefix_length")) for account in data["accounts"]
            for acl in account["ip_access_control_lists"] for ip in acl["ip_addresses"]]
    assert [v._ip_entry(a, p) for a, p in rows[:1000]] == [v.ip_entry(a, p) for a, p in rows[:1000]]
    out["check_old"], out["check_new"] = pairs(lambda: [v._ip_entry(a, p) for a, p in rows],
                                               lambda: [v.ip_entry(a, p) for a, p in rows], repeat)
    n = len(rows)
    out["sid_old"], out["sid_new"] = pairs(lambda: sorted("IP" + uuid.uuid4().hex for _ in range(n)),
                                           lambda: v.new_sids("IP", n), repeat)
    if baseline is None:
        out["load"] = statistics.median(load(seed, workdir) for _ in range(repeat))
    else:
        out["load_old"], out["load"] = pairs(lambda: load_by(baseline, seed, workdir),
                                             lambda: load_by(ROOT, seed, workdir), repeat)
    out["entries"] = n
    return out


def report(args: argparse.Namespace, results: list[dict[str, float]]) -> str:
    baseline_head = f" | whole `load_seed` at {args.baseline}" if args.baseline else ""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    lines = [
        "",
        f"## {dt.datetime.now(dt.timezone.utc):%Y-%m-%dT%H:%MZ} — seed load ({commit.stdout.strip() or 'uncommitted'})",
        "",
        f"`benchmarks/bench_seed.py --entries {args.entries} --repeat {args.repeat}"
        f"{' --baseline ' + args.baseline if args.baseline else ''}` on {platform.machine()}, "
        f"{os.cpu_count()} cores, {cpu}; Python {platform.python_version()}, tomli {tomli.__version__}. "
        "A seed of random IPv4 networks over four trunks (benchmarks/table.py) into a fresh SQLite store; "
        "each part next to what it replaced, alternating, medians of the repeats.",
        "",
        "| entries | TOML: tomllib | TOML: tomli | address check: netaddr | address check: dotted-quad shortcut "
        f"| SIDs: uuid4 each | SIDs: new_sids | whole `load_seed`{baseline_head} |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if args.baseline else ""),
    ]
    for r in results:
        lines.append(f"| {int(r['entries']):,} | {r['toml_old']:.2f} s | {r['toml_new']:.2f} s "
                     f"({r['toml_new'] / r['toml_old']:.2f}) | {r['check_old']:.2f} s | {r['check_new']:.2f} s "
                     f"({r['check_new'] / r['check_old']:.2f}) | {r['sid_old']:.2f} s | {r['sid_new']:.2f} s "
                     f"({r['sid_new'] / r['sid_old']:.2f}) | {r['load']:.2f} s |"
                     + (f" {r['load_old']:.2f} s |" if "load_old" in r else ""))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entries", default="100000,1000000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--baseline", help="a git revision whose load_seed to time beside this one")
    ap.add_argument("--results", default=str(HERE / "RESULTS.md"), help="append here ('-': stdout only)")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.entries.split(",")]
    if not 1 <= args.repeat <= 20 or not all(tables.TRUNKS < n <= 5_000_000 for n in sizes):
        ap.error(f"--repeat 1-20, --entries each {tables.TRUNKS + 1}-5000000")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-seed-") as tmp, \
            baseline_worktree(args.baseline, Path(tmp)) as baseline:
        for n in sizes:
            results.append(measure(n, args.repeat, Path(tmp), baseline))
            print(f"{n:,} entries: {results[-1]}", flush=True)
    publish(report(args, results), args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
