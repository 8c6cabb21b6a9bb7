"""Declarative seed: accounts, lists, addresses and trunks from TOML, idempotently.

Format::

    [[accounts]]
    sid = "AC00000000000000000000000000000001"
    friendly_name = "Demo"

    [[accounts.ip_access_control_lists]]
    friendly_name = "demo-carrier"
    ip_addresses = [
      { friendly_name = "carrier edge", ip_address = "127.0.0.2", cidr_prefix_length = 32 },
    ]

    [[accounts.trunks]]
    friendly_name = "demo trunk"
    domain_name = "demo.sipgate.test"
    ip_access_control_lists = ["demo-carrier"]   # by friendly_name, same account

Objects are matched by natural keys: an account by SID, a list by (account,
friendly name), an address by (list, network after masking), a trunk by
domain name, an association by (trunk, list).  What exists is left alone;
what is missing is created.  The whole seed is applied in one transaction:
a bad seed changes nothing, and a seed that creates nothing leaves the
revision as it was.  Seeds only add; they never delete.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AbstractSet, Any

# tomllib's upstream, compiled with mypyc in its wheels: the same parser
# and errors, 2.4x faster on a large seed (tomllib's share of a
# million-entry seed was ~23 s).
import tomli

from sipgate.store import validate as v
from sipgate.store.model import TRUNK_DEFAULTS, StoreError, Unavailable, list_full

__all__ = ["SeedError", "SeedReport", "load_seed"]


class SeedError(ValueError):
    """A seed file that cannot be applied, naming the file, the key and why."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        super().__init__(f"{source}: {key}: {problem}")
        self.source = source
        self.key = key
        self.problem = problem


@dataclass
class SeedReport:
    """What a seed created and what already existed, per kind."""

    created: dict[str, int] = field(default_factory=dict)
    existing: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str, created: bool, n: int = 1) -> None:
        if n:
            bucket = self.created if created else self.existing
            bucket[kind] = bucket.get(kind, 0) + n

    def __str__(self) -> str:
        made = ", ".join(f"{n} {k}" for k, n in self.created.items()) or "nothing"
        kept = ", ".join(f"{n} {k}" for k, n in self.existing.items()) or "nothing"
        return f"created {made}; already present {kept}"


def _table(value: Any, key: str, allowed: AbstractSet[str], src: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SeedError(src, key, "expected a table")
    unknown = set(value) - allowed
    if unknown:
        raise SeedError(src, f"{key}.{sorted(unknown)[0]}", f"unknown key (expected one of: {', '.join(sorted(allowed))})")
    return value


# Twilio form name carried by a store error -> the seed's own key for it.
_SEED_KEYS = {form: key for key, form in v.TRUNK_FIELDS.items()} | {
    "AccountSid": "sid", "IpAddress": "ip_address", "CidrPrefixLength": "cidr_prefix_length",
}


@contextmanager
def _at(src: str, key: str) -> Iterator[None]:
    """Turn a store error raised for the object at ``key`` into a SeedError naming the key."""
    try:
        yield
    except Unavailable:
        raise
    except StoreError as exc:
        raise _seed_error(exc, src, key) from None


def _seed_error(exc: StoreError, src: str, key: str) -> SeedError:
    """The SeedError for a store error raised for the object at ``key``."""
    param = getattr(exc, "param", None)
    return SeedError(src, f"{key}.{_SEED_KEYS.get(param, param)}" if param else key, str(exc))


_IP_KEYS = frozenset({"friendly_name", "ip_address", "cidr_prefix_length"})


def _array(value: Any, key: str, src: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise SeedError(src, key, "expected an array")
    return value


def load_seed(store: Any, path: str | Path) -> SeedReport:
    """Apply the seed file at ``path`` to ``store``; see the module docstring."""
    src = str(path)
    try:
        with open(path, "rb") as fh:
            data = tomli.load(fh)
    except OSError as exc:
        raise SeedError(src, "(file)", f"cannot read: {exc.strerror or exc}") from None
    except tomli.TOMLDecodeError as exc:
        raise SeedError(src, "(syntax)", str(exc)) from None
    _table(data, "(top)", {"accounts"}, src)
    report = SeedReport()
    # Both backends' _write() yield a transaction whose ``cur`` takes "?"
    # placeholders, on tables with a ``rowid`` insertion order.
    with store._write() as tx:  # Unavailable (store locked, disk full) propagates as is
        tx.structural = True  # a bulk load: the edge recompiles in full
        changed = False
        for i, account in enumerate(_array(data.get("accounts"), "accounts", src)):
            key = f"accounts[{i}]"
            account = _table(account, key, {"sid", "friendly_name", "ip_access_control_lists", "trunks"}, src)
            changed |= _seed_account(store, tx, account, key, src, report)
        tx.changed = changed
    return report


def _seed_account(store: Any, tx: Any, account: dict[str, Any], key: str, src: str,
                  report: SeedReport) -> bool:
    with _at(src, key):
        sid = v.account_sid(account.get("sid"))
        name = v.friendly_name(account.get("friendly_name", ""), required=False)
    existed = tx.cur.execute("SELECT 1 FROM accounts WHERE sid = ?", (sid,)).fetchone() is not None
    if not existed:
        store._ensure_account(tx, sid, name)
    report.count("accounts", not existed)
    changed = not existed

    lists: dict[str, str] = {}
    for j, acl in enumerate(_array(account.get("ip_access_control_lists"), f"{key}.ip_access_control_lists", src)):
        lkey = f"{key}.ip_access_control_lists[{j}]"
        acl = _table(acl, lkey, {"friendly_name", "ip_addresses"}, src)
        with _at(src, lkey):
            name = v.friendly_name(acl.get("friendly_name"), required=True)
        row = tx.cur.execute("SELECT sid FROM acls WHERE account_sid = ? AND friendly_name = ? ORDER BY rowid",
                             (sid, name)).fetchone()
        if row is None:
            with _at(src, lkey):
                acl_sid = store._create_acl(tx, sid, name).sid
        else:
            acl_sid = row[0]
        report.count("ip_access_control_lists", row is None)
        changed |= row is None
        lists[name] = acl_sid
        # The list's addresses in bulk: the networks it has are read once,
        # and the new ones inserted together at the end (one statement per
        # address, a COUNT(*) each under max_ips_per_list, made a
        # million-entry seed take minutes).  Each address is still checked,
        # counted and reported in file order, as one by one.
        addresses = _array(acl.get("ip_addresses"), f"{lkey}.ip_addresses", src)
        have = {row[0] for row in tx.cur.execute("SELECT network FROM ip_addresses WHERE acl_sid = ?", (acl_sid,))}
        limit = store.max_ips_per_list
        size = len(have)
        new: list[tuple[str, v.IpEntry]] = []
        ip_entry, friendly_name = v.ip_entry, v.friendly_name
        for k, ip in enumerate(addresses):
            # (The key text, a context manager and the key check, per
            # address, were a fifth of a large seed's time: here they are
            # made only for an address that is not a plain table.)
            if type(ip) is not dict or not ip.keys() <= _IP_KEYS:
                ip = _table(ip, f"{lkey}.ip_addresses[{k}]", _IP_KEYS, src)
            try:
                entry = ip_entry(ip.get("ip_address"), ip.get("cidr_prefix_length"))
                label = friendly_name(ip.get("friendly_name") or entry.address, required=True)
            except Unavailable:
                raise
            except StoreError as exc:
                raise _seed_error(exc, src, f"{lkey}.ip_addresses[{k}]") from None
            if entry.network not in have:
                if limit is not None and size >= limit:  # (what the store's _create_ip says)
                    raise _seed_error(list_full(limit), src, f"{lkey}.ip_addresses[{k}]") from None
                have.add(entry.network)
                size += 1
                new.append((label, entry))
        report.count("ip_addresses", True, len(new))
        report.count("ip_addresses", False, len(addresses) - len(new))
        changed |= bool(new)
        if new:
            store._create_ips(tx, sid, acl_sid, new)

    for j, trunk in enumerate(_array(account.get("trunks"), f"{key}.trunks", src)):
        tkey = f"{key}.trunks[{j}]"
        trunk = _table(trunk, tkey, {*v.TRUNK_FIELDS, "ip_access_control_lists"}, src)
        fields = {k: val for k, val in trunk.items() if k != "ip_access_control_lists"}
        with _at(src, tkey):
            values = v.trunk_fields(fields)
        domain = values.get("domain_name")
        if domain is None:
            raise SeedError(src, f"{tkey}.domain_name", "required (a seeded trunk is found by its domain name)")
        row = tx.cur.execute("SELECT sid, account_sid FROM trunks WHERE domain_name = ?", (domain,)).fetchone()
        if row is None:
            with _at(src, tkey):
                trunk_sid = store._create_trunk(tx, sid, {**TRUNK_DEFAULTS, **values}).sid
        elif row[1] != sid:
            raise SeedError(src, f"{tkey}.domain_name", f"{domain!r} belongs to another account's trunk")
        else:
            trunk_sid = row[0]
        report.count("trunks", row is None)
        changed |= row is None
        for k, name in enumerate(_array(trunk.get("ip_access_control_lists"), f"{tkey}.ip_access_control_lists", src)):
            if name not in lists:
                found = tx.cur.execute("SELECT sid FROM acls WHERE account_sid = ? AND friendly_name = ? "
                                       "ORDER BY rowid", (sid, name)).fetchone()
                if found is None:
                    raise SeedError(src, f"{tkey}.ip_access_control_lists[{k}]",
                                    f"no IP access control list named {name!r} in account {sid}")
                lists[name] = found[0]
            exists = tx.cur.execute("SELECT 1 FROM trunk_acls WHERE trunk_sid = ? AND acl_sid = ?",
                                    (trunk_sid, lists[name])).fetchone() is not None
            if not exists:
                with _at(src, f"{tkey}.ip_access_control_lists[{k}]"):
                    store._associate(tx, sid, trunk_sid, lists[name])
            report.count("associations", not exists)
            changed |= not exists
    return changed
