"""Benchmark sipgate's PrefixMatcher against netaddr IPSet, pytricia and py-radix.

Usage: python benchmarks/bench_matcher.py [--sizes 10,10000,1000000] [--quick]
       [--impls PrefixMatcher,pytricia] [--no-parse-table]

Each (implementation, size) is measured in a fresh subprocess so the resident
memory it reports is the structure's own, not memory freed by a previous
build.  Prints markdown tables to stdout.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import pickle
import platform
import random
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from sipgate.acl import PrefixMatcher, parse_address  # noqa: E402

SEED = 20240601
CATEGORIES = ("v4 hit", "v4 miss", "v4 near", "v6 hit", "v6 miss", "v6 near")
IMPLS = ("PrefixMatcher", "netaddr.IPSet", "pytricia", "py-radix")

Entry = tuple[str, int, int]


# --- data -----------------------------------------------------------------------


def v4_text(value: int) -> str:
    return f"{value >> 24}.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def v6_text(value: int) -> str:
    return ":".join(f"{(value >> s) & 0xFFFF:x}" for s in range(112, -16, -16))


def make_entries(size: int, rng: random.Random) -> list[Entry]:
    """Half IPv4 (/32, /24, few /16), half IPv6 (/128, /64, /48).

    IPv4 networks live in 0.0.0.0/1 and /16s are capped so that misses exist
    even at a million entries (a third of them as /16s would cover the space).
    """
    entries: list[Entry] = []
    n4 = size // 2 + size % 2
    n16 = min(max(n4 // 100, 1 if n4 >= 3 else 0), 1000)
    for i in range(n4):
        plen = 16 if i < n16 else (24 if i % 2 else 32)
        value = rng.getrandbits(31) >> (32 - plen) << (32 - plen)
        entries.append((v4_text(value), plen, len(entries)))
    for i in range(size - n4):
        plen = (128, 64, 48)[i % 3]
        value = (0x2 << 124) | (rng.getrandbits(124) >> (128 - plen) << (128 - plen))
        entries.append((v6_text(value), plen, len(entries)))
    return entries


def make_probes(entries: list[Entry], count: int, rng: random.Random) -> dict[str, list[str]]:
    """Addresses inside, far from, and just outside the networks."""
    ref = PrefixMatcher.build(entries)
    nets: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for text, plen, _ in entries:
        version, value = parse_address(text)  # type: ignore[misc]
        nets[version].append((value, plen))
    probes: dict[str, list[str]] = {c: [] for c in CATEGORIES}
    for version, width, fmt in ((4, 32, v4_text), (6, 128, v6_text)):
        if not nets[version]:
            continue
        hit, miss, near = probes[f"v{version} hit"], probes[f"v{version} miss"], probes[f"v{version} near"]
        for _ in range(count):
            value, plen = rng.choice(nets[version])
            hit.append(fmt(value | rng.getrandbits(width - plen) if plen < width else value))
        for _ in range(count * 50):
            if len(miss) == count:
                break
            value = rng.getrandbits(width) if version == 4 else (0x2 << 124) | rng.getrandbits(124)
            if not ref.contains_value(version, value):
                miss.append(fmt(value))
        for _ in range(count * 50):
            if len(near) == count:
                break
            value, plen = rng.choice(nets[version])
            value = value - 1 if rng.random() < 0.5 else value + (1 << (width - plen))
            if 0 <= value < 1 << width and not ref.contains_value(version, value):
                near.append(fmt(value))
    return probes


# --- implementations (worker side) ---------------------------------------------------


def build_impl(name: str, entries: list[Entry]) -> dict[str, Callable[[str], Any]]:
    """Build one implementation; return a lookup callable per probe family."""
    if name == "PrefixMatcher":
        m = PrefixMatcher.build(entries)
        return {"contains": m.contains, "lookup": m.lookup}
    if name == "netaddr.IPSet":
        import netaddr

        s = netaddr.IPSet(f"{t}/{p}" for t, p, _ in entries)
        return {"in": s.__contains__}
    if name == "pytricia":
        import pytricia

        t4, t6 = pytricia.PyTricia(32), pytricia.PyTricia(128)
        for text, plen, payload in entries:
            (t6 if ":" in text else t4)[f"{text}/{plen}"] = payload
        # One tree per family: the probe family is known, so no dispatch cost.
        return {"get v4": t4.get, "get v6": t6.get}
    if name == "py-radix":
        import radix

        r = radix.Radix()
        for text, plen, payload in entries:
            r.add(f"{text}/{plen}").data["p"] = payload
        return {"search_best": r.search_best}
    raise ValueError(name)


def status_kib(field: str) -> int:
    """A memory figure of this process from /proc/self/status, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> int:
    """Reset the RSS high-water mark (Linux >= 4.0) so it measures the build alone."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    return status_kib("VmHWM")


def is_hit(answer: Any) -> bool:
    """Normalise the answers: bool, payload (possibly 0), node, tuple or None."""
    return not (answer is None or answer is False or answer == ())


def time_lookups(fn: Callable[[str], Any], addrs: list[str], repeat: int) -> float:
    """Best-of-``repeat`` ns per call over the probe list (loop overhead included)."""
    if not addrs:
        return float("nan")
    timer = timeit.Timer("for a in addrs: fn(a)", globals={"fn": fn, "addrs": addrs})
    # About 50 ms per repeat, at least one pass over the probes.
    number = max(1, min(50, int(0.05 / max(timer.timeit(1), 1e-9))))
    return min(timer.repeat(repeat=repeat, number=number)) / (number * len(addrs)) * 1e9


def worker(name: str, data_path: str, repeat: int) -> None:
    with open(data_path, "rb") as f:
        entries, probes = pickle.load(f)
    gc.collect()
    rss0 = status_kib("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    fns = build_impl(name, entries)
    build_s = time.perf_counter() - t0
    peak1 = status_kib("VmHWM")
    gc.collect()
    rss1 = status_kib("VmRSS")
    # Warm up (adaptive interpreter, caches, CPU clock) before any timing,
    # so that the first implementation measured is not penalised.
    deadline = time.perf_counter() + 0.5
    while time.perf_counter() < deadline:
        for fn in fns.values():
            for addrs in probes.values():
                for a in addrs[:50]:
                    fn(a)
    rows = []
    for label, fn in fns.items():
        ns: dict[str, float] = {}
        for cat in CATEGORIES:
            if label.startswith("get v") and not label.endswith(cat[:2]):
                continue
            got = [fn(a) for a in probes[cat]]
            # Cross-check: every implementation must agree on hit/miss.
            wrong = sum(is_hit(g) != cat.endswith("hit") for g in got)
            if wrong:
                raise SystemExit(f"{name} {label}: {wrong} wrong answers for {cat}")
            ns[cat] = time_lookups(fn, probes[cat], repeat)
        rows.append({"label": label, "ns": ns})
    print(json.dumps({"build_s": build_s, "rss_mib": (rss1 - rss0) / 1024, "peak_mib": (peak1 - rss0) / 1024, "rows": rows}))


# --- driver ----------------------------------------------------------------------


def available(name: str) -> str | None:
    """None if the implementation imports, else the reason it does not."""
    module = {"PrefixMatcher": None, "netaddr.IPSet": "netaddr", "pytricia": "pytricia", "py-radix": "radix"}[name]
    if module is None:
        return None
    try:
        __import__(module)
    except ImportError as exc:
        return f"not importable ({exc}); `pip install {name if name != 'netaddr.IPSet' else 'netaddr'}` failed or was not run"
    return None


def parse_table(repeat: int) -> list[str]:
    import ipaddress as ip

    samples = [
        ("IPv4", "192.168.100.200"),
        ("IPv4 short", "10.0.0.1"),
        ("IPv6 compressed", "2001:db8:85a3::8a2e:370:7334"),
        ("IPv6 exploded", "2001:0db8:85a3:0000:0000:8a2e:0370:7334"),
        ("IPv6 zone id", "fe80::1%eth0"),
        ("IPv4-mapped", "::ffff:192.0.2.1"),
        ("invalid", "not-an-address"),
    ]
    lines = ["| input | text | parse_address ns | ipaddress.ip_address ns |", "|---|---|---:|---:|"]
    for label, text in samples:
        ours = min(timeit.repeat(lambda: parse_address(text), number=20000, repeat=repeat)) / 20000 * 1e9

        def theirs(t: str = text) -> object:
            try:
                return ip.ip_address(t)
            except ValueError:
                return None

        ref = min(timeit.repeat(theirs, number=5000, repeat=repeat)) / 5000 * 1e9
        lines.append(f"| {label} | `{text}` | {ours:.0f} | {ref:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="comma-separated entry counts (default 10,10000,1000000; 10,1000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="small default sizes, fewer probes and repeats")
    parser.add_argument("--impls", help="comma-separated implementations to run (default all: %s)" % ", ".join(IMPLS))
    parser.add_argument("--no-parse-table", action="store_true", help="skip the parse_address table")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "DATA"), help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], args.repeat)
        return

    sizes_text = args.sizes or ("10,1000" if args.quick else "10,10000,1000000")
    sizes = [int(s.replace("_", "")) for s in sizes_text.split(",") if s]
    probe_count = 200 if args.quick else 1000
    # The best of many short runs: shared or virtual machines are noisy.
    repeat = 3 if args.quick else 9
    print("# PrefixMatcher benchmark\n")
    print(f"- machine: `{platform.platform()}`, {platform.machine()}, {os.cpu_count()} CPU(s), {platform.processor() or 'cpu n/a'}")
    print(f"- Python {platform.python_version()} ({platform.python_implementation()})")
    print(f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}; seed {SEED}")
    print("- lookups: ns per call, best of %d, for-loop overhead included; 'near' = address just outside a network" % repeat)
    print("- memory: RSS MiB = resident growth retained after the build; peak MiB = resident high-water growth during the build; each build in a fresh process\n")

    impls = tuple(args.impls.split(",")) if args.impls else IMPLS
    unknown = set(impls) - set(IMPLS)
    if unknown:
        parser.error(f"unknown implementation(s): {', '.join(sorted(unknown))}")
    skipped = {name: why for name in impls if (why := available(name))}
    header = "| impl | call | entries | build s | RSS MiB | peak MiB | " + " | ".join(CATEGORIES) + " |"
    lines = [header, "|" + "---|" * 6 + "---:|" * len(CATEGORIES)]
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            rng = random.Random(SEED + size)
            entries = make_entries(size, rng)
            probes = make_probes(entries, probe_count, rng)
            data = os.path.join(tmp, f"data-{size}.pickle")
            with open(data, "wb") as f:
                pickle.dump((entries, probes), f)
            del entries, probes
            for name in impls:
                if name in skipped:
                    continue
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, data, "--repeat", str(repeat)]
                proc = subprocess.run(cmd, capture_output=True, text=True)
                if proc.returncode != 0:
                    why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    lines.append(f"| {name} | failed: {why} | {size:,} |" + " |" * (3 + len(CATEGORIES)))
                    continue
                result = json.loads(proc.stdout)
                for i, row in enumerate(result["rows"]):
                    build = f"{result['build_s']:.3f} | {result['rss_mib']:.1f} | {result['peak_mib']:.1f}" if i == 0 else "〃 | 〃 | 〃"
                    cells = " | ".join(f"{row['ns'][c]:.0f}" if c in row["ns"] else "" for c in CATEGORIES)
                    lines.append(f"| {name} | {row['label']} | {size:,} | {build} | {cells} |")
            print(f"(size {size:,} done)", file=sys.stderr, flush=True)
    print("\n".join(lines))
    for name, why in skipped.items():
        print(f"\n- {name}: {why}")
    if not args.no_parse_table:
        print("\n## parse_address\n")
        print("\n".join(parse_table(repeat)))


if __name__ == "__main__":
    main()
