"""Random sequences of store writes keep snapshot, counts and errors in step with a dict model."""

from __future__ import annotations

from typing import Any

import netaddr
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from sipgate.store import Conflict, InvalidParameter, NotFound

ACCOUNTS = ("AC" + "1" * 32, "AC" + "2" * 32)
account = st.sampled_from(ACCOUNTS)
pick = st.integers(0, 1_000)
# A few networks that collide after masking, in both families.
address = st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.1.1", "192.0.2.9", "2001:db8::1", "2001:db8:0:1::1",
                           "::ffff:10.0.0.3"])
prefix = st.sampled_from([None, 16, 24, 32])


def _network(ip: str, length: int | None) -> str:
    """Reference semantics: None is one host; a mapped address is its IPv4 network."""
    addr = netaddr.IPAddress(ip)
    if length is None:
        length = 32 if addr.version == 4 else 128
    if addr.is_ipv4_mapped():
        addr, length = addr.ipv4(), length - 96
    return str(netaddr.IPNetwork((int(addr), length), version=addr.version).cidr)


class StoreModel(RuleBasedStateMachine):
    """The model: per account trunks (sid -> acl sids in order), lists (sid -> {ip sid: network})."""

    factory: Any = None

    def __init__(self) -> None:
        super().__init__()
        self.store = type(self).factory()
        for sid in ACCOUNTS:
            self.store.ensure_account(sid)
        self.owner: dict[str, str] = {}               # trunk or list sid -> account
        self.trunks: dict[str, list[str]] = {}
        self.lists: dict[str, dict[str, str]] = {}
        self.domains: dict[str, str] = {}             # trunk sid -> domain
        self.revision = self.store.revision()
        self.serial = 0

    def teardown(self) -> None:
        self.store.close()

    def _pick(self, pool: dict[str, Any], i: int, acct: str | None = None) -> str | None:
        # Creation order, not SID order: SIDs are random, and the choice must
        # replay identically for Hypothesis.
        sids = [s for s in pool if acct is None or self.owner[s] == acct]
        return sids[i % len(sids)] if sids else None

    def _wrote(self) -> None:
        self.revision += 1

    @rule(acct=account, with_domain=st.booleans())
    def create_trunk(self, acct: str, with_domain: bool) -> None:
        self.serial += 1
        domain = f"t{self.serial}.example" if with_domain else None
        t = self.store.create_trunk(acct, domain_name=domain)
        self.owner[t.sid], self.trunks[t.sid] = acct, []
        if domain:
            self.domains[t.sid] = domain
        self._wrote()

    @precondition(lambda self: bool(self.domains))
    @rule(acct=account, i=pick)
    def reuse_domain(self, acct: str, i: int) -> None:
        taken = list(self.domains.values())[i % len(self.domains)]
        try:
            self.store.create_trunk(acct, domain_name=taken.upper())
            raise AssertionError("a taken domain was accepted")
        except Conflict as exc:
            assert exc.code == 21248

    @precondition(lambda self: bool(self.trunks))
    @rule(i=pick)
    def delete_trunk(self, i: int) -> None:
        sid = self._pick(self.trunks, i)
        self.store.delete_trunk(self.owner[sid], sid)
        del self.trunks[sid]
        self.domains.pop(sid, None)
        self._wrote()

    @rule(acct=account)
    def create_list(self, acct: str) -> None:
        acl = self.store.create_acl(acct, f"list {self.serial}")
        self.owner[acl.sid], self.lists[acl.sid] = acct, {}
        self._wrote()

    @precondition(lambda self: bool(self.lists))
    @rule(i=pick)
    def delete_list(self, i: int) -> None:
        sid = self._pick(self.lists, i)
        self.store.delete_acl(self.owner[sid], sid)
        del self.lists[sid]
        for acls in self.trunks.values():
            if sid in acls:
                acls.remove(sid)
        self._wrote()

    @precondition(lambda self: bool(self.lists))
    @rule(i=pick, ip=address, length=prefix)
    def create_ip(self, i: int, ip: str, length: int | None) -> None:
        sid = self._pick(self.lists, i)
        acct = self.owner[sid]
        if ip.startswith("::ffff:") and length is not None:
            length += 96  # a mapped address's prefix length counts in the IPv6 space
        network = _network(ip, length)
        if network in self.lists[sid].values():
            try:
                self.store.create_ip_address(acct, sid, friendly_name="x", ip_address=ip, cidr_prefix_length=length)
                raise AssertionError("a duplicate network was accepted")
            except InvalidParameter as exc:
                assert (exc.code, exc.param) == (21235, "IpAddress")
            return
        entry = self.store.create_ip_address(acct, sid, friendly_name="x", ip_address=ip, cidr_prefix_length=length)
        self.lists[sid][entry.sid] = network
        self._wrote()

    @precondition(lambda self: any(self.lists.values()))
    @rule(i=pick, j=pick)
    def delete_ip(self, i: int, j: int) -> None:
        sid = self._pick({k: v for k, v in self.lists.items() if v}, i)
        ip = list(self.lists[sid])[j % len(self.lists[sid])]
        self.store.delete_ip_address(self.owner[sid], sid, ip)
        del self.lists[sid][ip]
        self._wrote()

    @precondition(lambda self: bool(self.trunks) and bool(self.lists))
    @rule(i=pick, j=pick)
    def associate(self, i: int, j: int) -> None:
        t = self._pick(self.trunks, i)
        acct = self.owner[t]
        acl = self._pick(self.lists, j, acct)
        if acl is None:
            acl = self.store.create_acl(acct, "for association").sid  # keep associations frequent
            self.owner[acl], self.lists[acl] = acct, {}
            self._wrote()
        if acl in self.trunks[t]:
            try:
                self.store.associate(acct, t, acl)
                raise AssertionError("a second association was accepted")
            except Conflict as exc:
                assert exc.code == 21245
            return
        self.store.associate(acct, t, acl)
        self.trunks[t].append(acl)
        self._wrote()

    @precondition(lambda self: any(self.trunks.values()))
    @rule(i=pick, j=pick)
    def dissociate(self, i: int, j: int) -> None:
        t = self._pick({k: v for k, v in self.trunks.items() if v}, i)
        acl = self.trunks[t][j % len(self.trunks[t])]
        self.store.dissociate(self.owner[t], t, acl)
        self.trunks[t].remove(acl)
        self._wrote()

    @precondition(lambda self: bool(self.trunks) or bool(self.lists))
    @rule(i=pick)
    def other_account_sees_nothing(self, i: int) -> None:
        sid = self._pick({**self.trunks, **self.lists}, i)
        other = ACCOUNTS[1] if self.owner[sid] == ACCOUNTS[0] else ACCOUNTS[0]
        calls = ([lambda: self.store.get_trunk(other, sid), lambda: self.store.delete_trunk(other, sid)]
                 if sid in self.trunks else
                 [lambda: self.store.get_acl(other, sid), lambda: self.store.delete_acl(other, sid),
                  lambda: self.store.create_ip_address(other, sid, friendly_name="x", ip_address="10.9.9.9")])
        for call in calls:
            try:
                call()
                raise AssertionError("another account's object was reachable")
            except NotFound:
                pass

    @invariant()
    def snapshot_matches(self) -> None:
        snap = self.store.snapshot()
        assert snap.revision == self.revision == self.store.revision()
        assert {t.sid: list(t.acl_sids) for t in snap.trunks} == self.trunks
        assert {t.sid: t.account_sid for t in snap.trunks} == {s: self.owner[s] for s in self.trunks}
        assert {t.sid: t.domain_name for t in snap.trunks} == {s: self.domains.get(s) for s in self.trunks}
        assert {k: {e.ip_sid: _network(e.ip_address, e.cidr_prefix_length) for e in v}
                for k, v in snap.acls.items()} == self.lists
        assert set(snap.acl_names) == set(self.lists)
        for acct in ACCOUNTS:
            assert self.store.count_trunks(acct) == sum(self.owner[s] == acct for s in self.trunks)
            assert self.store.count_acls(acct) == sum(self.owner[s] == acct for s in self.lists)


def test_store_follows_the_model(store_factory):
    StoreModel.factory = staticmethod(store_factory)
    try:
        run_state_machine_as_test(StoreModel, settings=settings(max_examples=20, stateful_step_count=40,
                                                                deadline=None))
    finally:
        StoreModel.factory = None
