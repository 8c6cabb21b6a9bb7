"""The SQLite store: CRUD, Twilio errors, revisions, snapshots, cascades, durability."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sipgate.store import (
    Conflict,
    InvalidParameter,
    LimitExceeded,
    NotFound,
    SqliteStore,
    Unavailable,
    open_store,
)

A = "AC" + "a" * 32
B = "AC" + "b" * 32


@pytest.fixture
def store(tmp_path) -> Iterator[SqliteStore]:
    s = open_store(f"sqlite:{tmp_path / 'store.db'}")
    s.ensure_account(A, "Account A")
    s.ensure_account(B, "Account B")
    yield s
    s.close()


def test_wal_mode_and_schema_version(store, tmp_path):
    db = sqlite3.connect(tmp_path / "store.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] >= 1
    db.close()


def test_open_store_urls(tmp_path):
    for url in (f"sqlite:///{tmp_path}/a.db", f"sqlite:{tmp_path}/b.db", str(tmp_path / "c.db")):
        open_store(url).close()
    with pytest.raises(ValueError):
        open_store("mysql://localhost/x")


def test_trunk_defaults_and_sids(store):
    t = store.create_trunk(A, friendly_name="T", domain_name="Edge.Example.COM")
    assert t.sid.startswith("TK") and len(t.sid) == 34
    assert t.domain_name == "edge.example.com"
    assert (t.disaster_recovery_method, t.secure, t.recording_mode, t.recording_trim) == (
        "POST", False, "do-not-record", "do-not-trim")
    assert (t.transfer_mode, t.transfer_caller_id, t.cnam_lookup_enabled, t.symmetric_rtp_enabled) == (
        "disable-all", "from-transferee", False, False)
    assert t.auth_type == ""
    assert t.date_created.tzinfo is not None
    assert store.get_trunk(A, t.sid) == t
    assert store.find_trunk_by_domain("EDGE.example.com") == t


def test_domain_name_unique_and_valid(store):
    store.create_trunk(A, domain_name="a.example")
    with pytest.raises(Conflict) as err:
        store.create_trunk(B, domain_name="A.EXAMPLE")
    assert err.value.code == 21248 and err.value.param == "DomainName"
    with pytest.raises(InvalidParameter) as err:
        store.create_trunk(A, domain_name="not a host")
    assert err.value.param == "DomainName"
    # Two trunks without a domain are fine.
    store.create_trunk(A)
    store.create_trunk(A)


def test_update_and_delete_trunk(store):
    t = store.create_trunk(A, friendly_name="old", domain_name="x.example")
    u = store.update_trunk(A, t.sid, friendly_name="new", secure=True, domain_name="y.example")
    assert (u.friendly_name, u.secure, u.domain_name) == ("new", True, "y.example")
    store.delete_trunk(A, t.sid)
    with pytest.raises(NotFound):
        store.get_trunk(A, t.sid)
    with pytest.raises(NotFound):
        store.delete_trunk(A, t.sid)


def test_ip_addresses_validation(store):
    acl = store.create_acl(A, "carriers")
    host = store.create_ip_address(A, acl.sid, friendly_name="h", ip_address="192.0.2.1")
    assert host.cidr_prefix_length == 32 and host.sid.startswith("IP")
    v6 = store.create_ip_address(A, acl.sid, friendly_name="v6", ip_address="2001:DB8::1", cidr_prefix_length=48)
    assert (v6.ip_address, v6.cidr_prefix_length) == ("2001:db8::1", 48)
    for bad_ip, prefix, param in (("300.1.1.1", None, "IpAddress"), ("nonsense", None, "IpAddress"),
                                  ("10.0.0.0", 33, "CidrPrefixLength"), ("::1", 129, "CidrPrefixLength"),
                                  ("10.0.0.0", -1, "CidrPrefixLength")):
        with pytest.raises(InvalidParameter) as err:
            store.create_ip_address(A, acl.sid, friendly_name="x", ip_address=bad_ip, cidr_prefix_length=prefix)
        assert err.value.code == 21235 and err.value.param == param


def test_host_bits_kept_but_duplicates_are_by_network(store):
    acl = store.create_acl(A, "l")
    ip = store.create_ip_address(A, acl.sid, friendly_name="x", ip_address="10.0.0.5", cidr_prefix_length=24)
    assert (ip.ip_address, ip.cidr_prefix_length) == ("10.0.0.5", 24)
    with pytest.raises(InvalidParameter) as err:
        store.create_ip_address(A, acl.sid, friendly_name="y", ip_address="10.0.0.200", cidr_prefix_length=24)
    assert err.value.code == 21235
    # The same network in another list is no duplicate.
    other = store.create_acl(A, "m")
    store.create_ip_address(A, other.sid, friendly_name="y", ip_address="10.0.0.0", cidr_prefix_length=24)


def test_update_ip_address(store):
    acl = store.create_acl(A, "l")
    ip = store.create_ip_address(A, acl.sid, friendly_name="x", ip_address="10.0.0.1")
    u = store.update_ip_address(A, acl.sid, ip.sid, ip_address="10.1.0.0", cidr_prefix_length=16)
    assert (u.ip_address, u.cidr_prefix_length, u.friendly_name) == ("10.1.0.0", 16, "x")
    u = store.update_ip_address(A, acl.sid, ip.sid, ip_address="2001:db8::")
    assert u.cidr_prefix_length == 128  # a new family without a prefix: one host


def test_associations(store):
    t = store.create_trunk(A, domain_name="t.example")
    acl = store.create_acl(A, "l")
    assoc = store.associate(A, t.sid, acl.sid)
    assert assoc.sid == acl.sid and assoc.trunk_sid == t.sid and assoc.friendly_name == "l"
    assert store.get_trunk(A, t.sid).auth_type == "IP_ACL"
    with pytest.raises(Conflict) as err:
        store.associate(A, t.sid, acl.sid)
    assert err.value.code == 21245
    assert store.list_trunk_acls(A, t.sid, limit=50) == [assoc]
    assert store.count_trunk_acls(A, t.sid) == 1
    store.dissociate(A, t.sid, acl.sid)
    with pytest.raises(NotFound):
        store.get_trunk_acl(A, t.sid, acl.sid)
    with pytest.raises(NotFound):
        store.dissociate(A, t.sid, acl.sid)


def test_accounts_are_isolated(store):
    t = store.create_trunk(A, domain_name="t.example")
    acl = store.create_acl(A, "l")
    ip = store.create_ip_address(A, acl.sid, friendly_name="x", ip_address="10.0.0.1")
    for call in (lambda: store.get_trunk(B, t.sid), lambda: store.get_acl(B, acl.sid),
                 lambda: store.get_ip_address(B, acl.sid, ip.sid), lambda: store.delete_trunk(B, t.sid),
                 lambda: store.delete_acl(B, acl.sid), lambda: store.update_acl(B, acl.sid, "stolen"),
                 lambda: store.create_ip_address(B, acl.sid, friendly_name="x", ip_address="10.9.9.9")):
        with pytest.raises(NotFound):
            call()
    b_acl = store.create_acl(B, "b")
    with pytest.raises(NotFound):
        store.associate(A, t.sid, b_acl.sid)  # a list of another account
    assert store.list_trunks(B, limit=50) == [] and store.list_acls(B, limit=50) == [b_acl]
    with pytest.raises(NotFound):
        store.create_trunk("AC" + "c" * 32)  # unknown account


def test_revision_bumps_on_writes_only(store):
    r0 = store.revision()
    t = store.create_trunk(A, domain_name="t.example")
    acl = store.create_acl(A, "l")
    store.create_ip_address(A, acl.sid, friendly_name="x", ip_address="10.0.0.1")
    store.associate(A, t.sid, acl.sid)
    assert store.revision() == r0 + 4
    store.get_trunk(A, t.sid)
    store.snapshot()
    store.list_acls(A, limit=10)
    store.ensure_account(A)  # exists: no change
    assert store.revision() == r0 + 4
    with pytest.raises(Conflict):
        store.associate(A, t.sid, acl.sid)  # failed writes do not bump
    assert store.revision() == r0 + 4


def test_snapshot_and_cascades_leave_nothing_dangling(store, tmp_path):
    t1 = store.create_trunk(A, domain_name="one.example")
    t2 = store.create_trunk(A, domain_name="two.example")
    shared = store.create_acl(A, "shared")
    lonely = store.create_acl(A, "lonely")
    ip = store.create_ip_address(A, shared.sid, friendly_name="x", ip_address="10.0.0.0", cidr_prefix_length=8)
    store.associate(A, t1.sid, shared.sid)
    store.associate(A, t2.sid, shared.sid)
    snap = store.snapshot()
    assert snap.revision == store.revision()
    rules = {t.sid: t for t in snap.trunks}
    assert rules[t1.sid].acl_sids == (shared.sid,) and rules[t2.sid].domain_name == "two.example"
    assert snap.acls[shared.sid][0].ip_sid == ip.sid and snap.acls[lonely.sid] == ()
    assert snap.acl_names[shared.sid] == "shared"

    store.delete_acl(A, shared.sid)  # goes from both trunks, with its addresses
    snap = store.snapshot()
    assert all(t.acl_sids == () for t in snap.trunks) and shared.sid not in snap.acls
    store.delete_trunk(A, t1.sid)
    db = sqlite3.connect(tmp_path / "store.db")
    assert db.execute("SELECT COUNT(*) FROM ip_addresses").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM trunk_acls").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM trunks").fetchone()[0] == 1
    db.close()


def test_paging_is_stable(store):
    made = [store.create_acl(A, f"l{i}") for i in range(7)]
    pages = [store.list_acls(A, limit=3, offset=o) for o in (0, 3, 6)]
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(a.sid for p in pages for a in p) == sorted(a.sid for a in made)
    assert store.count_acls(A) == 7


def test_limits(tmp_path):
    s = open_store(f"sqlite:{tmp_path / 'l.db'}", max_ips_per_list=2, max_lists_per_account=1)
    s.ensure_account(A)
    acl = s.create_acl(A, "l")
    with pytest.raises(LimitExceeded):
        s.create_acl(A, "m")
    s.create_ip_address(A, acl.sid, friendly_name="1", ip_address="10.0.0.1")
    s.create_ip_address(A, acl.sid, friendly_name="2", ip_address="10.0.0.2")
    with pytest.raises(LimitExceeded):
        s.create_ip_address(A, acl.sid, friendly_name="3", ip_address="10.0.0.3")
    s.close()


def test_friendly_name_required_for_lists(store):
    with pytest.raises(InvalidParameter) as err:
        store.create_acl(A, "")
    assert err.value.param == "FriendlyName"
    with pytest.raises(InvalidParameter):
        store.create_acl(A, "x" * 256)


def test_locked_store_is_unavailable_then_recovers(tmp_path):
    path = tmp_path / "locked.db"
    s = open_store(str(path))
    s.ensure_account(A)
    s._db.execute("PRAGMA busy_timeout = 100")
    # Another process holding the write lock makes writes fail as Unavailable.
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN IMMEDIATE")
    with pytest.raises(Unavailable):
        s.create_acl(A, "blocked")
    # An already migrated file opens without waiting for the lock.
    SqliteStore(str(path)).close()
    locker.execute("ROLLBACK")
    assert s.create_acl(A, "now").friendly_name == "now"
    assert [a.friendly_name for a in s.list_acls(A, limit=10)] == ["now"]
    s.close()
    locker.close()


def test_write_is_durable_when_it_returns(tmp_path):
    """A child writes, reports the SID, and is SIGKILLed: the row survives."""
    path = tmp_path / "durable.db"
    code = textwrap.dedent(f"""
        import os, sys, time
        from sipgate.store import open_store
        s = open_store({str(path)!r})
        s.ensure_account({A!r})
        acl = s.create_acl({A!r}, "durable")
        sys.stdout.write(acl.sid + "\\n"); sys.stdout.flush()
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        sid = child.stdout.readline().strip()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    assert sid.startswith("AL")
    s = open_store(str(path))
    assert s.get_acl(A, sid).friendly_name == "durable"
    s.close()


OPS = st.lists(st.tuples(st.sampled_from(["trunk", "acl", "ip", "assoc", "del_trunk", "del_acl", "del_ip"]),
                         st.integers(0, 5), st.integers(0, 5), st.integers(0, 255)), max_size=25)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(OPS)
def test_snapshot_matches_a_simple_model(tmp_path_factory, ops):
    s = open_store(str(tmp_path_factory.mktemp("model") / "m.db"))
    s.ensure_account(A)
    trunks: dict[str, list[str]] = {}
    acls: dict[str, dict[str, str]] = {}
    made = 0
    try:
        for op, i, j, octet in ops:
            tl, al = sorted(trunks), sorted(acls)
            if op == "trunk":
                made += 1  # unique even after deletes: a reused domain would be a Conflict
                trunks[s.create_trunk(A, domain_name=f"t{made}-{octet}.example").sid] = []
            elif op == "acl":
                acls[s.create_acl(A, f"l{octet}").sid] = {}
            elif op == "ip" and al:
                acl = al[i % len(al)]
                net = f"10.{octet}.0.0/16"
                if net in acls[acl].values():
                    with pytest.raises(InvalidParameter):
                        s.create_ip_address(A, acl, friendly_name="x", ip_address=f"10.{octet}.1.1",
                                            cidr_prefix_length=16)
                else:
                    ip = s.create_ip_address(A, acl, friendly_name="x", ip_address=f"10.{octet}.1.1",
                                             cidr_prefix_length=16)
                    acls[acl][ip.sid] = net
            elif op == "assoc" and tl and al:
                t, acl = tl[i % len(tl)], al[j % len(al)]
                if acl in trunks[t]:
                    with pytest.raises(Conflict):
                        s.associate(A, t, acl)
                else:
                    s.associate(A, t, acl)
                    trunks[t].append(acl)
            elif op == "del_trunk" and tl:
                t = tl[i % len(tl)]
                s.delete_trunk(A, t)
                del trunks[t]
            elif op == "del_acl" and al:
                acl = al[i % len(al)]
                s.delete_acl(A, acl)
                del acls[acl]
                for lists in trunks.values():
                    if acl in lists:
                        lists.remove(acl)
            elif op == "del_ip" and al:
                acl = al[i % len(al)]
                if acls[acl]:
                    ip = sorted(acls[acl])[j % len(acls[acl])]
                    s.delete_ip_address(A, acl, ip)
                    del acls[acl][ip]
        snap = s.snapshot()
        assert {t.sid: list(t.acl_sids) for t in snap.trunks} == trunks
        assert {k: {e.ip_sid for e in v} for k, v in snap.acls.items()} == {k: set(v) for k, v in acls.items()}
    finally:
        s.close()
