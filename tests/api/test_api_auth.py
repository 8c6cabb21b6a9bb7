"""API credentials and request bodies: one 401 for every kind of bad
credential (no account enumeration), tokens compared in constant time, and
bodies bounded, on a running `sipgate serve`."""

from __future__ import annotations

import base64
import hmac
import http.client
import json

import pytest
from aiohttp.test_utils import make_mocked_request

from helpers import ACCOUNT_SID, AUTH_TOKEN, OTHER_ACCOUNT_SID, OTHER_AUTH_TOKEN, UNAUTHORIZED, Serving, basic
from sipgate.api import app as api_app
from sipgate.api.app import ACCOUNTS_KEY, API_MAX_BODY

TRUNKS = "/v1/Trunks"
ACLS = f"/2010-04-01/Accounts/{ACCOUNT_SID}/SIP/IpAccessControlLists.json"



def send(server: Serving, method: str, path: str, headers: dict[str, str] | None = None,
         body: bytes | None = None, chunks: list[bytes] | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection: (status, headers but Date, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=10)
    try:
        if chunks is not None:
            conn.putrequest(method, path)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            try:
                for chunk in chunks:
                    conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                conn.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer and close before reading it all
        else:
            conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k: v for k, v in response.getheaders() if k != "Date"}, response.read()
    finally:
        conn.close()


BAD_CREDENTIALS = {
    "unknown account": basic("AC" + "f" * 32, AUTH_TOKEN),
    "unknown account, no token": basic("AC" + "e" * 32, ""),
    "wrong token": basic(ACCOUNT_SID, "wrong"),
    "token one character short": basic(ACCOUNT_SID, AUTH_TOKEN[:-1]),
    "token with a suffix": basic(ACCOUNT_SID, AUTH_TOKEN + "0"),
    "another account's token": basic(ACCOUNT_SID, OTHER_AUTH_TOKEN),
    "empty token": basic(ACCOUNT_SID, ""),
    "account sid in lower case": basic(ACCOUNT_SID.lower(), AUTH_TOKEN),
    "not an account sid": basic("admin", AUTH_TOKEN),
    "no colon": "Basic " + base64.b64encode(ACCOUNT_SID.encode()).decode(),
    "not base64": "Basic %%%",
    "not UTF-8": "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
    "another scheme": f"Bearer {AUTH_TOKEN}",
}


@pytest.mark.parametrize("method, path", [("GET", TRUNKS), ("POST", TRUNKS), ("GET", ACLS),
                                          ("DELETE", "/v1/Trunks/TK" + "0" * 32), ("GET", "/nowhere"),
                                          ("PUT", TRUNKS)])
def test_one_identical_401_for_every_bad_credential(server, method, path):
    """Status, headers (but Date) and body are byte for byte the same for
    an unknown account, a wrong token, no header at all, and so on: nothing
    tells an existing account from an unknown one."""
    reference = send(server, method, path)  # no Authorization header
    status, headers, body = reference
    assert status == 401
    assert json.loads(body) == UNAUTHORIZED
    assert headers["WWW-Authenticate"] == 'Basic realm="Twilio API"'
    assert headers["Content-Type"].startswith("application/json")
    for name, credential in BAD_CREDENTIALS.items():
        assert send(server, method, path, {"Authorization": credential}) == reference, name
    # The other account's own credentials are good (the list is not empty of accounts).
    assert send(server, "GET", TRUNKS, {"Authorization": basic(OTHER_ACCOUNT_SID, OTHER_AUTH_TOKEN)})[0] == 200
    assert send(server, "GET", TRUNKS, {"Authorization": basic(ACCOUNT_SID, AUTH_TOKEN)})[0] == 200


def _authenticate(header: str) -> str | None:
    app = api_app.make_app(store=None, accounts={ACCOUNT_SID: AUTH_TOKEN, OTHER_ACCOUNT_SID: "x" * 100},
                           on_change=None)  # type: ignore[arg-type]
    request = make_mocked_request("GET", TRUNKS, headers={"Authorization": header}, app=app)
    assert request.app[ACCOUNTS_KEY][ACCOUNT_SID] == AUTH_TOKEN
    return api_app._authenticate(request)


def test_tokens_are_compared_in_constant_time(monkeypatch):
    """Structurally, not by timing: every well-formed Basic credential,
    whether its account exists or not and whatever its token's length,
    runs exactly one hmac.compare_digest, on two inputs of the same length
    (compare_digest is constant time only then), and nothing else compares
    the token."""
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(api_app.hmac, "compare_digest", spy)
    cases = {
        basic(ACCOUNT_SID, AUTH_TOKEN): ACCOUNT_SID,
        basic(OTHER_ACCOUNT_SID, "x" * 100): OTHER_ACCOUNT_SID,
        basic(ACCOUNT_SID, "wrong"): None,
        basic(ACCOUNT_SID, AUTH_TOKEN + "-and-much-longer" * 20): None,
        basic(ACCOUNT_SID, ""): None,
        basic(OTHER_ACCOUNT_SID, AUTH_TOKEN): None,
        basic("AC" + "f" * 32, AUTH_TOKEN): None,
        basic("AC" + "f" * 32, ""): None,
        basic("nobody", "x" * 100): None,
    }
    lengths = set()
    for header, expected in cases.items():
        calls.clear()
        assert _authenticate(header) == expected, header
        assert len(calls) == 1, header
        a, b = calls[0]
        assert isinstance(a, bytes) and isinstance(b, bytes) and len(a) == len(b), header
        lengths.add(len(a))
        # Neither side is the token itself (its length would leak).
        assert AUTH_TOKEN.encode() not in (a, b)
    assert len(lengths) == 1  # one fixed length whatever the token and account


def _form(size: int) -> bytes:
    prefix = b"FriendlyName="
    return prefix + b"a" * (size - len(prefix))


def test_body_over_the_limit_is_413(server):
    auth = {"Authorization": basic(ACCOUNT_SID, AUTH_TOKEN),
            "Content-Type": "application/x-www-form-urlencoded"}
    status, headers, body = send(server, "POST", TRUNKS, auth, body=_form(API_MAX_BODY + 1))
    assert status == 413
    assert json.loads(body) == {"code": 20413, "message": f"Request body too large (at most {API_MAX_BODY} bytes)",
                                "more_info": "https://www.twilio.com/docs/errors/20413", "status": 413}
    # Far over it, on another resource.
    assert send(server, "POST", ACLS, auth, body=_form(4 * API_MAX_BODY))[0] == 413
    # At the limit it is read, and judged on its content (a 64 KiB name is too long).
    status, _, body = send(server, "POST", ACLS, auth, body=_form(API_MAX_BODY))
    assert (status, json.loads(body)["code"]) == (400, 20002), body
    status, _, body = send(server, "POST", ACLS, auth, body=b"FriendlyName=ok&Padding=" + b"p" * (API_MAX_BODY - 24))
    assert status == 201, body


def test_chunked_body_without_content_length_is_bounded_too(server):
    auth = {"Authorization": basic(ACCOUNT_SID, AUTH_TOKEN),
            "Content-Type": "application/x-www-form-urlencoded"}
    big = _form(API_MAX_BODY + 4096)
    status, _, body = send(server, "POST", ACLS, auth, chunks=[big[i:i + 8192] for i in range(0, len(big), 8192)])
    assert status == 413, body
    assert json.loads(body)["code"] == 20413
    small = b"FriendlyName=chunked"
    status, _, body = send(server, "POST", ACLS, auth, chunks=[small[:5], small[5:]])
    assert status == 201 and json.loads(body)["friendly_name"] == "chunked"
    # The server is still serving.
    assert send(server, "GET", TRUNKS, {"Authorization": basic(ACCOUNT_SID, AUTH_TOKEN)})[0] == 200


def test_a_large_body_without_credentials_is_401_not_read(server):
    status, _, body = send(server, "POST", TRUNKS, {"Content-Type": "application/x-www-form-urlencoded"},
                           body=_form(4 * API_MAX_BODY))
    assert status == 401 and json.loads(body) == UNAUTHORIZED
