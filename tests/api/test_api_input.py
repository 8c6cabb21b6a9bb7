"""Query and form values that once reached int() unchecked (found by the
schemathesis run): each is a Twilio 400, never a 500, on a running server."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from helpers import ACCOUNT_SID, Serving, basic
from openapi_check import OpenApiChecker
from sipgate.api.openapi import openapi_document

AUTH = {"Authorization": basic()}
ACLS = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
CHECKER = OpenApiChecker(openapi_document())


def call(server: Serving, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, dict]:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{server.api_port}{path}", data=data, method=method,
                                 headers=AUTH)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            status, body = response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        status, body = err.code, json.loads(err.read())
    CHECKER.check(method, path, status, body)
    return status, body


@pytest.mark.parametrize("query", [
    "Page=194304847812798596273004850816391053312&PageSize=781",  # offset beyond 64 bits
    "Page=" + "9" * 5000,  # more digits than int() takes
    "Page=%C2%B2",  # "²": str.isdigit() says yes, int() says no
    "PageSize=%C2%B9",
    "PageSize=" + "1" * 30,
    "PageToken=PA%C2%B2",
])
@pytest.mark.parametrize("path", ["/v1/Trunks", f"{ACLS}.json"])
def test_paging_values_int_cannot_take_are_400(server, path, query):
    status, body = call(server, "GET", f"{path}?{query}")
    assert (status, body["code"]) == (400, 20001), body


def test_the_last_representable_page_is_an_empty_page(server):
    status, body = call(server, "GET", f"/v1/Trunks?PageSize=1&Page={2**62}")
    assert status == 200 and body["trunks"] == [] and body["meta"]["next_page_url"] is None


@pytest.mark.parametrize("prefix", ["\u00b2", "\u0661\u0662", "9" * 5000, "-1", "129", "3a"])
def test_bad_prefix_lengths_are_21235(server, prefix):
    status, acl = call(server, "POST", f"{ACLS}.json", {"FriendlyName": "input"})
    assert status == 201
    status, body = call(server, "POST", f"{ACLS}/{acl['sid']}/IpAddresses.json",
                        {"FriendlyName": "x", "IpAddress": "192.0.2.0", "CidrPrefixLength": prefix})
    assert (status, body["code"]) == (400, 21235), body
    status, body = call(server, "POST", f"{ACLS}/{acl['sid']}/IpAddresses.json",
                        {"FriendlyName": "x", "IpAddress": "192.0.2.0", "CidrPrefixLength": "024"})
    assert status == 201 and body["cidr_prefix_length"] == 24
