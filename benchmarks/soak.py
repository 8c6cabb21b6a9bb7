"""A bounded soak: does sipgate's memory stay flat under steady mixed load?

One real ``sipgate serve`` (demo seed: trunk demo.sipgate.test admits
127.0.0.2; ``[flood] enabled = false``, or the ban would silence the flood)
runs for ``--minutes`` (default 10) with, all at once:

- a denied SIPp flood, ``uac_403`` from 127.0.0.3 at ``--denied-rate``
  (500 calls/s): INVITE, 403, ACK;
- admitted SIPp calls, ``uac_call`` from 127.0.0.2 at ``--admitted-rate``
  (50 calls/s) through sipgate to a SIPp ``uas_no180`` standing in for the PBX;
- an API write every second through the real REST API: an address
  (127.0.1.x) added to the demo list, then removed the next second; each
  write's HTTP status is counted.

Every ``--sample-seconds`` (5) it reads sipgate's RSS (``VmRSS`` of
``/proc/PID/status``).  At the end it prints a Markdown section (RSS start,
min, max, end, the least-squares slope per minute over the whole run and
over its second half, i.e. after warm-up; SIPp's created / successful /
failed / retransmitted calls; the API writes by status; sipgate's own error
counters) and appends it to ``benchmarks/RESULTS.md`` (``--results``; a new
section, older ones are left as they are).

Bounded: SIPp agents get ``-m`` (calls = rate x duration) and ``-timeout``,
every wait has a deadline, and every process started here (sipgate, three
SIPp agents) is stopped by its PID in a ``finally``.  Loopback only.

    .venv/bin/python benchmarks/soak.py --minutes 2
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from bench_sip import ALLOWED, DENIED, Sipp, SippRun, _udp_bound, free_port, log, sipp_version  # noqa: E402
from peer_kamailio import wait_answering  # noqa: E402

ACCOUNT_SID = "AC00000000000000000000000000000001"  # the demo seed's account
AUTH_TOKEN = "soak-token"
DOMAIN = "demo.sipgate.test"
SEED = ROOT / "config" / "demo-seed.toml"


def rss_kib(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def slope_per_minute(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS (KiB) over time, in KiB per minute."""
    if len(samples) < 2:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mr = sum(r for _, r in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return None
    return sum((t - mt) * (r - mr) for t, r in samples) / var * 60.0


class Api:
    """The REST API with the demo account's Basic auth (urllib, no client library)."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.auth = "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()

    def call(self, method: str, path: str, form: dict | None = None) -> tuple[int, dict]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Authorization": self.auth})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                body = resp.read()
                return resp.status, (json.loads(body) if body else {})
        except urllib.error.HTTPError as exc:
            return exc.code, {}
        except OSError:
            return 0, {}  # no answer (0 in the report)


def api_changes(api: Api, stop: threading.Event, counts: dict[str, int]) -> None:
    """One write a second: add an address, remove it the next second."""
    acls = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
    status, body = api.call("GET", acls + ".json")
    if status != 200 or not body.get("ip_access_control_lists"):
        counts[f"list lookup {status}"] = counts.get(f"list lookup {status}", 0) + 1
        return
    acl = body["ip_access_control_lists"][0]["sid"]
    added: str | None = None
    n = 0
    while not stop.wait(1.0):
        n += 1
        if added is None:
            status, body = api.call("POST", f"{acls}/{acl}/IpAddresses.json",
                                    {"FriendlyName": f"soak-{n}", "IpAddress": f"127.0.1.{n % 250 + 1}"})
            key = f"POST {status}"
            if status == 201:
                added = body["sid"]
        else:
            status, _ = api.call("DELETE", f"{acls}/{acl}/IpAddresses/{added}.json")
            key = f"DELETE {status}"
            if status in (204, 404):
                added = None
        counts[key] = counts.get(key, 0) + 1


def metrics(port: int) -> dict[str, float]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    except OSError:
        return {}
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^(sipgate_\w+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


def start_sipgate(workdir: Path, sip_port: int, pbx_port: int) -> tuple[subprocess.Popen, Path, int, int]:
    config = workdir / "sipgate.toml"
    config.write_text(
        "[sip]\n"
        f'listen = ["127.0.0.1:{sip_port}"]\n'
        f'pbx = "127.0.0.1:{pbx_port}"\n'
        "socket_buffer = 4194304\n"
        'secret = "soak-secret"\n'
        "[store]\n"
        f'url = "sqlite:{workdir / "edge.db"}"\n'
        "poll_interval = 0.5\n"
        "[metrics]\nlisten = \"127.0.0.1:0\"\n"
        "[api]\nlisten = \"127.0.0.1:0\"\n"
        f'[[accounts]]\nsid = "{ACCOUNT_SID}"\nauth_token = "{AUTH_TOKEN}"\n'
        "[flood]\nenabled = false\n")
    log_path = workdir / "sipgate.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "sipgate.cli", "serve", "--config", str(config),
                                 "--seed", str(SEED)], cwd=ROOT, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_answering("127.0.0.1", sip_port, proc, 60.0, source=ALLOWED)
        deadline = time.monotonic() + 10
        while True:
            text = log_path.read_text(errors="replace")
            api = re.search(r"API on http://127\.0\.0\.1:(\d+)", text)
            met = re.search(r"metrics on http://127\.0\.0\.1:(\d+)", text)
            if api and met:
                return proc, log_path, int(api.group(1)), int(met.group(1))
            if time.monotonic() > deadline:
                raise RuntimeError("sipgate did not log its API and metrics ports:\n" + text[-2000:])
            time.sleep(0.1)
    except BaseException:
        stop_proc(proc)
        raise


def stop_proc(proc: subprocess.Popen) -> int | None:
    """SIGTERM by PID, then SIGKILL after 10 s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def fmt_mib(kib: float | None) -> str:
    return "-" if kib is None else f"{kib / 1024:.1f} MiB"


def run(args: argparse.Namespace) -> str:
    seconds = int(args.minutes * 60)
    workdir = Path(tempfile.mkdtemp(prefix="sipgate-soak-"))
    sip_port, pbx_port = free_port(), free_port()
    log(f"soak: {args.minutes:g} min, denied {args.denied_rate}/s, admitted {args.admitted_rate}/s, "
        f"1 API write/s; work dir {workdir}")
    proc, log_path, api_port, metrics_port = start_sipgate(workdir, sip_port, pbx_port)
    agents: list[Sipp] = []
    samples: list[tuple[float, int]] = []
    counts: dict[str, int] = {}
    stop = threading.Event()
    writer: threading.Thread | None = None
    runs: dict[str, SippRun] = {}
    exit_code = None
    try:
        sipp_dir = workdir / "sipp"
        uas = Sipp("uas", "uas_no180", ("127.0.0.1", pbx_port), None, sipp_dir, timeout=seconds + 60)
        agents.append(uas)
        deadline = time.monotonic() + 5
        while not _udp_bound("127.0.0.1", pbx_port) and time.monotonic() < deadline and uas.proc.poll() is None:
            time.sleep(0.02)
        keys = {"trunk_domain": DOMAIN}
        remote = ("127.0.0.1", sip_port)
        agents.append(Sipp("admitted", "uac_call", (ALLOWED, free_port(ALLOWED)), remote, sipp_dir,
                           rate=args.admitted_rate, calls=args.admitted_rate * seconds,
                           limit=max(args.admitted_rate * 4, 200), timeout=seconds + 30, keys=keys))
        agents.append(Sipp("denied", "uac_403", (DENIED, free_port(DENIED)), remote, sipp_dir,
                           rate=args.denied_rate, calls=args.denied_rate * seconds,
                           limit=max(args.denied_rate * 4, 200), timeout=seconds + 30, keys=keys))
        writer = threading.Thread(target=api_changes, args=(Api(api_port), stop, counts), daemon=True)
        writer.start()
        t0 = time.monotonic()
        end = t0 + seconds
        while True:
            now = time.monotonic()
            if (rss := rss_kib(proc.pid)) is not None:
                samples.append((now - t0, rss))
            if now >= end or proc.poll() is not None:
                break
            time.sleep(min(args.sample_seconds, max(end - now, 0.0)))
        stop.set()
        writer.join(15)
        before_stop = metrics(metrics_port)
        for agent in agents[1:]:  # the callers end on their own (-m); bounded by their deadline
            runs[agent.name] = agent.wait()
        runs["uas"] = uas.stop()
    finally:
        stop.set()
        for agent in agents:
            if agent.proc.poll() is None:
                agent.stop()
        exit_code = stop_proc(proc)
    return report(args, samples, runs, counts, before_stop, exit_code, log_path)


def report(args, samples, runs, counts, m, exit_code, log_path) -> str:
    rss = [r for _, r in samples]
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
    lines = [
        "",
        f"## Soak, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC: {args.minutes:g} min",
        "",
        f"`benchmarks/soak.py --minutes {args.minutes:g}` on {platform.node()} ({os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, SIPp {sipp_version()}): one `sipgate serve` (demo seed, "
        f"flood ban off), a denied SIPp flood from {DENIED} at {args.denied_rate} calls/s, admitted SIPp "
        f"calls from {ALLOWED} at {args.admitted_rate} calls/s to a SIPp uas, one API write a second "
        f"(an address added, then removed). RSS sampled every {args.sample_seconds:g} s.",
        "",
        "| RSS start | min | max | end | slope (whole run) | slope (2nd half) | samples |",
        "|---|---|---|---|---|---|---|",
    ]
    s_all, s_half = slope_per_minute(samples), slope_per_minute(half)
    if rss:
        lines.append(f"| {fmt_mib(rss[0])} | {fmt_mib(min(rss))} | {fmt_mib(max(rss))} | {fmt_mib(rss[-1])} | "
                     f"{'-' if s_all is None else f'{s_all:+.0f} KiB/min'} | "
                     f"{'-' if s_half is None else f'{s_half:+.0f} KiB/min'} | {len(rss)} |")
    lines += ["", "RSS curve (s: MiB): " + ", ".join(f"{t:.0f}: {r / 1024:.1f}" for t, r in samples), "",
              "| SIPp | created | successful | failed | retransmissions | exit |", "|---|---|---|---|---|---|"]
    for name in ("denied", "admitted", "uas"):
        r = runs.get(name)
        if r is not None:
            lines.append(f"| {name} | {r.created} | {r.successful} | {r.failed} | {r.retrans} | {r.exit_code} |")
    lines += ["", "API writes by status: " + (", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"),
              "", "sipgate counters at the end: " + ", ".join(
                  f"{k.removeprefix('sipgate_')} {m.get(k, 0):.0f}" for k in (
                      "sipgate_internal_errors_total", "sipgate_send_errors_total",
                      "sipgate_parse_errors_total", "sipgate_table_reload_failures_total",
                      "sipgate_store_revision", "sipgate_table_generation"))
              + f"; exit code after SIGTERM {exit_code}."]
    errors = [ln for ln in log_path.read_text(errors="replace").splitlines()
              if "ERROR" in ln or "Traceback" in ln]
    lines += ["", f"Error lines in sipgate's log: {len(errors)}" + (f" (first: `{errors[0][:200]}`)" if errors else "")]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--denied-rate", type=int, default=500)
    p.add_argument("--admitted-rate", type=int, default=50)
    p.add_argument("--sample-seconds", type=float, default=5.0)
    p.add_argument("--results", default=str(HERE / "RESULTS.md"), help="append here ('-': stdout only)")
    args = p.parse_args(argv)
    if not 0 < args.minutes <= 24 * 60:
        p.error("--minutes must be in (0, 1440]")
    text = run(args)
    sys.stdout.write(text)
    if args.results != "-":
        with open(args.results, "a") as f:
            f.write(text)
        log(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
