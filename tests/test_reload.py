"""The reloader: entry changes patch the table in force, anything else recompiles it."""

from __future__ import annotations

import asyncio

from sipgate.reload import Reloader, compile_store
from sipgate.store import open_store

A = "AC" + "a" * 32
PROBES = ["10.0.0.1", "10.1.2.3", "192.0.2.7", "192.0.2.200", "2001:db8::1", "203.0.113.9"]


def same_verdicts(left, right) -> None:
    assert left.generation == right.generation and left.entries == right.entries
    assert set(left.by_domain) == set(right.by_domain)
    for domain in left.by_domain:
        for addr in PROBES:
            assert set(left.by_domain[domain].matcher.lookup(addr)) == \
                set(right.by_domain[domain].matcher.lookup(addr)), (domain, addr)
    for addr in PROBES:
        assert left.any_trunk.contains(addr) == right.any_trunk.contains(addr)


def test_entry_changes_are_patched_and_agree_with_a_full_compile(tmp_path):
    store = open_store(str(tmp_path / "r.db"))
    store.ensure_account(A)
    t1 = store.create_trunk(A, domain_name="one.example")
    t2 = store.create_trunk(A, domain_name="two.example")
    shared = store.create_acl(A, "shared")
    own = store.create_acl(A, "own")
    unused = store.create_acl(A, "unused")
    store.associate(A, t1.sid, shared.sid)
    store.associate(A, t2.sid, shared.sid)
    store.associate(A, t2.sid, own.sid)
    installed = []
    reloader = Reloader(store, lambda table, _s: installed.append(table), current=lambda: installed[-1])

    async def scenario() -> None:
        await reloader.refresh(force=True)
        ip = store.create_ip_address(A, shared.sid, friendly_name="a", ip_address="10.0.0.0", cidr_prefix_length=8)
        store.create_ip_address(A, own.sid, friendly_name="b", ip_address="192.0.2.7")
        await reloader.refresh()
        store.create_ip_address(A, unused.sid, friendly_name="c", ip_address="203.0.113.0", cidr_prefix_length=24)
        store.create_ip_address(A, own.sid, friendly_name="d", ip_address="2001:db8::", cidr_prefix_length=32)
        store.update_ip_address(A, shared.sid, ip.sid, ip_address="10.1.0.0", cidr_prefix_length=16)
        await reloader.refresh()
        assert reloader.incremental == 2 and reloader.full == 1
        same_verdicts(installed[-1], compile_store(store))
        assert not installed[-1].by_domain["one.example"].matcher.contains("10.0.0.1")
        assert installed[-1].by_domain["two.example"].matcher.contains("2001:db8::1")
        store.delete_ip_address(A, shared.sid, ip.sid)
        await reloader.refresh()
        same_verdicts(installed[-1], compile_store(store))
        assert reloader.incremental == 3
        # Associations are patched too: only the trunk concerned changes.
        untouched = installed[-1].by_sid[t1.sid]
        store.dissociate(A, t2.sid, own.sid)
        await reloader.refresh()
        assert reloader.incremental == 4 and reloader.full == 1
        same_verdicts(installed[-1], compile_store(store))
        assert not installed[-1].by_domain["two.example"].matcher.contains("192.0.2.7")
        assert installed[-1].by_sid[t1.sid] is untouched
        store.associate(A, t1.sid, unused.sid)  # a list no trunk used: enters the union too
        store.associate(A, t1.sid, own.sid)
        await reloader.refresh()
        assert reloader.incremental == 5
        same_verdicts(installed[-1], compile_store(store))
        assert installed[-1].by_domain["one.example"].matcher.contains("203.0.113.9")
        assert installed[-1].any_trunk.contains("2001:db8::1")
        # Entry and association changes of one list in one delta: full compile.
        store.dissociate(A, t1.sid, own.sid)
        store.create_ip_address(A, own.sid, friendly_name="e", ip_address="198.51.100.1")
        await reloader.refresh()
        assert reloader.full == 2
        same_verdicts(installed[-1], compile_store(store))
        # A new trunk is structural: full compile.
        store.create_trunk(A, domain_name="three.example")
        await reloader.refresh()
        assert reloader.full == 3
        same_verdicts(installed[-1], compile_store(store))

    asyncio.run(scenario())
    store.close()


def test_changes_since_reports_structure_and_gaps(tmp_path):
    store = open_store(str(tmp_path / "c.db"))
    store.ensure_account(A)
    acl = store.create_acl(A, "l")
    rev = store.revision()
    ip = store.create_ip_address(A, acl.sid, friendly_name="x", ip_address="10.0.0.1")
    current, changes, lists = store.changes_since(rev)
    assert current == rev + 1 and changes == [("+", acl.sid, ip.sid, "10.0.0.1", 32)] and lists == {}
    assert store.changes_since(store.revision()) == (store.revision(), [], {})
    trunk = store.create_trunk(A, domain_name="t.example")
    rev = store.revision()
    store.associate(A, trunk.sid, acl.sid)
    current, changes, lists = store.changes_since(rev)
    assert changes == [("A", acl.sid, trunk.sid, "", 0)]
    assert lists[acl.sid][0] == "l" and [e.ip_sid for e in lists[acl.sid][1]] == [ip.sid]
    store.create_acl(A, "m")
    assert store.changes_since(rev) is None  # a new list is structural
    assert store.changes_since(0) is None  # older than the log
    store.close()
