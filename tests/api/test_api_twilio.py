"""The REST API driven by the real twilio-python client, and enforced live on SIP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from helpers import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    DEMO_DOMAIN,
    DENIED,
    OTHER_ACCOUNT_SID,
    OTHER_AUTH_TOKEN,
    Serving,
    UdpPeer,
    basic,
    request,
)
from openapi_check import OpenApiChecker
from sipgate.sip import parse

ROOT = Path(__file__).resolve().parents[2]


def client(server: Serving, sid: str = ACCOUNT_SID, token: str = AUTH_TOKEN) -> Client:
    c = Client(sid, token)
    base = f"http://127.0.0.1:{server.api_port}"
    c.trunking.base_url = base
    c.api.base_url = base
    return c


def http(server: Serving, method: str, path: str, form: dict[str, str] | None = None,
         auth: tuple[str, str] | None = (ACCOUNT_SID, AUTH_TOKEN), body: bytes | None = None):
    data = body if body is not None else (urllib.parse.urlencode(form).encode() if form is not None else None)
    req = urllib.request.Request(f"http://127.0.0.1:{server.api_port}{path}", data=data, method=method)
    if auth:
        req.add_header("Authorization", basic(*auth))
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            status, headers = resp.status, dict(resp.headers)
    except urllib.error.HTTPError as err:
        raw = err.read()
        status, headers = err.code, dict(err.headers)
    body = json.loads(raw) if raw else None
    # Every response must match sipgate's own /openapi.json.
    checker(server).check(method, path, status, body)
    return status, headers, body


def checker(server: Serving) -> OpenApiChecker:
    if not hasattr(server, "openapi"):
        with urllib.request.urlopen(f"http://127.0.0.1:{server.api_port}/openapi.json", timeout=10) as resp:
            server.openapi = OpenApiChecker(json.loads(resp.read()))  # type: ignore[attr-defined]
    return server.openapi  # type: ignore[attr-defined]


def sip_verdict(server: Serving, source: str, domain: str, call_id: str) -> str:
    """'relayed' if the INVITE reached the PBX, else the status sipgate answered."""
    edge = ("127.0.0.1", server.sip_port)
    with UdpPeer(source) as peer:
        peer.send(request(ruri=f"sip:1@{domain}", via_host=f"{source}:{peer.address[1]}", call_id=call_id), edge)
        if not server.pbx.nothing(0.5):  # type: ignore[attr-defined]
            return "relayed"
        return str(parse(peer.recv()[0]).status)


def test_trunk_lifecycle_with_helper_library(server):
    c = client(server)
    trunk = c.trunking.v1.trunks.create(friendly_name="Lifecycle", domain_name="life.sipgate.test")
    assert trunk.sid.startswith("TK") and trunk.domain_name == "life.sipgate.test"
    assert trunk.recording == {"mode": "do-not-record", "trim": "do-not-trim"}
    assert trunk.url == f"http://127.0.0.1:{server.api_port}/v1/Trunks/{trunk.sid}"
    assert trunk.date_created is not None
    fetched = c.trunking.v1.trunks(trunk.sid).fetch()
    assert fetched.friendly_name == "Lifecycle"
    updated = c.trunking.v1.trunks(trunk.sid).update(friendly_name="Renamed", secure=True)
    assert updated.friendly_name == "Renamed" and updated.secure is True
    assert c.trunking.v1.trunks(trunk.sid).delete() is True
    with pytest.raises(TwilioRestException) as err:
        c.trunking.v1.trunks(trunk.sid).fetch()
    assert err.value.status == 404 and err.value.code == 20404


def test_acl_and_addresses_with_helper_library(server):
    c = client(server)
    lists = c.api.v2010.account.sip.ip_access_control_lists
    acl = lists.create(friendly_name="carriers-x")
    assert acl.sid.startswith("AL") and acl.subresource_uris["ip_addresses"].endswith("/IpAddresses.json")
    ip = lists(acl.sid).ip_addresses.create(friendly_name="edge", ip_address="198.51.100.0", cidr_prefix_length=24)
    assert (ip.ip_address, ip.cidr_prefix_length, ip.ip_access_control_list_sid) == ("198.51.100.0", 24, acl.sid)
    v6 = lists(acl.sid).ip_addresses.create(friendly_name="v6", ip_address="2001:db8::1")
    assert v6.cidr_prefix_length == 128  # absent: one host
    assert {i.sid for i in lists(acl.sid).ip_addresses.list()} == {ip.sid, v6.sid}
    assert lists(acl.sid).ip_addresses(ip.sid).update(friendly_name="renamed").friendly_name == "renamed"
    assert lists(acl.sid).update(friendly_name="carriers-y").friendly_name == "carriers-y"
    with pytest.raises(TwilioRestException) as err:
        lists(acl.sid).ip_addresses.create(friendly_name="dup", ip_address="198.51.100.77", cidr_prefix_length=24)
    assert err.value.status == 400 and err.value.code == 21235
    with pytest.raises(TwilioRestException) as err:
        lists(acl.sid).ip_addresses.create(friendly_name="bad", ip_address="999.1.1.1")
    assert err.value.code == 21235
    assert lists(acl.sid).ip_addresses(v6.sid).delete() is True
    assert lists(acl.sid).delete() is True


def test_paging_is_followed_to_the_end(server):
    c = client(server)
    made = {c.trunking.v1.trunks.create(friendly_name=f"p{i}", domain_name=f"page{i}.sipgate.test").sid
            for i in range(7)}
    seen = [t.sid for t in c.trunking.v1.trunks.list(page_size=2)]
    assert made <= set(seen) and len(seen) == len(set(seen))
    page = c.trunking.v1.trunks.page(page_size=3)
    assert len(list(page)) == 3 and page.next_page_url.startswith(f"http://127.0.0.1:{server.api_port}/v1/Trunks?")
    lists = c.api.v2010.account.sip.ip_access_control_lists
    for i in range(5):
        lists.create(friendly_name=f"paged-{i}")
    names = [a.friendly_name for a in lists.list(page_size=2)]
    assert all(f"paged-{i}" in names for i in range(5))


def test_change_is_enforced_when_the_api_answers(server):
    c = client(server)
    domain = "live.sipgate.test"
    trunk = c.trunking.v1.trunks.create(friendly_name="Live", domain_name=domain)
    assert sip_verdict(server, DENIED, domain, "live-1") == "403"  # a trunk with no list admits nothing
    acl = c.api.v2010.account.sip.ip_access_control_lists.create(friendly_name="live-list")
    ip = c.api.v2010.account.sip.ip_access_control_lists(acl.sid).ip_addresses.create(
        friendly_name="denied-host", ip_address=DENIED)
    assert sip_verdict(server, DENIED, domain, "live-2") == "403"  # listed, but not associated yet
    assoc = c.trunking.v1.trunks(trunk.sid).ip_access_control_lists.create(ip_access_control_list_sid=acl.sid)
    assert assoc.sid == acl.sid and assoc.trunk_sid == trunk.sid
    assert sip_verdict(server, DENIED, domain, "live-3") == "relayed"
    c.api.v2010.account.sip.ip_access_control_lists(acl.sid).ip_addresses(ip.sid).delete()
    assert sip_verdict(server, DENIED, domain, "live-4") == "403"
    c.api.v2010.account.sip.ip_access_control_lists(acl.sid).ip_addresses.create(
        friendly_name="back", ip_address="127.0.0.0", cidr_prefix_length=24)
    assert sip_verdict(server, DENIED, domain, "live-5") == "relayed"
    # Deleting the list takes its association with it: nothing dangles.
    c.api.v2010.account.sip.ip_access_control_lists(acl.sid).delete()
    assert c.trunking.v1.trunks(trunk.sid).ip_access_control_lists.list() == []
    assert sip_verdict(server, DENIED, domain, "live-6") == "403"
    c.trunking.v1.trunks(trunk.sid).delete()
    assert sip_verdict(server, DENIED, domain, "live-7") == "404"


def test_trunk_acl_association_errors(server):
    c = client(server)
    trunk = c.trunking.v1.trunks.create(domain_name="assoc.sipgate.test")
    acl = c.api.v2010.account.sip.ip_access_control_lists.create(friendly_name="assoc")
    c.trunking.v1.trunks(trunk.sid).ip_access_control_lists.create(ip_access_control_list_sid=acl.sid)
    with pytest.raises(TwilioRestException) as err:
        c.trunking.v1.trunks(trunk.sid).ip_access_control_lists.create(ip_access_control_list_sid=acl.sid)
    assert err.value.code == 21245
    fetched = c.trunking.v1.trunks(trunk.sid).ip_access_control_lists(acl.sid).fetch()
    assert fetched.friendly_name == "assoc"
    assert c.trunking.v1.trunks(trunk.sid).ip_access_control_lists(acl.sid).delete() is True
    with pytest.raises(TwilioRestException) as err:
        c.trunking.v1.trunks.create(domain_name="ASSOC.sipgate.test")
    assert err.value.code == 21248


def test_accounts_are_isolated(server):
    mine = client(server).api.v2010.account.sip.ip_access_control_lists.create(friendly_name="private")
    other = client(server, OTHER_ACCOUNT_SID, OTHER_AUTH_TOKEN)
    with pytest.raises(TwilioRestException) as err:
        other.api.v2010.accounts(ACCOUNT_SID).sip.ip_access_control_lists(mine.sid).fetch()
    assert err.value.status == 404
    with pytest.raises(TwilioRestException) as err:
        other.api.v2010.account.sip.ip_access_control_lists(mine.sid).fetch()
    assert err.value.status == 404
    trunk = client(server).trunking.v1.trunks.create(domain_name="iso.sipgate.test")
    with pytest.raises(TwilioRestException):
        other.trunking.v1.trunks(trunk.sid).delete()
    assert client(server).trunking.v1.trunks(trunk.sid).fetch().sid == trunk.sid


def test_error_bodies(server):
    status, headers, body = http(server, "GET", "/v1/Trunks", auth=None)
    assert status == 401 and body["code"] == 20003 and headers["WWW-Authenticate"] == 'Basic realm="Twilio API"'
    assert set(body) == {"code", "message", "more_info", "status"}
    wrong = http(server, "GET", "/v1/Trunks", auth=(ACCOUNT_SID, "wrong"))
    unknown = http(server, "GET", "/v1/Trunks", auth=("AC" + "f" * 32, "wrong"))
    assert wrong[0] == unknown[0] == 401 and wrong[2] == unknown[2]
    base = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
    status, _, body = http(server, "POST", base + ".json", form={})
    assert status == 400 and body["code"] == 20001 and "FriendlyName" in body["message"]
    status, _, body = http(server, "POST", f"/v1/Trunks/TK{'0' * 32}/IpAccessControlLists", form={})
    assert status == 400 and "IpAccessControlListSid" in body["message"]
    status, _, body = http(server, "GET", base + f"/AL{'0' * 32}.json")
    assert status == 404 and body["code"] == 20404
    status, headers, body = http(server, "PUT", "/v1/Trunks", form={"FriendlyName": "x"})
    assert status == 405 and body["status"] == 405
    status, _, body = http(server, "POST", base + ".json", body=b"FriendlyName=" + b"x" * 200_000)
    assert status == 413 and body["status"] == 413
    status, _, body = http(server, "GET", "/v1/Trunks?PageSize=0")
    assert status == 400 and "PageSize" in body["message"]
    status, _, _ = http(server, "DELETE", base + f"/AL{'0' * 32}.json")
    assert status == 404
    status, _, body = http(server, "POST", "/v1/Trunks", form={"Secure": "maybe"})
    assert status == 400 and "Secure" in body["message"]


def test_v2010_envelope_has_only_twilio_keys(server):
    status, _, body = http(server, "GET", f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists.json")
    assert status == 200
    assert set(body) == {"ip_access_control_lists", "end", "first_page_uri", "next_page_uri", "page",
                         "page_size", "previous_page_uri", "start", "uri"}
    status, _, body = http(server, "GET", "/v1/Trunks")
    assert set(body) == {"trunks", "meta"} and body["meta"]["key"] == "trunks"


def test_demo_trunk_visible_and_sip_still_enforced(server):
    trunks = {t.domain_name: t for t in client(server).trunking.v1.trunks.list()}
    demo = trunks[DEMO_DOMAIN]
    assert demo.auth_type == "IP_ACL"
    acls = client(server).trunking.v1.trunks(demo.sid).ip_access_control_lists.list()
    assert [a.friendly_name for a in acls] == ["demo-carrier"]


def test_isolation_on_every_method(server):
    mine = client(server)
    trunk = mine.trunking.v1.trunks.create(domain_name="every.sipgate.test")
    acl = mine.api.v2010.account.sip.ip_access_control_lists.create(friendly_name="every")
    ip = mine.api.v2010.account.sip.ip_access_control_lists(acl.sid).ip_addresses.create(
        friendly_name="e", ip_address="192.0.2.10")
    mine.trunking.v1.trunks(trunk.sid).ip_access_control_lists.create(ip_access_control_list_sid=acl.sid)
    b = (OTHER_ACCOUNT_SID, OTHER_AUTH_TOKEN)
    a_lists = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
    b_lists = f"/2010-04-01/Accounts/{OTHER_ACCOUNT_SID}/SIP/IpAccessControlLists"
    attempts = [
        ("GET", f"/v1/Trunks/{trunk.sid}", None),
        ("POST", f"/v1/Trunks/{trunk.sid}", {"FriendlyName": "stolen"}),
        ("DELETE", f"/v1/Trunks/{trunk.sid}", None),
        ("GET", f"/v1/Trunks/{trunk.sid}/IpAccessControlLists", None),
        ("POST", f"/v1/Trunks/{trunk.sid}/IpAccessControlLists", {"IpAccessControlListSid": acl.sid}),
        ("GET", f"/v1/Trunks/{trunk.sid}/IpAccessControlLists/{acl.sid}", None),
        ("DELETE", f"/v1/Trunks/{trunk.sid}/IpAccessControlLists/{acl.sid}", None),
    ]
    for lists in (a_lists, b_lists):
        attempts += [
            ("GET", f"{lists}/{acl.sid}.json", None),
            ("POST", f"{lists}/{acl.sid}.json", {"FriendlyName": "stolen"}),
            ("DELETE", f"{lists}/{acl.sid}.json", None),
            ("GET", f"{lists}/{acl.sid}/IpAddresses.json", None),
            ("POST", f"{lists}/{acl.sid}/IpAddresses.json", {"FriendlyName": "x", "IpAddress": "10.9.9.9"}),
            ("GET", f"{lists}/{acl.sid}/IpAddresses/{ip.sid}.json", None),
            ("POST", f"{lists}/{acl.sid}/IpAddresses/{ip.sid}.json", {"IpAddress": "10.9.9.9"}),
            ("DELETE", f"{lists}/{acl.sid}/IpAddresses/{ip.sid}.json", None),
        ]
    attempts.append(("GET", f"{a_lists}.json", None))
    for method, path, form in attempts:
        status, _, body = http(server, method, path, form=form, auth=b)
        assert status == 404 and body["code"] == 20404, (method, path, status, body)
    # Nothing changed for the owner.
    assert mine.trunking.v1.trunks(trunk.sid).fetch().friendly_name == ""
    assert mine.api.v2010.account.sip.ip_access_control_lists(acl.sid).ip_addresses(ip.sid).fetch().ip_address \
        == "192.0.2.10"
    assert len(mine.trunking.v1.trunks(trunk.sid).ip_access_control_lists.list()) == 1


def test_paging_walks_more_than_1000_records(server, tmp_path):
    seed = tmp_path / "many.toml"
    rows = ",\n".join(f'  {{ ip_address = "10.{i // 256}.{i % 256}.0", cidr_prefix_length = 24 }}' for i in range(1050))
    seed.write_text(f'[[accounts]]\nsid = "{ACCOUNT_SID}"\n[[accounts.ip_access_control_lists]]\n'
                    f'friendly_name = "many"\nip_addresses = [\n{rows}\n]\n')
    import subprocess
    import sys
    config = next(Path(p) for p in server.proc.args if str(p).endswith("sipgate.toml"))
    subprocess.run([sys.executable, "-m", "sipgate.cli", "seed", str(seed), "--config", str(config)],
                   check=True, capture_output=True, timeout=60)
    c = client(server)
    acl = next(a for a in c.api.v2010.account.sip.ip_access_control_lists.list() if a.friendly_name == "many")
    got = [ip.ip_address for ip in c.api.v2010.account.sip.ip_access_control_lists(acl.sid).ip_addresses.list(
        page_size=100)]
    assert len(got) == 1050 and len(set(got)) == 1050
    # Walk the raw links too, as any HTTP client would.
    path = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists/{acl.sid}/IpAddresses.json?PageSize=1000"
    pages = []
    while path:
        status, _, body = http(server, "GET", path)
        assert status == 200
        pages.append(len(body["ip_addresses"]))
        path = body["next_page_uri"]
    assert pages == [1000, 50]


def test_no_datagram_lost_while_tables_swap(server):
    import select
    import threading
    import time

    c = client(server)
    domain = "swap.sipgate.test"
    trunk = c.trunking.v1.trunks.create(domain_name=domain)
    acl = c.api.v2010.account.sip.ip_access_control_lists.create(friendly_name="swap")
    c.api.v2010.account.sip.ip_access_control_lists(acl.sid).ip_addresses.create(friendly_name="d", ip_address=DENIED)
    stop = threading.Event()

    def toggle() -> None:
        while not stop.is_set():
            c.trunking.v1.trunks(trunk.sid).ip_access_control_lists.create(ip_access_control_list_sid=acl.sid)
            stop.wait(0.02)  # hold each state long enough for INVITEs to meet it
            c.trunking.v1.trunks(trunk.sid).ip_access_control_lists(acl.sid).delete()
            stop.wait(0.02)

    worker = threading.Thread(target=toggle)
    worker.start()
    edge = ("127.0.0.1", server.sip_port)
    answered = relayed = 0
    try:
        with UdpPeer(DENIED) as peer:
            for i in range(200):
                peer.send(request(ruri=f"sip:1@{domain}", via_host=f"{DENIED}:{peer.address[1]}",
                                  call_id=f"swap-{i}"), edge)
                # Every INVITE gets exactly one outcome: a 403 back or a relay.
                ready, _, _ = select.select([peer.sock, server.pbx.sock], [], [], 2.0)  # type: ignore[attr-defined]
                assert ready, f"INVITE swap-{i} was lost"
                if peer.sock in ready:
                    assert parse(peer.recv()[0]).status == 403
                    answered += 1
                else:
                    server.pbx.recv()  # type: ignore[attr-defined]
                    relayed += 1
                time.sleep(0.003)
    finally:
        stop.set()
        worker.join(30)
    assert answered + relayed == 200
    assert answered and relayed  # the verdict really flipped while we sent


def test_every_operation_answers_as_its_openapi_says(server):
    a = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
    status, _, trunk = http(server, "POST", "/v1/Trunks", form={"FriendlyName": "oa", "DomainName": "oa.sipgate.test",
                                                                 "Secure": "true", "TransferMode": "sip-only"})
    assert status == 201 and trunk["secure"] is True and trunk["transfer_mode"] == "sip-only"
    t = f"/v1/Trunks/{trunk['sid']}"
    status, _, acl = http(server, "POST", a + ".json", form={"FriendlyName": "oa"})
    assert status == 201
    l = f"{a}/{acl['sid']}"
    status, _, ip = http(server, "POST", l + "/IpAddresses.json",
                         form={"FriendlyName": "oa", "IpAddress": "2001:db8::", "CidrPrefixLength": "32"})
    assert status == 201 and ip["cidr_prefix_length"] == 32
    steps = [
        ("GET", "/v1/Trunks", None, 200), ("GET", t, None, 200), ("POST", t, {"FriendlyName": "oa2"}, 200),
        ("POST", t + "/IpAccessControlLists", {"IpAccessControlListSid": acl["sid"]}, 201),
        ("GET", t + "/IpAccessControlLists", None, 200), ("GET", f"{t}/IpAccessControlLists/{acl['sid']}", None, 200),
        ("GET", a + ".json", None, 200), ("GET", l + ".json", None, 200),
        ("POST", l + ".json", {"FriendlyName": "oa2"}, 200), ("GET", l + "/IpAddresses.json", None, 200),
        ("GET", f"{l}/IpAddresses/{ip['sid']}.json", None, 200),
        ("POST", f"{l}/IpAddresses/{ip['sid']}.json", {"CidrPrefixLength": "48"}, 200),
        ("DELETE", f"{l}/IpAddresses/{ip['sid']}.json", None, 204),
        ("DELETE", f"{t}/IpAccessControlLists/{acl['sid']}", None, 204),
        ("DELETE", l + ".json", None, 204), ("DELETE", t, None, 204),
    ]
    for method, path, form, expected in steps:
        status, _, body = http(server, method, path, form=form)
        assert status == expected, (method, path, status, body)
    document = checker(server).doc
    declared = {(m.upper(), template, code) for template, ops in document["paths"].items()
                for m, op in ops.items() if m != "parameters"
                for code in op["responses"] if code.startswith("2")}
    assert declared <= checker(server).checked, declared - checker(server).checked


def test_full_flow_as_an_operator_runs_it(server):
    """List, addresses (IPv4 host and CIDR), trunk, association, paging, SIP, dissociation."""
    c = client(server)
    lists = c.api.v2010.account.sip.ip_access_control_lists
    acl = lists.create(friendly_name="operator-flow")
    lists(acl.sid).ip_addresses.create(friendly_name="sbc", ip_address="127.0.0.2")
    lists(acl.sid).ip_addresses.create(friendly_name="carrier range", ip_address="192.0.2.0", cidr_prefix_length=24)
    trunk = c.trunking.v1.trunks.create(friendly_name="Flow", domain_name="flow.sipgate.test")
    c.trunking.v1.trunks(trunk.sid).ip_access_control_lists.create(ip_access_control_list_sid=acl.sid)
    assert [ip.cidr_prefix_length for ip in lists(acl.sid).ip_addresses.list(page_size=1)] == [32, 24]
    assert [a.sid for a in c.trunking.v1.trunks(trunk.sid).ip_access_control_lists.list(page_size=1)] == [acl.sid]
    assert sip_verdict(server, "127.0.0.2", "flow.sipgate.test", "flow-1") == "relayed"
    assert sip_verdict(server, DENIED, "flow.sipgate.test", "flow-2") == "403"
    c.trunking.v1.trunks(trunk.sid).ip_access_control_lists(acl.sid).delete()
    assert sip_verdict(server, "127.0.0.2", "flow.sipgate.test", "flow-3") == "403"
