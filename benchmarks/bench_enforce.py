"""Change -> enforcement latency: from an API write to the edge judging by it.

For each table size N: seed one trunk whose list holds N networks, start
`sipgate serve`, then make every kind of write through the REST API (an
address, an association, a trunk, a domain name, a list name, a used list's
deletion, a field the edge does not compile) and time the API's 2xx, which
sipgate sends only after the new table is in force; the INVITE sent right
after each 2xx must be judged by the new state (asserted).  With
``--workers 1,2`` each size is measured once per worker count, side by
side: with two, the 2xx also waits for the other worker, and the INVITE
after it lands on either.

    .venv/bin/python benchmarks/bench_enforce.py [--sizes 1000,10000,100000] [--changes 10] [--workers 1]
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


def verdict(server: Serving, pbx: UdpPeer, caller: UdpPeer, n: int, domain: str = DOMAIN) -> str:
    caller.send(request(ruri=f"sip:1@{domain}", via_host=f"{DENIED}:{caller.address[1]}", call_id=f"e-{n}"),
                ("127.0.0.1", server.sip_port))
    if not pbx.nothing(0.3):
        return "relayed"
    return str(parse(caller.recv()[0]).status)


KINDS = ("address add/remove", "associate/dissociate a 1-entry list", "trunk create/delete",
         "trunk domain change", "rename the big list", "delete a used 1-entry list", "trunk friendly name")


def measure(entries: int, changes: int, probe_prefix: int, workers: int = 1) -> tuple[float, dict[str, list[float]]]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-enforce-"))
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    counter = iter(range(10**9))

    with UdpPeer("127.0.0.1") as pbx, UdpPeer(DENIED) as caller:
        seed = tmp / "seed.toml"
        write_seed(seed, entries)
        t0 = time.perf_counter()
        server = Serving(["serve", "--config", str(write_config(tmp, pbx.address[1])), "--seed", str(seed),
                          "--workers", str(workers)], timeout=3600)
        if workers > 1:
            server.wait_for(rf"\(worker {workers - 1}\)", timeout=3600)
        start_s = time.perf_counter() - t0

        def timed(kind: str, method: str, path: str, form: dict[str, str] | None = None) -> dict:
            t = time.perf_counter()
            body = api(server.api_port, method, path, form)
            times[kind].append((time.perf_counter() - t) * 1e3)
            return body

        def expect(want: str, what: str, domain: str = DOMAIN) -> None:
            got = verdict(server, pbx, caller, next(counter), domain)
            assert got == want, f"{what}: the INVITE after the 2xx got {got}, not {want}"

        try:
            base = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
            acl = next(a for a in api(server.api_port, "GET", base + ".json")["ip_access_control_lists"]
                       if a["friendly_name"] == "bench")
            probe_list = api(server.api_port, "POST", base + ".json", {"FriendlyName": "probe-list"})
            api(server.api_port, "POST", f"{base}/{probe_list['sid']}/IpAddresses.json",
                {"FriendlyName": "probe", "IpAddress": DENIED})
            trunk = next(t for t in api(server.api_port, "GET", "/v1/Trunks?PageSize=1000")["trunks"]
                         if t["domain_name"] == DOMAIN)
            trunk_path = f"/v1/Trunks/{trunk['sid']}"
            for i in range(changes):
                # An address in the big list (the /24 lands in its biggest table).
                kind = KINDS[0]
                ip = timed(kind, "POST", f"{base}/{acl['sid']}/IpAddresses.json",
                           {"FriendlyName": "probe", "IpAddress": DENIED, "CidrPrefixLength": str(probe_prefix)})
                expect("relayed", "address added")
                timed(kind, "DELETE", f"{base}/{acl['sid']}/IpAddresses/{ip['sid']}.json")
                expect("403", "address removed")
                # A one-entry list associated with the big trunk, then removed.
                kind = KINDS[1]
                timed(kind, "POST", f"{trunk_path}/IpAccessControlLists",
                      {"IpAccessControlListSid": probe_list["sid"]})
                expect("relayed", "association")
                timed(kind, "DELETE", f"{trunk_path}/IpAccessControlLists/{probe_list['sid']}")
                expect("403", "dissociation")
                # A new trunk (403: it has no list yet), then deleted (404).
                kind, other = KINDS[2], f"new-{i}.sipgate.test"
                new = timed(kind, "POST", "/v1/Trunks", {"DomainName": other})
                expect("403", "trunk created", other)
                timed(kind, "DELETE", f"/v1/Trunks/{new['sid']}")
                expect("404", "trunk deleted", other)
                # The big trunk moves to another domain and back.
                kind = KINDS[3]
                timed(kind, "POST", trunk_path, {"DomainName": f"moved-{i}.sipgate.test"})
                expect("404", "domain moved away")
                timed(kind, "POST", trunk_path, {"DomainName": DOMAIN})
                expect("403", "domain moved back")
                # Renaming the big list: its entries carry no name, nothing recompiles.
                timed(KINDS[4], "POST", f"{base}/{acl['sid']}.json", {"FriendlyName": f"bench-{i}"})
                expect("403", "list renamed")
                # Deleting a list while the big trunk uses it (the association goes too).
                doomed = api(server.api_port, "POST", base + ".json", {"FriendlyName": f"doomed-{i}"})
                api(server.api_port, "POST", f"{base}/{doomed['sid']}/IpAddresses.json",
                    {"FriendlyName": "probe", "IpAddress": DENIED})
                api(server.api_port, "POST", f"{trunk_path}/IpAccessControlLists",
                    {"IpAccessControlListSid": doomed["sid"]})
                expect("relayed", "doomed list associated")
                timed(KINDS[5], "DELETE", f"{base}/{doomed['sid']}.json")
                expect("403", "used list deleted")
                # A write the edge does not compile at all.
                timed(KINDS[6], "POST", trunk_path, {"FriendlyName": f"bench trunk {i}"})
                expect("403", "friendly name changed")
        except BaseException:
            sys.stderr.write("".join(server.log[-20:]))
            raise
        finally:
            server.stop(timeout=120)  # a full compile of 1M entries may be in progress
    return start_s, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--changes", type=int, default=10)
    # /24 like every seeded entry: the change lands in the biggest table,
    # which is copied (the worst case); /32 lands in a table of its own.
    ap.add_argument("--probe-prefix", type=int, default=24)
    ap.add_argument("--workers", default="1", help="worker counts to measure, side by side (e.g. 1,2)")
    args = ap.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    print(f"# change -> enforcement — {datetime.date.today()} — Python {platform.python_version()} "
          f"on {platform.machine()}\n")
    print(f"Seeded entries are random /24s in one list of one trunk; the address changes add and remove "
          f"{DENIED}/{args.probe_prefix}; each pair (add/remove, create/delete, ...) counts as two changes.\n")
    print("| entries | workers | start with seed | change | n | 2xx (= enforced) p50 | max |")
    print("| ---: | ---: | ---: | :--- | ---: | ---: | ---: |")
    for n in (int(s) for s in args.sizes.split(",")):
        for workers in counts:
            start_s, times = measure(n, args.changes, args.probe_prefix, workers)
            for kind, ms in times.items():
                print(f"| {n:,} | {workers} | {start_s:.1f} s | {kind} | {len(ms)} | {statistics.median(ms):.1f} ms | "
                      f"{max(ms):.1f} ms |", flush=True)
    print("\nEach 2xx is sent only after the edge (every worker) swapped in the new table; the INVITE sent "
          "right after it was judged by the new state every time (asserted).")


if __name__ == "__main__":
    main()
