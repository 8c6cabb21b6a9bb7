"""The TOML seed loader: idempotent, all-or-nothing, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipgate.reload import compile_store
from sipgate.store.seed import SeedError, load_seed

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "config" / "demo-seed.toml"


@pytest.fixture
def store(store_factory):
    """An empty store (no accounts) of the backend under test."""
    return store_factory()


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
     "accounts[0].ip_access_control_lists[0].ip_addresses[0].ip_address"),
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


HEAD = '[[accounts]]\nsid = "AC00000000000000000000000000000001"\n'
LIST = '[[accounts.ip_access_control_lists]]\nfriendly_name = "l"\n'


@pytest.mark.parametrize("text, key", [
    (HEAD + 'friendly_name = 7\n', "accounts[0].friendly_name"),
    (HEAD + '[[accounts.ip_access_control_lists]]\nfriendly_name = ""\n',
     "accounts[0].ip_access_control_lists[0].friendly_name"),
    (HEAD + LIST + 'ip_addresses = [{ ip_address = "10.0.0.0", cidr_prefix_length = 40 }]\n',
     "accounts[0].ip_access_control_lists[0].ip_addresses[0].cidr_prefix_length"),
    (HEAD + LIST + 'ip_addresses = [{ ip_address = "10.0.0.1", friendly_name = "' + "x" * 300 + '" }]\n',
     "accounts[0].ip_access_control_lists[0].ip_addresses[0].friendly_name"),
    (HEAD + LIST + 'ip_addresses = [{ ip_address = "10.0.0.1", colour = "red" }]\n',
     "accounts[0].ip_access_control_lists[0].ip_addresses[0].colour"),
    (HEAD + LIST + 'ip_addresses = [{ ip_address = "10.0.0.1" }, "10.0.0.2"]\n',
     "accounts[0].ip_access_control_lists[0].ip_addresses[1]"),
    (HEAD + LIST + 'ip_addresses = [{ ip_address = "10.0.0.1" }, {}]\n',
     "accounts[0].ip_access_control_lists[0].ip_addresses[1].ip_address"),
    (HEAD + '[[accounts.trunks]]\ndomain_name = "t.example"\nsecure = "yes"\n', "accounts[0].trunks[0].secure"),
    (HEAD + '[[accounts.trunks]]\ndomain_name = "bad_name"\n', "accounts[0].trunks[0].domain_name"),
    (HEAD + '[[accounts.trunks]]\ndomain_name = "t.example"\nrecording_mode = "x"\n',
     "accounts[0].trunks[0].recording_mode"),
    # A valid first account, then a bad second one: the first is not applied either.
    (HEAD + LIST + '[[accounts]]\nsid = "AC00000000000000000000000000000002"\n[[accounts.trunks]]\n'
     'domain_name = "t.example"\nip_access_control_lists = ["l"]\n',
     "accounts[1].trunks[0].ip_access_control_lists[0]"),
    ('colour = 1\n', "(top)"),
])
def test_bad_seed_names_the_toml_key(store, tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SeedError) as err:
        load_seed(store, path)
    assert err.value.key.startswith(key), err.value
    assert store.revision() == 0
    with pytest.raises(Exception):
        store.get_account("AC00000000000000000000000000000001")


def test_seed_limits_roll_back_everything(store_factory, tmp_path):
    store = store_factory(max_ips_per_list=1)
    path = tmp_path / "limit.toml"
    path.write_text(HEAD + LIST + 'ip_addresses = [{ ip_address = "10.0.0.1" }, { ip_address = "10.0.0.2" }]\n')
    with pytest.raises(SeedError) as err:
        load_seed(store, path)
    assert err.value.key == "accounts[0].ip_access_control_lists[0].ip_addresses[1].ip_address"
    assert store.revision() == 0


def test_seed_domain_of_another_account(store, tmp_path):
    store.ensure_account("AC" + "f" * 32)
    store.create_trunk("AC" + "f" * 32, domain_name="t.example")
    path = tmp_path / "taken.toml"
    path.write_text(HEAD + '[[accounts.trunks]]\ndomain_name = "T.example"\n')
    with pytest.raises(SeedError) as err:
        load_seed(store, path)
    assert err.value.key == "accounts[0].trunks[0].domain_name"


def test_seed_reuses_what_the_api_made(store, tmp_path):
    """Natural keys: a list by name, an address by masked network, a trunk by domain."""
    account = "AC00000000000000000000000000000001"
    store.ensure_account(account, "made by the API")
    acl = store.create_acl(account, "l")
    store.create_ip_address(account, acl.sid, friendly_name="api", ip_address="10.0.0.9", cidr_prefix_length=24)
    trunk = store.create_trunk(account, domain_name="t.example", friendly_name="api trunk")
    path = tmp_path / "reuse.toml"
    path.write_text(HEAD + 'friendly_name = "seeded"\n' + LIST
                    + 'ip_addresses = [{ ip_address = "10.0.0.1", cidr_prefix_length = 24 }]\n'
                    + '[[accounts.trunks]]\ndomain_name = "T.EXAMPLE"\nip_access_control_lists = ["l"]\n')
    report = load_seed(store, path)
    assert report.created == {"associations": 1}
    assert report.existing == {"accounts": 1, "ip_access_control_lists": 1, "ip_addresses": 1, "trunks": 1}
    assert "created 1 associations" in str(report)
    assert store.get_trunk(account, trunk.sid).friendly_name == "api trunk"  # seeds never update
    assert store.snapshot().trunks[0].acl_sids == (acl.sid,)
    assert store.count_acls(account) == 1 and store.count_ip_addresses(account, acl.sid) == 1


def test_seed_file_errors(store, tmp_path):
    with pytest.raises(SeedError) as err:
        load_seed(store, tmp_path / "missing.toml")
    assert err.value.key == "(file)" and isinstance(err.value, ValueError)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load_seed(store, empty).created == {} and store.revision() == 0


def test_seed_bulk_load_counts_against_what_exists_and_the_file_itself(store_factory, tmp_path):
    """The list's addresses go in in bulk: a network already in the list (by
    the API) or named earlier in the file is "existing", the limit counts
    both, and the first address over it is the one the error names."""
    store = store_factory(max_ips_per_list=3)
    account = "AC00000000000000000000000000000001"
    store.ensure_account(account)
    acl = store.create_acl(account, "l")
    store.create_ip_address(account, acl.sid, friendly_name="api", ip_address="10.0.0.9", cidr_prefix_length=24)
    path = tmp_path / "bulk.toml"
    path.write_text(HEAD + LIST + "ip_addresses = [\n"
                    '  { ip_address = "10.0.1.1", cidr_prefix_length = 24 },\n'
                    '  { ip_address = "10.0.1.7", cidr_prefix_length = 24 },\n'  # the same network again
                    '  { ip_address = "10.0.0.1", cidr_prefix_length = 24 },\n'  # the API's
                    '  { friendly_name = "host", ip_address = "10.0.2.1" },\n]\n')
    report = load_seed(store, path)
    assert report.created == {"ip_addresses": 2}
    assert report.existing == {"accounts": 1, "ip_access_control_lists": 1, "ip_addresses": 2}
    assert store.count_ip_addresses(account, acl.sid) == 3
    names = {ip.ip_address: ip.friendly_name for ip in store.list_ip_addresses(account, acl.sid, limit=10)}
    assert names == {"10.0.0.9": "api", "10.0.1.1": "10.0.1.1", "10.0.2.1": "host"}
    revision = store.revision()
    path.write_text(HEAD + LIST + 'ip_addresses = [{ ip_address = "10.0.2.1" }, { ip_address = "10.0.3.1" }]\n')
    with pytest.raises(SeedError) as err:
        load_seed(store, path)
    assert err.value.key == "accounts[0].ip_access_control_lists[0].ip_addresses[1].ip_address"
    assert "maximum of 3" in str(err.value)
    assert store.revision() == revision and store.count_ip_addresses(account, acl.sid) == 3


def test_a_bulk_seed_loads_every_address(store, tmp_path):
    """Over SqliteStore's bulk threshold (a larger page cache for the
    insert): every address in, one revision, and SQLite's connection left
    with the cache size it had."""
    from sipgate.store.sqlite import _BULK_ROWS, SqliteStore

    n = _BULK_ROWS + 500
    sqlite = isinstance(store, SqliteStore)
    before = store._db.execute("PRAGMA cache_size").fetchone()[0] if sqlite else None
    lines = [f'  {{ ip_address = "10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" }},' for i in range(n)]
    path = tmp_path / "bulk.toml"
    path.write_text(HEAD + LIST + "ip_addresses = [\n" + "\n".join(lines) + "\n]\n")
    report = load_seed(store, path)
    assert report.created == {"accounts": 1, "ip_access_control_lists": 1, "ip_addresses": n}
    (acl_sid, entries), = store.snapshot().acls.items()
    assert len(entries) == store.count_ip_addresses("AC00000000000000000000000000000001", acl_sid) == n
    if sqlite:
        assert store._db.execute("PRAGMA cache_size").fetchone()[0] == before
    assert load_seed(store, path).existing["ip_addresses"] == n
