"""Change -> enforcement latency: from an API write to the edge judging by it.

For each table size N: seed one trunk whose list holds N networks, start
`sipgate serve`, then repeatedly add (and later remove) the address of a
denied caller through the REST API and time (a) the API's 2xx, which sipgate
sends only after the new table is in force, and (b) the first INVITE sent
after the 2xx, checking that it is judged by the new state.

    .venv/bin/python benchmarks/bench_enforce.py [--sizes 1000,10000,100000] [--changes 10]
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import platform
import random
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from helpers import ACCOUNT_SID, AUTH_TOKEN, DENIED, Serving, UdpPeer, request, write_config  # noqa: E402
from sipgate.sip import parse  # noqa: E402

DOMAIN = "bench.sipgate.test"


def write_seed(path: Path, entries: int) -> None:
    rng = random.Random(7)
    nets = set()
    while len(nets) < entries:
        nets.add(f"{rng.randrange(1, 127)}.{rng.randrange(256)}.{rng.randrange(256)}.0")
    rows = ",\n".join(f'  {{ ip_address = "{n}", cidr_prefix_length = 24 }}' for n in nets)
    path.write_text(
        f'[[accounts]]\nsid = "{ACCOUNT_SID}"\n'
        f'[[accounts.ip_access_control_lists]]\nfriendly_name = "bench"\nip_addresses = [\n{rows}\n]\n'
        f'[[accounts.trunks]]\ndomain_name = "{DOMAIN}"\nip_access_control_lists = ["bench"]\n')


def api(port: int, method: str, path: str, form: dict[str, str] | None = None) -> dict:
    data = urllib.parse.urlencode(form).encode() if form else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode())
    with urllib.request.urlopen(req, timeout=600) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else {}


def verdict(server: Serving, pbx: UdpPeer, caller: UdpPeer, n: int) -> str:
    caller.send(request(ruri=f"sip:1@{DOMAIN}", via_host=f"{DENIED}:{caller.address[1]}", call_id=f"e-{n}"),
                ("127.0.0.1", server.sip_port))
    if not pbx.nothing(0.3):
        return "relayed"
    return str(parse(caller.recv()[0]).status)


def measure(entries: int, changes: int, probe_prefix: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-enforce-"))
    with UdpPeer("127.0.0.1") as pbx, UdpPeer(DENIED) as caller:
        seed = tmp / "seed.toml"
        write_seed(seed, entries)
        t0 = time.perf_counter()
        server = Serving(["serve", "--config", str(write_config(tmp, pbx.address[1])), "--seed", str(seed)],
                         timeout=3600)
        start_s = time.perf_counter() - t0
        try:
            base = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
            acl = next(a for a in api(server.api_port, "GET", base + ".json")["ip_access_control_lists"]
                       if a["friendly_name"] == "bench")
            probe_list = api(server.api_port, "POST", base + ".json", {"FriendlyName": "probe-list"})
            api(server.api_port, "POST", f"{base}/{probe_list['sid']}/IpAddresses.json",
                {"FriendlyName": "probe", "IpAddress": DENIED})
            trunk = next(t for t in api(server.api_port, "GET", "/v1/Trunks?PageSize=1000")["trunks"]
                         if t["domain_name"] == DOMAIN)
            assoc_ms = []
            for i in range(changes):
                # Associate a one-entry list with the trunk holding N entries, then remove it.
                t = time.perf_counter()
                api(server.api_port, "POST", f"/v1/Trunks/{trunk['sid']}/IpAccessControlLists",
                    {"IpAccessControlListSid": probe_list["sid"]})
                assoc_ms.append((time.perf_counter() - t) * 1e3)
                assert verdict(server, pbx, caller, 10_000 + 2 * i) == "relayed", "association not enforced"
                t = time.perf_counter()
                api(server.api_port, "DELETE", f"/v1/Trunks/{trunk['sid']}/IpAccessControlLists/{probe_list['sid']}")
                assoc_ms.append((time.perf_counter() - t) * 1e3)
                assert verdict(server, pbx, caller, 10_001 + 2 * i) == "403", "dissociation not enforced"
            add_ms, del_ms = [], []
            for i in range(changes):
                t = time.perf_counter()
                ip = api(server.api_port, "POST", f"{base}/{acl['sid']}/IpAddresses.json",
                         {"FriendlyName": "probe", "IpAddress": DENIED, "CidrPrefixLength": str(probe_prefix)})
                add_ms.append((time.perf_counter() - t) * 1e3)
                assert verdict(server, pbx, caller, 2 * i) == "relayed", "change not enforced after its 2xx"
                t = time.perf_counter()
                api(server.api_port, "DELETE", f"{base}/{acl['sid']}/IpAddresses/{ip['sid']}.json")
                del_ms.append((time.perf_counter() - t) * 1e3)
                assert verdict(server, pbx, caller, 2 * i + 1) == "403", "removal not enforced after its 2xx"
        except BaseException:
            sys.stderr.write("".join(server.log[-20:]))
            raise
        finally:
            server.stop(timeout=120)  # a full compile of 1M entries may be in progress
    all_ms = sorted(add_ms + del_ms)
    return {"start_s": start_s, "p50": statistics.median(all_ms), "max": all_ms[-1],
            "add_p50": statistics.median(add_ms), "del_p50": statistics.median(del_ms),
            "assoc_p50": statistics.median(assoc_ms), "assoc_max": max(assoc_ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--changes", type=int, default=10)
    # /24 like every seeded entry: the change lands in the biggest table,
    # which is copied (the worst case); /32 lands in a table of its own.
    ap.add_argument("--probe-prefix", type=int, default=24)
    args = ap.parse_args()
    print(f"# change -> enforcement — {datetime.date.today()} — Python {platform.python_version()} "
          f"on {platform.machine()}\n")
    print(f"Seeded entries are random /24s in one list of one trunk; each change adds or removes "
          f"{DENIED}/{args.probe_prefix} through the API.\n")
    print("| entries | start with seed | address change: 2xx (= enforced) p50 | max | add p50 | remove p50 "
          "| associate/dissociate a one-entry list: p50 | max |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in (int(s) for s in args.sizes.split(",")):
        r = measure(n, args.changes, args.probe_prefix)
        print(f"| {n:,} | {r['start_s']:.1f} s | {r['p50']:.1f} ms | {r['max']:.1f} ms | "
              f"{r['add_p50']:.1f} ms | {r['del_p50']:.1f} ms | {r['assoc_p50']:.1f} ms | {r['assoc_max']:.1f} ms |",
              flush=True)
    print("\nEach 2xx is sent only after the edge swapped in the new table; the INVITE sent right after it "
          "was judged by the new state every time (asserted).")


if __name__ == "__main__":
    main()
