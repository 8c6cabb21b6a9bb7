"""The reloader patches the table in force from the store's change log; a patch equals a full compile."""

from __future__ import annotations

import asyncio
import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipgate.admission import AdmissionTable
from sipgate.reload import Reloader, compile_store
from sipgate.store import Conflict, NotFound, open_store
from sipgate.store import sqlite as sqlite_store

A = "AC" + "a" * 32
B = "AC" + "b" * 32
PROBES = ["10.0.0.1", "10.1.2.3", "192.0.2.7", "192.0.2.200", "2001:db8::1", "2001:db8::2", "203.0.113.9",
          "198.51.100.1", "8.8.8.8"]


def same_table(patched: AdmissionTable, full: AdmissionTable) -> None:
    """Everything the edge reads from a table agrees, payloads (list names) included."""
    assert patched.generation == full.generation and patched.entries == full.entries
    assert patched.acl_names == full.acl_names
    assert set(patched.by_sid) == set(full.by_sid)
    assert {d: t.sid for d, t in patched.by_domain.items()} == {d: t.sid for d, t in full.by_domain.items()}
    for sid, trunk in full.by_sid.items():
        mine = patched.by_sid[sid]
        assert (mine.account_sid, mine.domain_name, mine.acl_sids) == \
            (trunk.account_sid, trunk.domain_name, trunk.acl_sids), sid
        assert len(mine.matcher) == len(trunk.matcher), sid
        for addr in PROBES:
            assert sorted(mine.matcher.lookup(addr), key=repr) == sorted(trunk.matcher.lookup(addr), key=repr), \
                (sid, addr)
        if mine.domain_name:
            assert patched.by_domain[mine.domain_name] is mine
    assert len(patched.any_trunk) == len(full.any_trunk)
    for addr in PROBES:
        assert sorted(patched.any_trunk.lookup(addr), key=repr) == sorted(full.any_trunk.lookup(addr), key=repr)


class Harness:
    """A store plus a Reloader installing into a list, run on one event loop."""

    def __init__(self, path: str) -> None:
        self.store = open_store(path)
        self.installed: list[AdmissionTable] = []
        self.reloader = Reloader(self.store, lambda table, _s: self.installed.append(table),
                                 current=lambda: self.installed[-1])
        self.loop = asyncio.new_event_loop()

    def refresh(self, force: bool = False) -> AdmissionTable:
        self.loop.run_until_complete(self.reloader.refresh(force=force))
        return self.installed[-1]

    def check(self) -> AdmissionTable:
        table = self.refresh()
        same_table(table, compile_store(self.store))
        return table

    def close(self) -> None:
        self.loop.close()
        self.store.close()


def test_every_kind_of_write_is_patched_and_agrees_with_a_full_compile(tmp_path):
    h = Harness(str(tmp_path / "r.db"))
    store = h.store
    store.ensure_account(A)
    t1 = store.create_trunk(A, domain_name="one.example")
    t2 = store.create_trunk(A, domain_name="two.example")
    shared = store.create_acl(A, "shared")
    own = store.create_acl(A, "own")
    unused = store.create_acl(A, "unused")
    store.associate(A, t1.sid, shared.sid)
    store.associate(A, t2.sid, shared.sid)
    store.associate(A, t2.sid, own.sid)
    h.refresh(force=True)
    assert (h.reloader.full, h.reloader.incremental) == (1, 0)

    ip = store.create_ip_address(A, shared.sid, friendly_name="a", ip_address="10.0.0.0", cidr_prefix_length=8)
    store.create_ip_address(A, own.sid, friendly_name="b", ip_address="192.0.2.7")
    h.check()
    store.create_ip_address(A, unused.sid, friendly_name="c", ip_address="203.0.113.0", cidr_prefix_length=24)
    store.create_ip_address(A, own.sid, friendly_name="d", ip_address="2001:db8::", cidr_prefix_length=32)
    store.update_ip_address(A, shared.sid, ip.sid, ip_address="10.1.0.0", cidr_prefix_length=16)
    table = h.check()
    assert not table.by_domain["one.example"].matcher.contains("10.0.0.1")
    assert table.by_domain["two.example"].matcher.contains("2001:db8::1")

    # Associations: only the trunk concerned changes; the other is shared.
    untouched = table.by_sid[t1.sid]
    store.dissociate(A, t2.sid, own.sid)
    table = h.check()
    assert not table.by_domain["two.example"].matcher.contains("192.0.2.7")
    assert table.by_sid[t1.sid] is untouched
    store.associate(A, t1.sid, unused.sid)  # a list no trunk used: enters the union too
    store.associate(A, t1.sid, own.sid)
    table = h.check()
    assert table.by_domain["one.example"].matcher.contains("203.0.113.9") and table.any_trunk.contains("2001:db8::1")

    # Entry and association changes of one list in one delta.
    store.dissociate(A, t1.sid, own.sid)
    store.create_ip_address(A, own.sid, friendly_name="e", ip_address="198.51.100.1")
    store.associate(A, t2.sid, own.sid)
    table = h.check()
    assert table.by_domain["two.example"].matcher.contains("198.51.100.1")

    # Trunks: created, re-domained, deleted; the others are shared.
    untouched = table.by_sid[t2.sid]
    t3 = store.create_trunk(A, domain_name="three.example")
    table = h.check()
    assert table.by_sid[t3.sid].acl_sids == () and table.by_sid[t2.sid] is untouched
    store.update_trunk(A, t1.sid, domain_name="uno.example")
    table = h.check()
    assert "one.example" not in table.by_domain and table.by_domain["uno.example"].matcher.contains("10.1.2.3")
    store.associate(A, t3.sid, own.sid)
    store.delete_trunk(A, t2.sid)  # its lists stay; "own" stays in the union through t3
    table = h.check()
    assert t2.sid not in table.by_sid and table.any_trunk.contains("198.51.100.1")

    # Lists: renamed (only the name map changes), deleted.
    before_rename = table
    store.update_acl(A, shared.sid, "carrier")
    table = h.check()
    assert table.acl_names[shared.sid] == "carrier" and table.any_trunk is before_rename.any_trunk
    store.delete_acl(A, unused.sid)
    table = h.check()
    assert not table.any_trunk.contains("203.0.113.9")
    store.update_acl(A, own.sid, "own2")
    store.delete_acl(A, own.sid)  # renamed then deleted in one delta
    table = h.check()
    assert not table.any_trunk.contains("198.51.100.1") and table.by_sid[t3.sid].acl_sids == ()

    # Writes that cannot change the table patch nothing and share everything.
    before = h.installed[-1]
    store.update_trunk(A, t1.sid, friendly_name="renamed trunk")
    store.update_trunk(A, t3.sid, domain_name="three.example")  # unchanged
    store.create_acl(A, "new and unused")
    store.ensure_account(B)
    store.update_ip_address(A, shared.sid, ip.sid, friendly_name="only the label")
    table = h.check()
    assert table.by_sid == before.by_sid and all(table.by_sid[s] is before.by_sid[s] for s in before.by_sid)
    assert table.any_trunk is before.any_trunk

    assert h.reloader.full == 1, "every one of these writes was patched"
    h.close()


def test_changes_since_reports_each_kind_of_change(tmp_path, monkeypatch):
    store = open_store(str(tmp_path / "c.db"))
    store.ensure_account(A)
    acl = store.create_acl(A, "l")
    rev = store.revision()
    ip = store.create_ip_address(A, acl.sid, friendly_name="x", ip_address="10.0.0.1")
    delta = store.changes_since(rev)
    assert delta.revision == rev + 1 and delta.changes == (("+", acl.sid, ip.sid, "10.0.0.1", 32),)
    assert delta.lists == {} and delta.trunks == {}
    assert store.changes_since(store.revision()).changes == ()
    trunk = store.create_trunk(A, domain_name="t.example")
    rev = store.revision()
    store.associate(A, trunk.sid, acl.sid)
    store.update_acl(A, acl.sid, "renamed")
    delta = store.changes_since(rev)
    assert delta.changes == (("A", acl.sid, trunk.sid, None, None), ("N", acl.sid, None, None, None))
    assert delta.lists[acl.sid][0] == "renamed" and [e.ip_sid for e in delta.lists[acl.sid][1]] == [ip.sid]
    rev = store.revision()
    store.update_trunk(A, trunk.sid, domain_name="u.example")
    store.create_acl(A, "m")  # nothing compiled changes: no row, but the revision is covered
    store.delete_trunk(A, trunk.sid)
    delta = store.changes_since(rev)
    assert delta.revision == rev + 3
    assert delta.changes == (("T", None, trunk.sid, None, None), ("D", acl.sid, trunk.sid, None, None),
                             ("R", None, trunk.sid, None, None))
    assert delta.trunks == {trunk.sid: None}
    rev = store.revision()
    store.delete_acl(A, acl.sid)
    delta = store.changes_since(rev)
    assert delta.changes == (("-", acl.sid, ip.sid, "10.0.0.1", 32),)
    assert store.changes_since(0).revision == rev + 1  # every write since the start is logged
    monkeypatch.setattr(sqlite_store, "CHANGE_LOG_KEEP", 2)
    store.create_acl(A, "n")
    assert store.changes_since(rev - 1) is None  # older than the two revisions kept
    assert store.changes_since(rev).revision == rev + 2
    store.close()


def test_a_seed_is_a_bulk_load_and_recompiles_in_full(tmp_path):
    from sipgate.store.seed import load_seed

    seed = tmp_path / "seed.toml"
    seed.write_text(f'''
[[accounts]]
sid = "{A}"
[[accounts.ip_access_control_lists]]
friendly_name = "l"
ip_addresses = [{{ ip_address = "10.0.0.1" }}]
[[accounts.trunks]]
domain_name = "s.example"
ip_access_control_lists = ["l"]
''')
    h = Harness(str(tmp_path / "s.db"))
    h.refresh(force=True)
    load_seed(h.store, seed)
    assert h.store.changes_since(h.reloader.generation) is None
    table = h.check()
    assert h.reloader.full == 2 and table.by_domain["s.example"].matcher.contains("10.0.0.1")
    h.close()


# -- property: any sequence of writes, refreshed at any points, patches to a full compile --

DOMAINS = ["a.example", "b.example", "c.example", None]
NETWORKS = [("10.0.0.1", None), ("10.0.0.0", 8), ("10.1.0.0", 16), ("192.0.2.0", 24), ("192.0.2.7", 32),
            ("203.0.113.9", None), ("2001:db8::", 32), ("2001:db8::1", 128), ("198.51.100.1", None)]
# Weighted: entry and association changes most, deletions least, so that
# sequences build up state worth checking.
OPS = (["ip"] * 4 + ["move_ip", "drop_ip", "dissociate", "rename", "redomain"] * 2 + ["associate", "refresh"] * 3
       + ["trunk", "list", "drop_trunk", "drop_list", "label_ip", "trunk_name"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_write_sequences_patch_to_the_same_table_as_a_full_compile(tmp_path_factory, data):
    h = Harness(str(tmp_path_factory.mktemp("prop") / "p.db"))
    store = h.store
    store.ensure_account(A)
    names = itertools.count()
    trunks: list[str] = []
    acls: list[str] = []
    ips: dict[str, list[str]] = {}
    for i, domain in enumerate(DOMAINS[:3]):  # a start worth changing: trunks sharing lists with entries
        trunks.append(store.create_trunk(A, domain_name=domain).sid)
        acl = store.create_acl(A, f"list{next(names)}").sid
        acls.append(acl)
        ips[acl] = [store.create_ip_address(A, acl, friendly_name="x", ip_address=a, cidr_prefix_length=p).sid
                    for a, p in NETWORKS[i * 3:i * 3 + 3]]
        store.associate(A, trunks[-1], acl)
        if i:
            store.associate(A, trunks[-1], acls[0])
    h.refresh(force=True)
    for _ in range(data.draw(st.integers(1, 40), label="steps")):
        op = data.draw(st.sampled_from(OPS), label="op")
        pick = data.draw(st.integers(0, 1000), label="pick")
        other = data.draw(st.integers(0, 1000), label="other")
        net = NETWORKS[other % len(NETWORKS)]
        try:
            if op == "trunk":
                trunks.append(store.create_trunk(A, domain_name=DOMAINS[pick % len(DOMAINS)]).sid)
            elif op == "list":
                sid = store.create_acl(A, f"list{next(names)}")
                acls.append(sid.sid)
                ips[sid.sid] = []
            elif op == "refresh":
                h.check()
            elif op in ("redomain", "trunk_name", "drop_trunk") and trunks:
                sid = trunks[pick % len(trunks)]
                if op == "redomain":
                    store.update_trunk(A, sid, domain_name=DOMAINS[other % len(DOMAINS)] or "d.example")
                elif op == "trunk_name":
                    store.update_trunk(A, sid, friendly_name=f"t{other}")
                else:
                    store.delete_trunk(A, sid)
                    trunks.remove(sid)
            elif op in ("rename", "drop_list", "ip") and acls:
                sid = acls[pick % len(acls)]
                if op == "rename":
                    store.update_acl(A, sid, f"list{other % 3}")
                elif op == "drop_list":
                    store.delete_acl(A, sid)
                    acls.remove(sid)
                else:
                    ips[sid].append(store.create_ip_address(A, sid, friendly_name="x", ip_address=net[0],
                                                            cidr_prefix_length=net[1]).sid)
            elif op in ("move_ip", "label_ip", "drop_ip") and any(ips.get(a) for a in acls):
                acl = [a for a in acls if ips[a]][pick % len([a for a in acls if ips[a]])]
                ip = ips[acl][other % len(ips[acl])]
                if op == "move_ip":
                    store.update_ip_address(A, acl, ip, ip_address=net[0], cidr_prefix_length=net[1] or 32)
                elif op == "label_ip":
                    store.update_ip_address(A, acl, ip, friendly_name=f"y{other}")
                else:
                    store.delete_ip_address(A, acl, ip)
                    ips[acl].remove(ip)
            elif op in ("associate", "dissociate") and trunks and acls:
                trunk, acl = trunks[pick % len(trunks)], acls[other % len(acls)]
                (store.associate if op == "associate" else store.dissociate)(A, trunk, acl)
        except (Conflict, NotFound):
            pass  # duplicate domain, network or association; dissociating what is not there
        except Exception as exc:  # an address the chosen prefix does not fit
            if type(exc).__name__ != "InvalidParameter":
                raise
    h.check()
    assert h.reloader.full == 1 and h.reloader.failures == 0
    h.close()
