"""Twilio's wire format: JSON bodies of each resource, dates, paging envelopes, errors."""

from __future__ import annotations

import json
from datetime import datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from sipgate.store import IpAccessControlList, IpAddress, Trunk, TrunkAcl

__all__ = [
    "V2010",
    "acl_json",
    "error",
    "ip_json",
    "json_response",
    "trunk_acl_json",
    "trunk_json",
    "v1_page",
    "v2010_page",
]

V2010 = "/2010-04-01"
MORE_INFO = "https://www.twilio.com/docs/errors/{code}"


def iso8601(value: datetime) -> str:
    """trunking v1 dates: ``2026-11-28T19:00:00Z``."""
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc2822(value: datetime) -> str:
    """api v2010 dates: ``Sat, 28 Nov 2026 19:00:00 +0000``."""
    return format_datetime(value)


def json_response(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type="application/json")


def error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A Twilio error body: ``{code, message, more_info, status}``."""
    body = {"code": code, "message": message, "more_info": MORE_INFO.format(code=code), "status": status}
    return web.Response(status=status, text=json.dumps(body), content_type="application/json", headers=headers)


# -- trunking v1 ------------------------------------------------------------
def trunk_json(t: Trunk, origin: str) -> dict[str, Any]:
    url = f"{origin}/v1/Trunks/{t.sid}"
    return {
        "account_sid": t.account_sid,
        "domain_name": t.domain_name,
        "disaster_recovery_method": t.disaster_recovery_method,
        "disaster_recovery_url": t.disaster_recovery_url,
        "friendly_name": t.friendly_name,
        "secure": t.secure,
        "recording": {"mode": t.recording_mode, "trim": t.recording_trim},
        "transfer_mode": t.transfer_mode,
        "transfer_caller_id": t.transfer_caller_id,
        "cnam_lookup_enabled": t.cnam_lookup_enabled,
        "auth_type": t.auth_type,
        "symmetric_rtp_enabled": t.symmetric_rtp_enabled,
        "auth_type_set": [t.auth_type] if t.auth_type else [],
        "date_created": iso8601(t.date_created),
        "date_updated": iso8601(t.date_updated),
        "sid": t.sid,
        "url": url,
        "links": {
            "origination_urls": f"{url}/OriginationUrls",
            "credential_lists": f"{url}/CredentialLists",
            "ip_access_control_lists": f"{url}/IpAccessControlLists",
            "phone_numbers": f"{url}/PhoneNumbers",
            "recordings": f"{url}/Recording",
        },
    }


def trunk_acl_json(a: TrunkAcl, origin: str) -> dict[str, Any]:
    return {
        "account_sid": a.account_sid,
        "sid": a.acl_sid,
        "trunk_sid": a.trunk_sid,
        "friendly_name": a.friendly_name,
        "date_created": iso8601(a.date_created),
        "date_updated": iso8601(a.date_updated),
        "url": f"{origin}/v1/Trunks/{a.trunk_sid}/IpAccessControlLists/{a.acl_sid}",
    }


def _query(page: int, size: int, extra: dict[str, str] | None = None) -> str:
    params = {"PageSize": str(size), "Page": str(page), **(extra or {})}
    return urlencode(params)


def v1_page(key: str, items: list[dict[str, Any]], *, origin: str, path: str, page: int, size: int,
            total: int) -> dict[str, Any]:
    """The v1 envelope: ``{key: [...], meta: {...}}`` with absolute URLs."""
    base = f"{origin}{path}"
    has_next = (page + 1) * size < total
    return {
        key: items,
        "meta": {
            "page": page,
            "page_size": size,
            "first_page_url": f"{base}?{_query(0, size)}",
            "previous_page_url": f"{base}?{_query(page - 1, size, {'PageToken': f'PB{(page - 1) * size}'})}"
            if page > 0 else None,
            "url": f"{base}?{_query(page, size)}",
            "next_page_url": f"{base}?{_query(page + 1, size, {'PageToken': f'PA{(page + 1) * size}'})}"
            if has_next else None,
            "key": key,
        },
    }


# -- api v2010 --------------------------------------------------------------
def acl_uri(account_sid: str, acl_sid: str) -> str:
    return f"{V2010}/Accounts/{account_sid}/SIP/IpAccessControlLists/{acl_sid}"


def acl_json(a: IpAccessControlList) -> dict[str, Any]:
    base = acl_uri(a.account_sid, a.sid)
    return {
        "sid": a.sid,
        "account_sid": a.account_sid,
        "friendly_name": a.friendly_name,
        "date_created": rfc2822(a.date_created),
        "date_updated": rfc2822(a.date_updated),
        "subresource_uris": {"ip_addresses": f"{base}/IpAddresses.json"},
        "uri": f"{base}.json",
    }


def ip_json(ip: IpAddress) -> dict[str, Any]:
    return {
        "sid": ip.sid,
        "account_sid": ip.account_sid,
        "friendly_name": ip.friendly_name,
        "ip_address": ip.ip_address,
        "cidr_prefix_length": ip.cidr_prefix_length,
        "ip_access_control_list_sid": ip.ip_access_control_list_sid,
        "date_created": rfc2822(ip.date_created),
        "date_updated": rfc2822(ip.date_updated),
        "uri": f"{acl_uri(ip.account_sid, ip.ip_access_control_list_sid)}/IpAddresses/{ip.sid}.json",
    }


def v2010_page(key: str, items: list[dict[str, Any]], *, path: str, page: int, size: int,
               total: int) -> dict[str, Any]:
    """The flat v2010 envelope (no other top-level keys: twilio-python checks)."""
    start = page * size
    has_next = start + size < total
    return {
        key: items,
        "end": start + max(len(items) - 1, 0),
        "first_page_uri": f"{path}?{_query(0, size)}",
        "next_page_uri": f"{path}?{_query(page + 1, size, {'PageToken': f'PA{start + size}'})}" if has_next else None,
        "page": page,
        "page_size": size,
        "previous_page_uri": f"{path}?{_query(page - 1, size, {'PageToken': f'PB{start - size}'})}"
        if page > 0 else None,
        "start": start,
        "uri": f"{path}?{_query(page, size)}",
    }
