"""Property-based testing of the REST API with schemathesis, from sipgate's
own /openapi.json, against a running `sipgate serve`.

For every operation in the document: generated requests (valid ones, and
ones that break the document's parameter schemas) with valid credentials
must never get a 5xx, and every response must be one the document declares
(status code, content type, body schema); with invalid credentials every
operation must answer the one Twilio 401.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import Failure, FailureGroup

from helpers import ACCOUNT_SID, AUTH_TOKEN, OTHER_ACCOUNT_SID, UNAUTHORIZED, Serving, basic
from sipgate.api.openapi import openapi_document

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
OPERATIONS = [(path, method.upper()) for path, item in openapi_document()["paths"].items()
              for method in item if method in ("get", "post", "delete")]
# Examples per operation (the file runs in about half a minute);
# SIPGATE_FUZZ_SCALE=10 runs ten times as many.
_SCALE = max(1, int(os.environ.get("SIPGATE_FUZZ_SCALE", "1")))
POSITIVE, NEGATIVE, BAD_AUTH = 40 * _SCALE, 25 * _SCALE, 10 * _SCALE



@pytest.fixture(scope="module")
def schema(server: Serving) -> Any:
    return schemathesis.openapi.from_url(f"http://127.0.0.1:{server.api_port}/openapi.json")


@pytest.fixture
def real_sids(server: Serving) -> dict[str, str]:
    """A fresh trunk, list, address and association for each test, so the
    generated requests also reach existing resources, not only 404s (a
    DELETE example removes them for the rest of that test only)."""
    base = f"http://127.0.0.1:{server.api_port}"
    auth = {"Authorization": basic(ACCOUNT_SID, AUTH_TOKEN)}

    def post(path: str, form: dict[str, str]) -> str:
        response = requests.post(base + path, data=form, headers=auth, timeout=10)
        assert response.status_code == 201, response.text
        return response.json()["sid"]

    acls = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists"
    trunk = post("/v1/Trunks", {"FriendlyName": "fuzzed"})
    acl = post(f"{acls}.json", {"FriendlyName": "fuzzed"})
    ip = post(f"{acls}/{acl}/IpAddresses.json", {"FriendlyName": "fuzzed", "IpAddress": "192.0.2.1"})
    post(f"/v1/Trunks/{trunk}/IpAccessControlLists", {"IpAccessControlListSid": acl})
    spare = post(f"{acls}.json", {"FriendlyName": "not associated yet"})
    return {"AccountSid": ACCOUNT_SID, "_trunk": trunk, "_acl": acl, "_ip": ip, "_spare_acl": spare}


# Body values that make a create succeed (at least the first time), used
# with the real SIDs: generated ones are almost never a list SID or an address.
REAL_BODY = {
    "/v1/Trunks/{TrunkSid}/IpAccessControlLists": lambda sids: {"IpAccessControlListSid": sids["_spare_acl"]},
    "/2010-04-01/Accounts/{AccountSid}/SIP/IpAccessControlLists/{IpAccessControlListSid}/IpAddresses.json":
        lambda sids: {"IpAddress": "198.51.100.7", "FriendlyName": "fuzzed"},
}


def _real_path_parameters(path: str, sids: dict[str, str]) -> dict[str, str]:
    params = {"AccountSid": sids["AccountSid"], "TrunkSid": sids["_trunk"],
              "IpAccessControlListSid": sids["_acl"]}
    if path == "/v1/Trunks/{Sid}":
        params["Sid"] = sids["_trunk"]
    elif path.endswith("/IpAddresses/{Sid}.json"):
        params["Sid"] = sids["_ip"]
    else:
        params["Sid"] = sids["_acl"]
    return params


def _send(case: Any, base_url: str, authorization: str | None) -> requests.Response:
    """The generated request with exactly this Authorization header (or
    none): negative generation may drop or break the security scheme's
    header, and these tests choose the credentials themselves."""
    kwargs = case.as_transport_kwargs(base_url=base_url)
    headers = {k: v for k, v in kwargs["headers"].items() if k.lower() != "authorization"}
    if authorization is not None:
        headers["Authorization"] = authorization
    kwargs["headers"] = headers
    kwargs.pop("auth", None)
    with requests.Session() as session:
        response = session.request(**kwargs, timeout=10, allow_redirects=False)
    assert response.request.headers.get("Authorization") == authorization
    return response


def _run(operation: Any, mode: GenerationMode, examples: int, each: Any) -> None:
    strategy = operation.as_strategy(generation_mode=mode)

    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy, real=st.booleans())
    def run(case: Any, real: bool) -> None:
        each(case, real)

    run()


@pytest.mark.parametrize("path, method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_valid_credentials_no_server_error_and_conforming_responses(server, schema, real_sids, path, method):
    operation = schema[path][method]
    base_url = f"http://127.0.0.1:{server.api_port}"
    seen: set[int] = set()

    def each(case: Any, real: bool) -> None:
        if real and case.path_parameters is not None:
            case.path_parameters = {**case.path_parameters, **_real_path_parameters(path, real_sids)}
            if method == "POST" and path in REAL_BODY and isinstance(case.body, dict):
                case.body = {**case.body, **REAL_BODY[path](real_sids)}
        response = _send(case, base_url, basic(ACCOUNT_SID, AUTH_TOKEN))
        case.validate_response(response, checks=CHECKS)
        seen.add(response.status_code)

    _run(operation, GenerationMode.POSITIVE, POSITIVE, each)
    _run(operation, GenerationMode.NEGATIVE, NEGATIVE, each)
    # Authenticated requests got past the 401: the run exercised the handlers.
    assert seen and 401 not in seen, seen
    # Some request succeeded: the run reached the resource, not only errors.
    assert seen & {200, 201, 204}, seen


CREDENTIALS = {
    "unknown account": basic("AC" + "f" * 32, AUTH_TOKEN),
    "wrong token": basic(ACCOUNT_SID, AUTH_TOKEN + "x"),
    "another account's token": basic(ACCOUNT_SID, "test-token-2"),
    "token of the other account, empty": basic(OTHER_ACCOUNT_SID, ""),
    "no colon": "Basic " + base64.b64encode(ACCOUNT_SID.encode()).decode(),
    "not base64": "Basic !!!",
    "bearer": f"Bearer {AUTH_TOKEN}",
    "none": None,
}


@pytest.mark.parametrize("path, method", OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_invalid_credentials_always_the_twilio_401(server, schema, real_sids, path, method):
    operation = schema[path][method]
    base_url = f"http://127.0.0.1:{server.api_port}"

    def each(case: Any, real: bool) -> None:
        if real and case.path_parameters is not None:
            case.path_parameters = {**case.path_parameters, **_real_path_parameters(path, real_sids)}
        for name, header in CREDENTIALS.items():
            response = _send(case, base_url, header)
            case.validate_response(response, checks=CHECKS)
            assert response.status_code == 401, (name, response.status_code, response.text)
            assert json.loads(response.content) == UNAUTHORIZED, name
            assert response.headers["WWW-Authenticate"] == 'Basic realm="Twilio API"', name
            assert response.headers["Content-Type"].startswith("application/json"), name

    _run(operation, GenerationMode.POSITIVE, BAD_AUTH, each)


def test_the_checks_catch_a_server_error_and_schema_violations(server, schema):
    """The checks above can fail: the same validation rejects a 5xx, an
    undocumented status, a wrong content type and a body off the schema."""
    operation = schema["/v1/Trunks"]["GET"]
    case = operation.Case(query={"PageSize": 5})
    response = _send(case, f"http://127.0.0.1:{server.api_port}", basic(ACCOUNT_SID, AUTH_TOKEN))
    case.validate_response(response, checks=CHECKS)  # the genuine answer conforms
    for status, content_type, body in ((500, "application/json", response.content),
                                       (418, "application/json", response.content),
                                       (200, "text/html", response.content),
                                       (200, "application/json", b'{"trunks": 1, "meta": {}}')):
        broken = requests.Response()
        broken.status_code, broken._content, broken.request, broken.url = (
            status, body, response.request, response.url)
        broken.headers = requests.structures.CaseInsensitiveDict({"Content-Type": content_type})
        broken.elapsed = response.elapsed
        with pytest.raises((Failure, FailureGroup)):
            case.validate_response(broken, checks=CHECKS)
