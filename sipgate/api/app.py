"""The Twilio-compatible REST control plane (aiohttp, in the edge's event loop).

Resources: trunking v1 Trunks and a trunk's IpAccessControlLists; api v2010
SIP IpAccessControlLists and their IpAddresses.  Every write returns only
after the store committed it (durable) and the edge swapped in a table
compiled from it (enforced).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any

from aiohttp import web

from sipgate.api import wire
from sipgate.api.openapi import openapi_document
from sipgate.store import (
    Conflict,
    InvalidParameter,
    LimitExceeded,
    NotFound,
    Unavailable,
)

__all__ = ["ACCOUNTS_KEY", "API_MAX_BODY", "make_app"]

log = logging.getLogger("sipgate.api")

API_MAX_BODY = 64 * 1024  # form bodies of these resources are a few hundred bytes
STORE_KEY = web.AppKey("store", object)
ACCOUNTS_KEY: web.AppKey[dict[str, str]] = web.AppKey("accounts", dict)
ON_CHANGE_KEY = web.AppKey("on_change", object)
ACCOUNT = "sipgate.account"
PUBLIC_PATHS = frozenset({"/openapi.json"})

# v1 trunk form fields -> store field names.
TRUNK_FORM = {
    "FriendlyName": "friendly_name",
    "DomainName": "domain_name",
    "DisasterRecoveryUrl": "disaster_recovery_url",
    "DisasterRecoveryMethod": "disaster_recovery_method",
    "TransferMode": "transfer_mode",
    "Secure": "secure",
    "CnamLookupEnabled": "cnam_lookup_enabled",
    "TransferCallerId": "transfer_caller_id",
}
BOOL_FORM = {"Secure", "CnamLookupEnabled"}
_TRUE = {"true", "True", "TRUE", "1"}
_FALSE = {"false", "False", "FALSE", "0"}


MAX_OFFSET = 2**62  # Page * PageSize above it is out of range (SQLite integers are 64-bit)


def _decimal(text: str, max_digits: int = 20) -> bool:
    """ASCII digits only (str.isdigit() also accepts "²" and other digits
    int() refuses), and not so many that int() refuses them (over 4,300)."""
    return text.isascii() and text.isdigit() and len(text) <= max_digits


class ApiError(Exception):
    """An error answered as a Twilio error body."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _unauthorized() -> web.Response:
    # One answer for an unknown account and a wrong token: no enumeration.
    return wire.error(401, 20003, "Authentication Error - invalid username",
                      headers={"WWW-Authenticate": 'Basic realm="Twilio API"'})


def _authenticate(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, token = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    accounts = request.app[ACCOUNTS_KEY]
    expected = accounts.get(user)
    # One comparison whatever the account: an unknown account's token is
    # checked against a random one, so both cases run the same code.  The
    # digests are compared, not the tokens: compare_digest is constant time
    # only for inputs of equal length, and a token's length is a secret too.
    secret = _UNKNOWN_ACCOUNT_TOKEN if expected is None else expected.encode()
    ok = hmac.compare_digest(_digest(token.encode()), _digest(secret))
    return user if ok and expected is not None else None


# Fresh per process: no token can match it.
_UNKNOWN_ACCOUNT_TOKEN = secrets.token_bytes(32)


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    try:
        if request.path not in PUBLIC_PATHS:
            account = _authenticate(request)
            if account is None:
                return _unauthorized()
            request[ACCOUNT] = account
        return await handler(request)
    except ApiError as exc:
        return wire.error(exc.status, exc.code, exc.message)
    except NotFound:
        return wire.error(404, 20404, f"The requested resource {request.path} was not found")
    except (InvalidParameter, Conflict, LimitExceeded) as exc:
        return wire.error(400, exc.code, exc.message)
    except Unavailable as exc:
        log.warning("store unavailable: %s", exc)
        return wire.error(503, 20503, "Service unavailable: the store cannot be reached, retry later")
    except web.HTTPRequestEntityTooLarge:
        return wire.error(413, 20413, f"Request body too large (at most {API_MAX_BODY} bytes)")
    except web.HTTPMethodNotAllowed as exc:
        return wire.error(405, 20004, f"Method {request.method} not allowed on {request.path}",
                          headers={"Allow": ", ".join(sorted(exc.allowed_methods))})
    except web.HTTPNotFound:
        return wire.error(404, 20404, f"The requested resource {request.path} was not found")


def _metrics_middleware(stats: Any) -> Any:
    """Count every request by method, route template and status code, and
    time it (sipgate_api_requests_total, sipgate_api_request_duration_seconds)."""
    clock = time.perf_counter

    @web.middleware
    async def metrics(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        started = clock()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            # The template, not the path: one series per route, not per SID.
            route = resource.canonical if resource is not None else "unmatched"
            stats.api_request(request.method, route, code, clock() - started)

    return metrics


class Api:
    """Handlers; the store is blocking, so every call runs in a worker thread."""

    def __init__(self, store: Any, on_change: Callable[[], Awaitable[Any]]) -> None:
        self.store = store
        self.on_change = on_change

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(None, partial(fn, *args, **kwargs))

    async def write(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Commit, then wait until the edge enforces the new state."""
        result = await self.call(fn, *args, **kwargs)
        await self.on_change()
        return result

    # -- helpers -------------------------------------------------------------
    @staticmethod
    def paging(request: web.Request) -> tuple[int, int]:
        q = request.query
        size_text = q.get("PageSize", "50")
        if not _decimal(size_text) or not 1 <= int(size_text) <= 1000:
            raise ApiError(400, 20001, "PageSize must be an integer from 1 to 1000")
        size = int(size_text)
        page_text = q.get("Page", "0")
        if not _decimal(page_text, 4300):
            raise ApiError(400, 20001, "Page must be a non-negative integer")
        page = int(page_text)
        if page * size > MAX_OFFSET:
            # The store's offsets are 64-bit integers.
            raise ApiError(400, 20001, f"Page {page} is out of range")
        token = q.get("PageToken", "")
        if token and (not token[:2] in ("PA", "PB") or not _decimal(token[2:], 4300)):
            raise ApiError(400, 20001, f"PageToken {token!r} is not valid")
        return page, size

    @staticmethod
    async def form(request: web.Request) -> Mapping[str, str]:
        data = await request.post()
        return {k: v for k, v in data.items() if isinstance(v, str)}

    @staticmethod
    def origin(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def v2010_account(self, request: web.Request) -> str:
        account = request.match_info["account"]
        if account != request[ACCOUNT]:
            # Another account's resources do not exist for this caller.
            raise ApiError(404, 20404, f"The requested resource {request.path} was not found")
        return account

    # -- trunking v1: Trunks ---------------------------------------------------
    @staticmethod
    def trunk_fields(form: Mapping[str, str]) -> dict[str, Any]:
        fields: dict[str, Any] = {}
        for param, name in TRUNK_FORM.items():
            if param not in form:
                continue
            value: Any = form[param]
            if param in BOOL_FORM:
                if value in _TRUE:
                    value = True
                elif value in _FALSE:
                    value = False
                else:
                    raise ApiError(400, 20001, f"{param} must be true or false")
            fields[name] = value
        return fields

    async def list_trunks(self, request: web.Request) -> web.Response:
        account = request[ACCOUNT]
        page, size = self.paging(request)
        total = await self.call(self.store.count_trunks, account)
        trunks = await self.call(self.store.list_trunks, account, limit=size, offset=page * size)
        origin = self.origin(request)
        return wire.json_response(wire.v1_page("trunks", [wire.trunk_json(t, origin) for t in trunks],
                                               origin=origin, path=request.path, page=page, size=size, total=total))

    async def create_trunk(self, request: web.Request) -> web.Response:
        fields = self.trunk_fields(await self.form(request))
        trunk = await self.write(self.store.create_trunk, request[ACCOUNT], **fields)
        return wire.json_response(wire.trunk_json(trunk, self.origin(request)), 201)

    async def fetch_trunk(self, request: web.Request) -> web.Response:
        trunk = await self.call(self.store.get_trunk, request[ACCOUNT], request.match_info["sid"])
        return wire.json_response(wire.trunk_json(trunk, self.origin(request)))

    async def update_trunk(self, request: web.Request) -> web.Response:
        fields = self.trunk_fields(await self.form(request))
        trunk = await self.write(self.store.update_trunk, request[ACCOUNT], request.match_info["sid"], **fields)
        return wire.json_response(wire.trunk_json(trunk, self.origin(request)))

    async def delete_trunk(self, request: web.Request) -> web.Response:
        await self.write(self.store.delete_trunk, request[ACCOUNT], request.match_info["sid"])
        return web.Response(status=204)

    # -- trunking v1: a trunk's IpAccessControlLists ------------------------
    async def list_trunk_acls(self, request: web.Request) -> web.Response:
        account, trunk = request[ACCOUNT], request.match_info["trunk"]
        page, size = self.paging(request)
        total = await self.call(self.store.count_trunk_acls, account, trunk)
        items = await self.call(self.store.list_trunk_acls, account, trunk, limit=size, offset=page * size)
        origin = self.origin(request)
        return wire.json_response(wire.v1_page(
            "ip_access_control_lists", [wire.trunk_acl_json(a, origin) for a in items],
            origin=origin, path=request.path, page=page, size=size, total=total))

    async def create_trunk_acl(self, request: web.Request) -> web.Response:
        form = await self.form(request)
        acl_sid = form.get("IpAccessControlListSid", "")
        if not acl_sid:
            raise ApiError(400, 20001, "Missing required parameter IpAccessControlListSid in the post body")
        assoc = await self.write(self.store.associate, request[ACCOUNT], request.match_info["trunk"], acl_sid)
        return wire.json_response(wire.trunk_acl_json(assoc, self.origin(request)), 201)

    async def fetch_trunk_acl(self, request: web.Request) -> web.Response:
        assoc = await self.call(self.store.get_trunk_acl, request[ACCOUNT], request.match_info["trunk"],
                                request.match_info["sid"])
        return wire.json_response(wire.trunk_acl_json(assoc, self.origin(request)))

    async def delete_trunk_acl(self, request: web.Request) -> web.Response:
        await self.write(self.store.dissociate, request[ACCOUNT], request.match_info["trunk"],
                         request.match_info["sid"])
        return web.Response(status=204)

    # -- api v2010: SIP IpAccessControlLists --------------------------------
    async def list_acls(self, request: web.Request) -> web.Response:
        account = self.v2010_account(request)
        page, size = self.paging(request)
        total = await self.call(self.store.count_acls, account)
        items = await self.call(self.store.list_acls, account, limit=size, offset=page * size)
        return wire.json_response(wire.v2010_page("ip_access_control_lists", [wire.acl_json(a) for a in items],
                                                  path=request.path, page=page, size=size, total=total))

    @staticmethod
    def required(form: Mapping[str, str], param: str) -> str:
        value = form.get(param)
        if value is None or value == "":
            raise ApiError(400, 20001, f"Missing required parameter {param} in the post body")
        return value

    async def create_acl(self, request: web.Request) -> web.Response:
        account = self.v2010_account(request)
        name = self.required(await self.form(request), "FriendlyName")
        acl = await self.write(self.store.create_acl, account, name)
        return wire.json_response(wire.acl_json(acl), 201)

    async def fetch_acl(self, request: web.Request) -> web.Response:
        acl = await self.call(self.store.get_acl, self.v2010_account(request), request.match_info["sid"])
        return wire.json_response(wire.acl_json(acl))

    async def update_acl(self, request: web.Request) -> web.Response:
        account = self.v2010_account(request)
        name = self.required(await self.form(request), "FriendlyName")
        acl = await self.write(self.store.update_acl, account, request.match_info["sid"], name)
        return wire.json_response(wire.acl_json(acl))

    async def delete_acl(self, request: web.Request) -> web.Response:
        await self.write(self.store.delete_acl, self.v2010_account(request), request.match_info["sid"])
        return web.Response(status=204)

    # -- api v2010: IpAddresses ---------------------------------------------
    @staticmethod
    def prefix(form: Mapping[str, str]) -> int | None:
        text = form.get("CidrPrefixLength")
        if text is None or text == "":
            return None
        if not _decimal(text.strip()):
            raise ApiError(400, 21235, f"CidrPrefixLength {text!r} is not a valid prefix length")
        return int(text)

    async def list_ips(self, request: web.Request) -> web.Response:
        account, acl = self.v2010_account(request), request.match_info["acl"]
        page, size = self.paging(request)
        total = await self.call(self.store.count_ip_addresses, account, acl)
        items = await self.call(self.store.list_ip_addresses, account, acl, limit=size, offset=page * size)
        return wire.json_response(wire.v2010_page("ip_addresses", [wire.ip_json(i) for i in items],
                                                  path=request.path, page=page, size=size, total=total))

    async def create_ip(self, request: web.Request) -> web.Response:
        account = self.v2010_account(request)
        form = await self.form(request)
        name = self.required(form, "FriendlyName")
        address = self.required(form, "IpAddress")
        ip = await self.write(self.store.create_ip_address, account, request.match_info["acl"],
                              friendly_name=name, ip_address=address, cidr_prefix_length=self.prefix(form))
        return wire.json_response(wire.ip_json(ip), 201)

    async def fetch_ip(self, request: web.Request) -> web.Response:
        ip = await self.call(self.store.get_ip_address, self.v2010_account(request), request.match_info["acl"],
                             request.match_info["sid"])
        return wire.json_response(wire.ip_json(ip))

    async def update_ip(self, request: web.Request) -> web.Response:
        account = self.v2010_account(request)
        form = await self.form(request)
        ip = await self.write(self.store.update_ip_address, account, request.match_info["acl"],
                              request.match_info["sid"], friendly_name=form.get("FriendlyName") or None,
                              ip_address=form.get("IpAddress") or None, cidr_prefix_length=self.prefix(form))
        return wire.json_response(wire.ip_json(ip))

    async def delete_ip(self, request: web.Request) -> web.Response:
        await self.write(self.store.delete_ip_address, self.v2010_account(request), request.match_info["acl"],
                         request.match_info["sid"])
        return web.Response(status=204)


def make_app(store: Any, accounts: Mapping[str, str], on_change: Callable[[], Awaitable[Any]],
             stats: Any = None) -> web.Application:
    """The API application; ``accounts`` maps AccountSid to AuthToken (the
    app keeps it as ``app[ACCOUNTS_KEY]``: update that dict in place to change
    credentials at run time).  ``stats``: an EdgeStats to count requests in."""
    middlewares = [_errors] if stats is None else [_metrics_middleware(stats), _errors]
    app = web.Application(middlewares=middlewares, client_max_size=API_MAX_BODY)
    app[ACCOUNTS_KEY] = dict(accounts)
    api = Api(store, on_change)
    acls = wire.V2010 + "/Accounts/{account}/SIP/IpAccessControlLists"
    r = app.router
    document = openapi_document()

    async def openapi(_request: web.Request) -> web.Response:
        return wire.json_response(document)

    r.add_get("/openapi.json", openapi)
    r.add_get("/v1/Trunks", api.list_trunks)
    r.add_post("/v1/Trunks", api.create_trunk)
    r.add_get("/v1/Trunks/{sid}", api.fetch_trunk)
    r.add_post("/v1/Trunks/{sid}", api.update_trunk)
    r.add_delete("/v1/Trunks/{sid}", api.delete_trunk)
    r.add_get("/v1/Trunks/{trunk}/IpAccessControlLists", api.list_trunk_acls)
    r.add_post("/v1/Trunks/{trunk}/IpAccessControlLists", api.create_trunk_acl)
    r.add_get("/v1/Trunks/{trunk}/IpAccessControlLists/{sid}", api.fetch_trunk_acl)
    r.add_delete("/v1/Trunks/{trunk}/IpAccessControlLists/{sid}", api.delete_trunk_acl)
    r.add_get(acls + ".json", api.list_acls)
    r.add_post(acls + ".json", api.create_acl)
    r.add_get(acls + "/{sid}.json", api.fetch_acl)
    r.add_post(acls + "/{sid}.json", api.update_acl)
    r.add_delete(acls + "/{sid}.json", api.delete_acl)
    r.add_get(acls + "/{acl}/IpAddresses.json", api.list_ips)
    r.add_post(acls + "/{acl}/IpAddresses.json", api.create_ip)
    r.add_get(acls + "/{acl}/IpAddresses/{sid}.json", api.fetch_ip)
    r.add_post(acls + "/{acl}/IpAddresses/{sid}.json", api.update_ip)
    r.add_delete(acls + "/{acl}/IpAddresses/{sid}.json", api.delete_ip)
    return app
