"""One reproducible admission table for the side-by-side SIP benchmarks.

Both filters get exactly the same entries, generated here from one seed:

* ``N`` random IPv4 networks spread round-robin over ``TRUNKS`` trunks,
  each trunk's prefix lengths cycling through ``MASKS`` (six /32, three /24,
  one /16 in every ten: 60 / 30 / 10 %, all three already at 10 entries) (domains ``t0.bench.sipgate.test``
  .. ``t3.bench.sipgate.test``), one IP access control list per trunk;
* ``127.0.0.2/32`` in every trunk's list (the admitted SIPp source);
* nothing else: random networks never fall in 0/8, 127/8 or 224/3, so the
  denied SIPp source ``127.0.0.3`` matches no entry of any trunk.

Networks are unique within a list (they may repeat across lists, as they
would between customers); at a million entries the /16s could not all be
distinct otherwise (there are only 56,832 outside the excluded ranges).

Outputs:

* :func:`write_seed` -- a sipgate seed TOML (``sipgate serve --seed``): one
  account, one list per trunk, one trunk per domain;
* :func:`write_kamailio_tables` -- Kamailio's db_text ``address`` (schema
  version 6: ``id grp ip_addr mask port tag``) and ``version`` tables, group
  ``i + 1`` for trunk ``i``.

Command line: ``python benchmarks/table.py N OUTDIR`` writes ``seed.toml``,
``address`` and ``version`` into OUTDIR.
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

ALLOWED = "127.0.0.2"
DENIED = "127.0.0.3"
TRUNKS = 4
MASKS = (32, 24, 16, 32, 32, 24, 32, 32, 24, 32)  # cycled per trunk
DEFAULT_SEED = 20240501
ACCOUNT_SID = "AC" + "b" * 32


def domain(trunk: int) -> str:
    return f"t{trunk}.bench.sipgate.test"


@dataclass(frozen=True)
class Table:
    """Entries as (trunk index, network int, prefix length); the allowed
    source comes first in every trunk."""

    size: int                 # random entries (N)
    trunks: int
    entries: list[tuple[int, int, int]]

    @property
    def domains(self) -> list[str]:
        return [domain(t) for t in range(self.trunks)]

    @property
    def rows(self) -> int:
        return len(self.entries)


def _dotted(n: int) -> str:
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def generate(size: int, *, trunks: int = TRUNKS, seed: int = DEFAULT_SEED) -> Table:
    """The table of ``size`` random entries (deterministic for ``seed``)."""
    rnd = random.Random(seed)
    allowed = (127 << 24) | 2
    entries: list[tuple[int, int, int]] = [(t, allowed, 32) for t in range(trunks)]
    seen: list[set[tuple[int, int]]] = [set() for _ in range(trunks)]
    i = 0
    while i < size:
        trunk = i % trunks
        mask = MASKS[(i // trunks) % len(MASKS)]
        first = rnd.randint(1, 223)
        if first == 127:
            continue
        net = ((first << 24) | rnd.getrandbits(24)) & ((0xFFFFFFFF << (32 - mask)) & 0xFFFFFFFF)
        if (net, mask) in seen[trunk]:
            continue
        seen[trunk].add((net, mask))
        entries.append((trunk, net, mask))
        i += 1
    return Table(size, trunks, entries)


def write_seed(table: Table, path: Path) -> Path:
    """A sipgate seed TOML: one account, one list and one trunk per trunk."""
    with open(path, "w") as f:
        f.write(f"# benchmarks/table.py: {table.size} random entries over {table.trunks} trunks"
                f" + {ALLOWED}/32 on each\n\n")
        f.write(f'[[accounts]]\nsid = "{ACCOUNT_SID}"\nfriendly_name = "bench"\n\n')
        by_trunk: list[list[tuple[int, int]]] = [[] for _ in range(table.trunks)]
        for trunk, net, mask in table.entries:
            by_trunk[trunk].append((net, mask))
        for trunk, nets in enumerate(by_trunk):
            f.write(f'[[accounts.ip_access_control_lists]]\nfriendly_name = "bench-t{trunk}"\n'
                    "ip_addresses = [\n")
            f.writelines(f'  {{ friendly_name = "e{k}", ip_address = "{_dotted(net)}", '
                         f"cidr_prefix_length = {mask} }},\n" for k, (net, mask) in enumerate(nets))
            f.write("]\n\n")
        for trunk in range(table.trunks):
            f.write(f'[[accounts.trunks]]\nfriendly_name = "bench trunk {trunk}"\n'
                    f'domain_name = "{domain(trunk)}"\n'
                    f'ip_access_control_lists = ["bench-t{trunk}"]\n\n')
    return path


def write_kamailio_tables(table: Table, directory: Path) -> Path:
    """db_text ``address`` and ``version`` tables for the permissions module."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "address", "w") as f:
        f.write("id(int,auto) grp(int) ip_addr(string) mask(int) port(int) tag(string,null)\n")
        f.writelines(f"{row}:{trunk + 1}:{_dotted(net)}:{mask}:0:\n"
                     for row, (trunk, net, mask) in enumerate(table.entries, start=1))
    with open(directory / "version", "w") as f:
        f.write("id(int,auto) table_name(string) table_version(int)\n0:version:1\n0:address:6\n")
    return directory


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("size", type=int, help="random entries")
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--trunks", type=int, default=TRUNKS)
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    a = ap.parse_args(argv)
    a.outdir.mkdir(parents=True, exist_ok=True)
    t = generate(a.size, trunks=a.trunks, seed=a.seed)
    write_seed(t, a.outdir / "seed.toml")
    write_kamailio_tables(t, a.outdir)
    print(f"{a.outdir}: {t.rows} rows over {t.trunks} trunks", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
