"""decide(): the trunk rule, for every kind of request, as values."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import ACL_SID, ALLOWED, DEMO_DOMAIN, DENIED, TRUNK_SID, demo_table, request, table
from sipgate.admission import Admit, AdmissionTable, Answer, Context, Drop, Reject, decide, explain
from sipgate.sip import derive_to_tag, parse

SECRET = b"test-secret"
CTX = Context(own_hosts=frozenset({"127.0.0.1"}), secret=SECRET)


def judge(data: bytes, source: str, tbl: AdmissionTable | None = None, ctx: Context = CTX):
    return decide(parse(data), source, tbl or demo_table(), ctx)


def test_invite_from_listed_source_is_admitted():
    d = judge(request(), ALLOWED)
    assert isinstance(d, Admit)
    assert d.trunk.sid == TRUNK_SID and d.reason == "admitted" and not d.pop_route


def test_invite_from_unlisted_source_is_forbidden():
    d = judge(request(), DENIED)
    assert isinstance(d, Reject)
    assert (d.status, d.phrase, d.reason) == (403, "Forbidden", "forbidden")
    assert "not in any IP access control list" in d.warning


def test_domain_match_is_case_insensitive_and_ignores_port():
    assert isinstance(judge(request(ruri="sip:1@DEMO.SipGate.Test:5099"), ALLOWED), Admit)


def test_unknown_host_is_404_or_dropped_by_policy():
    d = judge(request(ruri="sip:1@other.example"), ALLOWED)
    assert isinstance(d, Reject) and d.status == 404 and d.reason == "no_trunk"
    ctx = Context(own_hosts=frozenset(), unknown_host="drop", secret=SECRET)
    assert judge(request(ruri="sip:1@other.example"), ALLOWED, ctx=ctx) == Drop("no_trunk")


def test_trunk_without_list_admits_nothing():
    tbl = table([(TRUNK_SID, DEMO_DOMAIN, [])])
    d = judge(request(), ALLOWED, tbl)
    assert isinstance(d, Reject) and d.status == 403
    assert "no IP access control list" in d.warning


def test_only_packet_source_decides_never_headers():
    # Via, Contact and From all claim the allowed address; the packet says otherwise.
    data = request(via_host=f"{ALLOWED}:5060", extra=[f"X-Forwarded-For: {ALLOWED}"])
    assert isinstance(judge(data, DENIED), Reject)


def test_ipv4_mapped_ipv6_source_is_unwrapped():
    assert isinstance(judge(request(), f"::ffff:{ALLOWED}"), Admit)
    assert isinstance(judge(request(), f"::ffff:{DENIED}"), Reject)


def test_ipv6_lists():
    tbl = table([(TRUNK_SID, DEMO_DOMAIN, [(ACL_SID, ["2001:db8::/32"])])])
    assert isinstance(judge(request(), "2001:db8:1::5", tbl), Admit)
    assert isinstance(judge(request(), "2001:db9::5", tbl), Reject)


def test_union_of_the_trunks_lists():
    tbl = table([(TRUNK_SID, DEMO_DOMAIN, [("AL" + "a" * 32, ["10.0.0.0/8"]), ("AL" + "b" * 32, ["192.0.2.7"])])])
    assert isinstance(judge(request(), "10.9.9.9", tbl), Admit)
    assert isinstance(judge(request(), "192.0.2.7", tbl), Admit)
    assert isinstance(judge(request(), "192.0.2.8", tbl), Reject)


def test_another_trunks_list_does_not_admit():
    tbl = table([
        (TRUNK_SID, DEMO_DOMAIN, [(ACL_SID, ["10.0.0.0/8"])]),
        ("TK" + "2" * 32, "other.sipgate.test", [("AL" + "2" * 32, [f"{ALLOWED}/32"])]),
    ])
    assert isinstance(judge(request(), ALLOWED, tbl), Reject)
    assert isinstance(judge(request(ruri="sip:1@other.sipgate.test"), ALLOWED, tbl), Admit)


def test_max_forwards_zero_is_483_after_admission():
    d = judge(request(max_forwards=0), ALLOWED)
    assert isinstance(d, Reject) and d.status == 483
    # A denied source learns nothing more than 403.
    assert judge(request(max_forwards=0), DENIED).status == 403


def test_proxy_require_is_420_with_every_tag_after_admission():
    # RFC 3261 §16.3 step 5: sipgate supports no proxy extension.
    data = request(extra=["Proxy-Require: foo, bar", "proxy-require: baz,foo"])
    d = judge(data, ALLOWED)
    assert isinstance(d, Reject)
    assert (d.status, d.phrase, d.reason, d.unsupported) == (420, "Bad Extension", "bad_extension",
                                                             ("foo", "bar", "baz"))
    # A denied source learns nothing more than 403; Max-Forwards is checked first (step 3).
    assert judge(data, DENIED).status == 403
    assert judge(request(max_forwards=0, extra=["Proxy-Require: foo"]), ALLOWED).status == 483
    # An empty header requires nothing.
    assert isinstance(judge(request(extra=["Proxy-Require: "]), ALLOWED), Admit)


def test_proxy_require_in_dialog_and_on_options():
    route = f"<sip:127.0.0.1;lr;sgt={TRUNK_SID}>"
    bye = request("BYE", "sip:pbx@10.0.0.1", to_tag="t", cseq=2, routes=[route], extra=["Proxy-Require: x"])
    assert judge(bye, ALLOWED).status == 420
    # An ACK cannot be answered: it goes on.
    ack = request("ACK", "sip:pbx@10.0.0.1", to_tag="t", routes=[route], extra=["Proxy-Require: x"])
    assert isinstance(judge(ack, ALLOWED), Admit)
    # OPTIONS to the trunk domain (answered at the edge): 420, as RFC 4475 3.3.5 has it;
    # to sipgate itself sipgate is the UAS, and Proxy-Require is not for it.
    assert judge(request("OPTIONS", f"sip:{DEMO_DOMAIN}", extra=["Proxy-Require: x"]), ALLOWED).status == 420
    own = judge(request("OPTIONS", "sip:127.0.0.1", extra=["Proxy-Require: x"]), ALLOWED)
    assert isinstance(own, Answer) and own.status == 200


def test_default_trunk_for_ip_literal_request_uri():
    ctx = Context(own_hosts=frozenset({"127.0.0.1"}), default_trunk=DEMO_DOMAIN, secret=SECRET)
    assert isinstance(judge(request(ruri="sip:service@127.0.0.1:5060"), ALLOWED, ctx=ctx), Admit)
    assert isinstance(judge(request(ruri="sip:service@127.0.0.1:5060"), DENIED, ctx=ctx), Reject)
    # Without a default trunk an IP literal is an unknown host.
    assert judge(request(ruri="sip:service@127.0.0.1:5060"), ALLOWED).status == 404


def test_options_to_sipgate_itself_is_keepalive_for_admitted_sources():
    data = request("OPTIONS", "sip:127.0.0.1")
    assert judge(data, ALLOWED) == Answer(200, "OK", "keepalive")
    d = judge(data, DENIED)
    assert isinstance(d, Reject) and d.status == 403


def test_options_to_trunk_domain_answered_by_trunk_rule():
    assert isinstance(judge(request("OPTIONS"), ALLOWED), Answer)
    assert judge(request("OPTIONS"), DENIED).status == 403


def test_other_methods_follow_the_trunk_rule():
    for method in ("REGISTER", "MESSAGE", "SUBSCRIBE", "CANCEL", "INFO"):
        assert isinstance(judge(request(method), ALLOWED), Admit), method
        assert judge(request(method), DENIED).status == 403, method


def test_ack_for_our_own_reject_is_absorbed_from_anyone():
    invite = parse(request())
    tag = derive_to_tag(invite, SECRET)
    ack = request("ACK", to_tag=tag)
    assert judge(ack, DENIED) == Drop("ack_absorbed")
    assert judge(ack, ALLOWED) == Drop("ack_absorbed")


def test_ack_out_of_dialog_or_denied_gets_nothing():
    assert judge(request("ACK"), ALLOWED) == Drop("no_trunk")
    assert judge(request("ACK", to_tag="pbx-tag"), DENIED) == Drop("forbidden")


def test_in_dialog_request_checked_against_trunk_in_record_route():
    route = f"<sip:127.0.0.1:5060;lr;sgt={TRUNK_SID}>"
    # Request-URI is the PBX contact, not a trunk domain: the Route names the trunk.
    bye = request("BYE", "sip:pbx@127.0.0.1:5070", to_tag="pbx-tag", routes=[route])
    d = judge(bye, ALLOWED)
    assert isinstance(d, Admit) and d.reason == "in_dialog" and d.pop_route
    d = judge(bye, DENIED)
    assert isinstance(d, Reject) and d.status == 403
    ack = request("ACK", "sip:pbx@127.0.0.1:5070", to_tag="pbx-tag", routes=[route])
    assert isinstance(judge(ack, ALLOWED), Admit)
    assert judge(ack, DENIED) == Drop("forbidden")


def test_in_dialog_request_for_deleted_trunk_is_forbidden():
    route = f"<sip:127.0.0.1:5060;lr;sgt=TK{'9' * 32}>"
    bye = request("BYE", "sip:pbx@127.0.0.1:5070", to_tag="x", routes=[route])
    assert judge(bye, ALLOWED).status == 403


def test_in_dialog_route_of_someone_else_is_not_trusted():
    # A Route naming another host cannot choose the trunk: the Request-URI does.
    route = f"<sip:198.51.100.1;lr;sgt={TRUNK_SID}>"
    bye = request("BYE", "sip:pbx@other.example", to_tag="x", routes=[route])
    assert judge(bye, ALLOWED).status == 404


def test_in_dialog_without_route_uses_request_uri_trunk():
    bye = request("BYE", to_tag="pbx-tag")
    assert isinstance(judge(bye, ALLOWED), Admit)
    assert judge(bye, DENIED).status == 403


def test_explain_names_list_and_entry():
    tbl = demo_table()
    ok = explain(tbl, DEMO_DOMAIN.upper(), ALLOWED)
    assert ok.admitted and ACL_SID in ok.text and ok.matches == ()
    # With the store's entries: the ones containing the address, longest prefix first.
    entries = {ACL_SID: [("IP1", "127.0.0.0", 8), ("IP2", ALLOWED, 32), ("IP3", "10.0.0.0", 8),
                         ("IP4", "::1", None), ("IP5", "127.0.0.0", 24)]}
    ok = explain(tbl, DEMO_DOMAIN, ALLOWED, entries=entries)
    assert ok.admitted and [m.ip_sid for m in ok.matches] == ["IP2", "IP5", "IP1"]
    assert f"IP2 {ALLOWED}/32" in ok.text and "127.0.0.0/24" in ok.text and "IP3" not in ok.text
    assert [m.ip_sid for m in explain(tbl, DEMO_DOMAIN, "::ffff:" + ALLOWED, entries=entries).matches][0] == "IP2"
    no = explain(tbl, DEMO_DOMAIN, DENIED)
    assert not no.admitted and "none of the 1 list" in no.text
    assert not explain(tbl, "nope.example", ALLOWED).admitted
    assert not explain(tbl, DEMO_DOMAIN, "not-an-ip").admitted


def test_shared_list_counted_once_in_union():
    tbl = table([
        (TRUNK_SID, DEMO_DOMAIN, [(ACL_SID, ["10.0.0.0/8", "10.1.0.0/16"])]),
        ("TK" + "2" * 32, "b.test", [(ACL_SID, ["10.0.0.0/8", "10.1.0.0/16"])]),
    ])
    assert tbl.entries == 2
    assert tbl.any_trunk.contains("10.1.2.3")


@settings(max_examples=200, deadline=None)
@given(st.ip_addresses(v=4), st.integers(0, 32), st.ip_addresses(v=4))
def test_decide_agrees_with_ipaddress_reference(net_addr, prefix, probe):
    import ipaddress

    network = ipaddress.ip_network(f"{net_addr}/{prefix}", strict=False)
    tbl = table([(TRUNK_SID, DEMO_DOMAIN, [(ACL_SID, [f"{net_addr}/{prefix}"])])])
    d = judge(request(), str(probe), tbl)
    assert isinstance(d, Admit) == (probe in network)
