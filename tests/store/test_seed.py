"""The TOML seed loader: idempotent, all-or-nothing, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipgate.reload import compile_store
from sipgate.store import open_store
from sipgate.store.seed import SeedError, load_seed

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo-seed.toml"


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "seed.db"))
    yield s
    s.close()


def test_demo_seed_creates_the_demo_trunk(store):
    report = load_seed(store, DEMO)
    assert report.created == {"accounts": 1, "ip_access_control_lists": 1, "ip_addresses": 1,
                              "trunks": 1, "associations": 1}
    table = compile_store(store)
    trunk = table.by_domain["demo.sipgate.test"]
    assert trunk.matcher.contains("127.0.0.2") and not trunk.matcher.contains("127.0.0.3")


def test_seed_twice_creates_nothing_and_keeps_revision(store):
    load_seed(store, DEMO)
    revision = store.revision()
    snap = store.snapshot()
    report = load_seed(store, DEMO)
    assert report.created == {} and sum(report.existing.values()) == 5
    assert store.revision() == revision
    assert store.snapshot() == snap


def test_seed_adds_only_what_is_missing(store, tmp_path):
    load_seed(store, DEMO)
    more = tmp_path / "more.toml"
    more.write_text(DEMO.read_text().replace(
        "ip_addresses = [\n", 'ip_addresses = [\n  { ip_address = "2001:db8::", cidr_prefix_length = 32 },\n'))
    report = load_seed(store, more)
    assert report.created == {"ip_addresses": 1}
    assert compile_store(store).by_domain["demo.sipgate.test"].matcher.contains("2001:db8::7")


@pytest.mark.parametrize("text, key", [
    ('[[accounts]]\nsid = "nope"\n', "accounts[0]"),
    ('[[accounts]]\nsid = "AC00000000000000000000000000000001"\nbogus = 1\n', "accounts[0].bogus"),
    ('[[accounts]]\nsid = "AC00000000000000000000000000000001"\n[[accounts.trunks]]\n'
     'domain_name = "t.example"\nip_access_control_lists = ["missing"]\n',
     "accounts[0].trunks[0].ip_access_control_lists[0]"),
    ('[[accounts]]\nsid = "AC00000000000000000000000000000001"\n[[accounts.ip_access_control_lists]]\n'
     'friendly_name = "l"\nip_addresses = [{ ip_address = "10.0.0.300" }]\n',
     "accounts[0].ip_access_control_lists[0].ip_addresses[0].IpAddress"),
    ('[[accounts]]\nsid = "AC00000000000000000000000000000001"\n[[accounts.trunks]]\nfriendly_name = "x"\n',
     "accounts[0].trunks[0].domain_name"),
    ("accounts = [\n", "(syntax)"),
])
def test_bad_seed_names_key_and_changes_nothing(store, tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    before = store.revision()
    with pytest.raises(SeedError) as err:
        load_seed(store, path)
    assert err.value.key.startswith(key), err.value
    assert str(path) in str(err.value)
    assert store.revision() == before
    assert store.snapshot().trunks == () and store.snapshot().acls == {}
