"""The store contract every backend keeps: fields, errors, isolation, revisions, snapshots."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from datetime import timezone

import pytest

from sipgate.store import (
    TRUNK_DEFAULTS,
    Account,
    AclEntry,
    Conflict,
    InvalidParameter,
    LimitExceeded,
    NotFound,
    Snapshot,
    StoreError,
    TrunkRules,
    Unavailable,
)

A = "AC" + "a" * 32  # the conftest ``store`` fixture creates A and B
B = "AC" + "b" * 32
C = "AC" + "c" * 32  # never created


def _param(exc_info: pytest.ExceptionInfo) -> tuple[int, str]:
    return exc_info.value.code, exc_info.value.param


# -- model -------------------------------------------------------------------

def test_errors_carry_what_a_twilio_body_needs():
    for cls in (InvalidParameter, Conflict, LimitExceeded):
        err = cls(21235, "IpAddress", "bad")
        assert isinstance(err, StoreError) and (err.code, err.param, err.message) == (21235, "IpAddress", "bad")
        assert str(err) == "bad"
    nf = NotFound("Trunk", "TK1")
    assert isinstance(nf, StoreError) and (nf.resource, nf.sid) == ("Trunk", "TK1")
    un = Unavailable("disk full")
    assert isinstance(un, StoreError) and un.message == "disk full"


def test_values_are_frozen(store):
    account = store.get_account(A)
    with pytest.raises(AttributeError):
        account.friendly_name = "x"  # type: ignore[misc]
    assert not hasattr(account, "__dict__")  # slots


# -- accounts ----------------------------------------------------------------

def test_accounts(store):
    account = store.get_account(A)
    assert isinstance(account, Account) and account.friendly_name == "Account A"
    assert account.date_created.tzinfo is not None
    assert account.date_created.utcoffset() == timezone.utc.utcoffset(None)
    assert account.date_created.microsecond == 0
    assert store.ensure_account(A) == account  # already there: unchanged
    with pytest.raises(NotFound) as err:
        store.get_account(C)
    assert (err.value.resource, err.value.sid) == ("Account", C)
    with pytest.raises(InvalidParameter):
        store.ensure_account("AC123")


# -- trunks ------------------------------------------------------------------

def test_trunk_fields_take_twilio_defaults(store):
    t = store.create_trunk(A)
    for key, value in TRUNK_DEFAULTS.items():
        assert getattr(t, key) == value, key
    assert t.auth_type == "" and t.account_sid == A
    assert len(t.sid) == 34 and int(t.sid[2:], 16) >= 0
    assert t.date_created == t.date_updated


def test_trunk_fields_are_validated(store):
    t = store.create_trunk(A, friendly_name="x" * 64, disaster_recovery_method="get",
                           disaster_recovery_url="https://dr.example/twiml", secure=True,
                           transfer_mode="sip-only", transfer_caller_id="from-transferor",
                           cnam_lookup_enabled=True, symmetric_rtp_enabled=True,
                           recording_mode="record-from-answer", recording_trim="trim-silence")
    assert (t.disaster_recovery_method, t.secure, t.cnam_lookup_enabled, t.symmetric_rtp_enabled) == (
        "GET", True, True, True)
    assert (t.recording_mode, t.recording_trim, t.transfer_mode, t.transfer_caller_id) == (
        "record-from-answer", "trim-silence", "sip-only", "from-transferor")
    for fields, param in (({"friendly_name": "x" * 65}, "FriendlyName"),
                          ({"disaster_recovery_method": "PUT"}, "DisasterRecoveryMethod"),
                          ({"disaster_recovery_url": "ftp://x"}, "DisasterRecoveryUrl"),
                          ({"secure": "yes"}, "Secure"),
                          ({"transfer_mode": "all"}, "TransferMode"),
                          ({"transfer_caller_id": "x"}, "TransferCallerId"),
                          ({"recording_mode": "always"}, "Mode"),
                          ({"recording_trim": "x"}, "Trim"),
                          ({"domain_name": "under_score.example"}, "DomainName"),
                          ({"domain_name": "192.0.2.1"}, "DomainName")):
        with pytest.raises(InvalidParameter) as err:
            store.create_trunk(A, **fields)
        assert err.value.param == param, fields
        with pytest.raises(InvalidParameter):
            store.update_trunk(A, t.sid, **fields)
    with pytest.raises(TypeError):
        store.create_trunk(A, colour="blue")
    assert store.get_trunk(A, t.sid) == t  # failed updates changed nothing


def test_update_trunk_domain(store):
    t = store.create_trunk(A, domain_name="a.example")
    other = store.create_trunk(A, domain_name="b.example")
    assert store.update_trunk(A, t.sid, domain_name="A.example").domain_name == "a.example"  # its own
    with pytest.raises(Conflict) as err:
        store.update_trunk(A, t.sid, domain_name="b.example")
    assert _param(err) == (21248, "DomainName")
    assert store.update_trunk(A, t.sid, domain_name=None).domain_name is None
    assert store.find_trunk_by_domain("a.example") is None
    assert store.update_trunk(A, other.sid, domain_name="").domain_name is None
    u = store.update_trunk(A, t.sid, recording_mode="record-from-ringing")
    assert u.recording_mode == "record-from-ringing" and u.date_updated >= t.date_updated


def test_list_and_count_trunks(store):
    made = [store.create_trunk(A, friendly_name=f"t{i}") for i in range(5)]
    store.create_trunk(B)
    assert store.count_trunks(A) == 5 and store.count_trunks(B) == 1 and store.count_trunks(C) == 0
    listed = store.list_trunks(A, limit=2, offset=0) + store.list_trunks(A, limit=2, offset=2) \
        + store.list_trunks(A, limit=2, offset=4)
    assert sorted(t.sid for t in listed) == sorted(t.sid for t in made)
    assert listed == sorted(listed, key=lambda t: t.date_created)
    assert store.list_trunks(A, limit=10, offset=5) == [] and store.list_trunks(C, limit=10) == []
    with pytest.raises(ValueError):
        store.list_trunks(A, limit=-1, offset=0)


def test_find_trunk_by_domain(store):
    t = store.create_trunk(B, domain_name="b.example")
    assert store.find_trunk_by_domain("B.Example") == t
    assert store.find_trunk_by_domain("nope.example") is None


# -- lists and addresses ---------------------------------------------------------

def test_acl_crud(store):
    acl = store.create_acl(A, "carriers")
    assert acl.sid.startswith("AL") and len(acl.sid) == 34 and acl.account_sid == A
    assert store.get_acl(A, acl.sid) == acl
    renamed = store.update_acl(A, acl.sid, "renamed")
    assert renamed.friendly_name == "renamed" and renamed.date_created == acl.date_created
    for bad, code in (("", 20001), (None, 20001), ("x" * 256, 20002)):
        with pytest.raises(InvalidParameter) as err:
            store.update_acl(A, acl.sid, bad)
        assert _param(err) == (code, "FriendlyName")
    assert store.count_acls(A) == 1 and store.count_acls(B) == 0
    store.delete_acl(A, acl.sid)
    with pytest.raises(NotFound) as err:
        store.get_acl(A, acl.sid)
    assert err.value.resource == "IpAccessControlList"
    with pytest.raises(NotFound):
        store.create_acl(C, "no such account")


def test_ip_address_crud(store):
    acl = store.create_acl(A, "l")
    ips = [store.create_ip_address(A, acl.sid, friendly_name=f"h{i}", ip_address=f"192.0.2.{i}")
           for i in range(4)]
    assert store.count_ip_addresses(A, acl.sid) == 4
    assert sorted(i.sid for i in store.list_ip_addresses(A, acl.sid, limit=3, offset=1)
                  + store.list_ip_addresses(A, acl.sid, limit=1, offset=0)) == sorted(i.sid for i in ips)
    ip = store.get_ip_address(A, acl.sid, ips[0].sid)
    assert (ip.account_sid, ip.ip_access_control_list_sid, ip.cidr_prefix_length) == (A, acl.sid, 32)
    renamed = store.update_ip_address(A, acl.sid, ip.sid, friendly_name="renamed")
    assert (renamed.friendly_name, renamed.ip_address, renamed.cidr_prefix_length) == ("renamed", "192.0.2.0", 32)
    widened = store.update_ip_address(A, acl.sid, ip.sid, cidr_prefix_length=30)  # now covers .1-.3's network
    assert (widened.ip_address, widened.cidr_prefix_length) == ("192.0.2.0", 30)
    with pytest.raises(InvalidParameter) as err:  # 192.0.2.1 -> 192.0.2.0/30: already there
        store.update_ip_address(A, acl.sid, ips[1].sid, cidr_prefix_length=30)
    assert _param(err) == (21235, "IpAddress") and "already exists" in err.value.message
    store.delete_ip_address(A, acl.sid, ip.sid)
    with pytest.raises(NotFound) as err:
        store.get_ip_address(A, acl.sid, ip.sid)
    assert err.value.resource == "IpAddress"
    with pytest.raises(NotFound):
        store.delete_ip_address(A, acl.sid, ip.sid)


def test_ip_address_parameters(store):
    acl = store.create_acl(A, "l")
    with pytest.raises(InvalidParameter) as err:
        store.create_ip_address(A, acl.sid, friendly_name="", ip_address="192.0.2.1")
    assert _param(err) == (20001, "FriendlyName")
    with pytest.raises(InvalidParameter) as err:
        store.create_ip_address(A, acl.sid, friendly_name="x", ip_address="")
    assert err.value.param == "IpAddress"
    for bad in ("10.1", "010.0.0.1", "1.2.3.4/24", "fe80::1%eth0", "::g"):
        with pytest.raises(InvalidParameter) as err:
            store.create_ip_address(A, acl.sid, friendly_name="x", ip_address=bad)
        assert _param(err) == (21235, "IpAddress"), bad
    for prefix in (33, -1, True, 1.5):
        with pytest.raises(InvalidParameter) as err:
            store.create_ip_address(A, acl.sid, friendly_name="x", ip_address="10.0.0.0", cidr_prefix_length=prefix)
        assert _param(err) == (21235, "CidrPrefixLength"), prefix
    v6 = store.create_ip_address(A, acl.sid, friendly_name="v6", ip_address="2001:0DB8:0:0::1")
    assert (v6.ip_address, v6.cidr_prefix_length) == ("2001:db8::1", 128)
    anything = store.create_ip_address(A, acl.sid, friendly_name="all", ip_address="0.0.0.0", cidr_prefix_length=0)
    assert anything.cidr_prefix_length == 0


def test_ipv4_mapped_addresses_are_stored_as_ipv4(store):
    """The edge unwraps mapped sources, so a mapped entry is kept in IPv4 form."""
    acl = store.create_acl(A, "l")
    ip = store.create_ip_address(A, acl.sid, friendly_name="m", ip_address="::ffff:192.0.2.7")
    assert (ip.ip_address, ip.cidr_prefix_length) == ("192.0.2.7", 32)
    net = store.create_ip_address(A, acl.sid, friendly_name="n", ip_address="::ffff:198.51.100.0",
                                  cidr_prefix_length=120)
    assert (net.ip_address, net.cidr_prefix_length) == ("198.51.100.0", 24)
    with pytest.raises(InvalidParameter):  # the same network as the first, written as IPv4
        store.create_ip_address(A, acl.sid, friendly_name="dup", ip_address="192.0.2.7")
    with pytest.raises(InvalidParameter) as err:
        store.create_ip_address(A, acl.sid, friendly_name="wide", ip_address="::ffff:10.0.0.0",
                                cidr_prefix_length=64)
    assert _param(err) == (21235, "CidrPrefixLength")


def test_limits(store_factory):
    s = store_factory(max_ips_per_list=2, max_lists_per_account=2)
    s.ensure_account(A)
    s.ensure_account(B)
    one, two = s.create_acl(A, "one"), s.create_acl(A, "two")
    with pytest.raises(LimitExceeded) as err:
        s.create_acl(A, "three")
    assert err.value.param == "FriendlyName" and err.value.code
    s.create_acl(B, "another account's")  # the limit is per account
    for i in range(2):
        s.create_ip_address(A, one.sid, friendly_name="x", ip_address=f"10.0.0.{i}")
    rev = s.revision()
    with pytest.raises(LimitExceeded) as err:
        s.create_ip_address(A, one.sid, friendly_name="x", ip_address="10.0.0.9")
    assert err.value.param == "IpAddress" and s.revision() == rev
    s.create_ip_address(A, two.sid, friendly_name="x", ip_address="10.0.0.9")  # per list
    s.delete_acl(A, two.sid)
    s.create_acl(A, "three")  # room again


# -- associations -------------------------------------------------------------

def test_association_errors(store):
    t = store.create_trunk(A, domain_name="t.example")
    acl = store.create_acl(A, "l")
    with pytest.raises(NotFound) as err:
        store.associate(A, "TK" + "0" * 32, acl.sid)
    assert err.value.resource == "Trunk"
    with pytest.raises(NotFound) as err:
        store.associate(A, t.sid, "AL" + "0" * 32)
    assert err.value.resource == "IpAccessControlList"
    assoc = store.associate(A, t.sid, acl.sid)
    assert store.get_trunk_acl(A, t.sid, acl.sid) == assoc
    for call in (lambda: store.get_trunk_acl(B, t.sid, acl.sid),
                 lambda: store.list_trunk_acls(B, t.sid, limit=10),
                 lambda: store.count_trunk_acls(B, t.sid),
                 lambda: store.dissociate(B, t.sid, acl.sid),
                 lambda: store.associate(B, t.sid, acl.sid)):
        with pytest.raises(NotFound):
            call()
    store.update_acl(A, acl.sid, "renamed")
    assert store.get_trunk_acl(A, t.sid, acl.sid).friendly_name == "renamed"
    store.dissociate(A, t.sid, acl.sid)
    assert store.get_trunk(A, t.sid).auth_type == ""
    assert store.get_acl(A, acl.sid).friendly_name == "renamed"  # the list itself stays


def test_trunk_lists_in_association_order(store):
    t = store.create_trunk(A, domain_name="t.example")
    lists = [store.create_acl(A, f"l{i}") for i in range(5)]
    for acl in reversed(lists):
        store.associate(A, t.sid, acl.sid)
    expected = [a.sid for a in reversed(lists)]
    assert [x.acl_sid for x in store.list_trunk_acls(A, t.sid, limit=10)] == expected
    assert [x.acl_sid for x in store.list_trunk_acls(A, t.sid, limit=2, offset=3)] == expected[3:]
    assert store.count_trunk_acls(A, t.sid) == 5
    (rules,) = store.snapshot().trunks
    assert rules.acl_sids == tuple(expected)


def test_deleting_a_trunk_removes_its_associations_only(store):
    t = store.create_trunk(A, domain_name="t.example")
    acl = store.create_acl(A, "l")
    store.create_ip_address(A, acl.sid, friendly_name="x", ip_address="10.0.0.1")
    store.associate(A, t.sid, acl.sid)
    store.delete_trunk(A, t.sid)
    with pytest.raises(NotFound):
        store.list_trunk_acls(A, t.sid, limit=10)
    assert store.count_ip_addresses(A, acl.sid) == 1
    snap = store.snapshot()
    assert snap.trunks == () and len(snap.acls[acl.sid]) == 1
    # The domain is free again.
    store.create_trunk(B, domain_name="t.example")


# -- revision and snapshot ---------------------------------------------------

def test_every_kind_of_write_bumps_the_revision_once(store):
    t = store.create_trunk(A, domain_name="t.example")
    acl = store.create_acl(A, "l")
    ip = store.create_ip_address(A, acl.sid, friendly_name="x", ip_address="10.0.0.1")
    writes = [
        lambda: store.ensure_account(C, "new"),
        lambda: store.update_trunk(A, t.sid, friendly_name="n"),
        lambda: store.update_acl(A, acl.sid, "m"),
        lambda: store.update_ip_address(A, acl.sid, ip.sid, ip_address="10.0.0.2"),
        lambda: store.associate(A, t.sid, acl.sid),
        lambda: store.dissociate(A, t.sid, acl.sid),
        lambda: store.delete_ip_address(A, acl.sid, ip.sid),
        lambda: store.delete_acl(A, acl.sid),
        lambda: store.delete_trunk(A, t.sid),
    ]
    for write in writes:
        before = store.revision()
        write()
        assert store.revision() == before + 1
    before = store.revision()
    for failing in (lambda: store.delete_trunk(A, t.sid), lambda: store.update_acl(A, acl.sid, "x"),
                    lambda: store.create_trunk(A, domain_name="bad domain")):
        with pytest.raises(StoreError):
            failing()
    store.count_trunks(A)
    store.find_trunk_by_domain("t.example")
    assert store.revision() == before


def test_snapshot_contents(store):
    t1 = store.create_trunk(A, domain_name="one.example")
    t2 = store.create_trunk(B)  # no domain
    l1, l2 = store.create_acl(A, "first"), store.create_acl(B, "unassociated")
    e1 = store.create_ip_address(A, l1.sid, friendly_name="x", ip_address="10.0.0.5", cidr_prefix_length=24)
    e2 = store.create_ip_address(B, l2.sid, friendly_name="y", ip_address="2001:db8::", cidr_prefix_length=32)
    store.associate(A, t1.sid, l1.sid)
    snap = store.snapshot()
    assert isinstance(snap, Snapshot) and snap.revision == store.revision()
    assert isinstance(snap.acls, Mapping) and isinstance(snap.acl_names, Mapping)
    assert set(snap.trunks) == {TrunkRules(t1.sid, A, "one.example", (l1.sid,)), TrunkRules(t2.sid, B, None, ())}
    assert dict(snap.acls) == {l1.sid: (AclEntry(e1.sid, "10.0.0.5", 24),),  # host bits kept: compiler masks
                               l2.sid: (AclEntry(e2.sid, "2001:db8::", 32),)}
    assert dict(snap.acl_names) == {l1.sid: "first", l2.sid: "unassociated"}
    assert store.snapshot() == snap  # reads change nothing


def test_concurrent_writers_from_threads(store):
    acl = store.create_acl(A, "l")
    before = store.revision()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(10):
                store.create_ip_address(A, acl.sid, friendly_name="x", ip_address=f"10.{n}.{i}.0",
                                        cidr_prefix_length=24)
                store.snapshot()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert errors == []
    assert store.count_ip_addresses(A, acl.sid) == 60
    assert store.revision() == before + 60


def test_closed_store_is_unavailable(store_factory):
    s = store_factory()
    s.close()
    with pytest.raises(Unavailable):
        s.revision()
    with pytest.raises(Unavailable):
        s.ensure_account(A)
