"""sipgate's own OpenAPI 3.0 document of its API, served at ``/openapi.json``.

Written from the facts of Twilio's published specs for the four resources
(paths, form parameters, JSON fields, types, nullability, status codes),
plus what sipgate adds: IPv6 addresses, error bodies on every failure.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]


def _s(kind: str, nullable: bool = True, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "nullable": nullable, **extra}


_DATE_V1 = _s("string", format="date-time")
_DATE_V2010 = _s("string", format="date-time-rfc-2822")
_SID = {p: _s("string", pattern=f"^{p}[0-9a-fA-F]{{32}}$", minLength=34, maxLength=34)
        for p in ("AC", "TK", "AL", "IP")}

TRUNK: dict[str, Any] = {
    "type": "object",
    "properties": {
        "account_sid": _SID["AC"],
        "domain_name": _s("string"),
        "disaster_recovery_method": _s("string", enum=["GET", "POST", None]),
        "disaster_recovery_url": _s("string", format="uri"),
        "friendly_name": _s("string"),
        "secure": _s("boolean"),
        "recording": {"type": "object", "nullable": True, "properties": {
            "mode": _s("string", False), "trim": _s("string", False)}},
        "transfer_mode": _s("string", False, enum=["disable-all", "enable-all", "sip-only"]),
        "transfer_caller_id": _s("string", False, enum=["from-transferee", "from-transferor"]),
        "cnam_lookup_enabled": _s("boolean"),
        "auth_type": _s("string"),
        "symmetric_rtp_enabled": _s("boolean"),
        "auth_type_set": {"type": "array", "nullable": True, "items": {"type": "string"}},
        "date_created": _DATE_V1,
        "date_updated": _DATE_V1,
        "sid": _SID["TK"],
        "url": _s("string", format="uri"),
        "links": {"type": "object", "nullable": True, "additionalProperties": {"type": "string"}},
    },
}
TRUNK_ACL: dict[str, Any] = {
    "type": "object",
    "properties": {
        "account_sid": _SID["AC"], "sid": _SID["AL"], "trunk_sid": _SID["TK"],
        "friendly_name": _s("string"), "date_created": _DATE_V1, "date_updated": _DATE_V1,
        "url": _s("string", format="uri"),
    },
}
ACL: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sid": _SID["AL"], "account_sid": _SID["AC"], "friendly_name": _s("string"),
        "date_created": _DATE_V2010, "date_updated": _DATE_V2010,
        "subresource_uris": {"type": "object", "nullable": True, "additionalProperties": {"type": "string"}},
        "uri": _s("string"),
    },
}
IP_ADDRESS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "sid": _SID["IP"], "account_sid": _SID["AC"], "friendly_name": _s("string"),
        # IPv4 or IPv6 (Twilio: IPv4 only).
        "ip_address": _s("string"),
        "cidr_prefix_length": _s("integer", False, minimum=0, maximum=128),
        "ip_access_control_list_sid": _SID["AL"],
        "date_created": _DATE_V2010, "date_updated": _DATE_V2010, "uri": _s("string"),
    },
}
ERROR = {
    "type": "object",
    "required": ["code", "message", "more_info", "status"],
    "additionalProperties": False,
    "properties": {"code": {"type": "integer"}, "message": {"type": "string"},
                   "more_info": {"type": "string"}, "status": {"type": "integer"}},
}


# sipgate always sends every field of a resource, and nothing else.
for _schema in (TRUNK, TRUNK_ACL, ACL, IP_ADDRESS):
    _schema["required"] = list(_schema["properties"])
    _schema["additionalProperties"] = False


def _v1_list(key: str, item: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": [key, "meta"], "properties": {
        key: {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
        "meta": {"type": "object", "properties": {
            "first_page_url": _s("string", False, format="uri"), "key": _s("string", False),
            "next_page_url": _s("string", format="uri"), "page": _s("integer", False),
            "page_size": _s("integer", False), "previous_page_url": _s("string", format="uri"),
            "url": _s("string", False, format="uri")}},
    }}


def _v2010_list(key: str, item: str) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": [key, "page", "page_size", "uri"],
            "properties": {
                key: {"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
                "end": {"type": "integer"}, "first_page_uri": _s("string", False),
                "next_page_uri": _s("string"), "page": {"type": "integer"}, "page_size": {"type": "integer"},
                "previous_page_uri": _s("string"), "start": {"type": "integer"}, "uri": _s("string", False)}}


def _form(props: dict[str, dict[str, Any]], required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    if required:
        schema["required"] = required
    return {"content": {"application/x-www-form-urlencoded": {"schema": schema}}}


def _ok(status: str, schema: str | None) -> dict[str, Any]:
    responses: dict[str, Any] = {
        code: {"description": text, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/error"}}}}
        for code, text in (("400", "Invalid or missing parameter"), ("401", "Missing or wrong credentials"),
                           ("404", "No such resource in this account"), ("405", "Method not allowed"),
                           ("413", "Body too large"), ("503", "Store unavailable"))
    }
    if schema is None:
        responses[status] = {"description": "Deleted"}
    else:
        responses[status] = {"description": "OK", "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{schema}"}}}}
    return {"responses": responses}


_PAGING = [{"name": n, "in": "query", "schema": s} for n, s in (
    ("PageSize", {"type": "integer", "minimum": 1, "maximum": 1000}), ("Page", {"type": "integer", "minimum": 0}),
    ("PageToken", {"type": "string"}))]
_TRUNK_FORM: dict[str, dict[str, Any]] = {
    "FriendlyName": {"type": "string"}, "DomainName": {"type": "string"},
    "DisasterRecoveryUrl": {"type": "string", "format": "uri"},
    "DisasterRecoveryMethod": {"type": "string", "enum": ["GET", "POST"]},
    "TransferMode": {"type": "string", "enum": ["disable-all", "enable-all", "sip-only"]},
    "Secure": {"type": "boolean"}, "CnamLookupEnabled": {"type": "boolean"},
    "TransferCallerId": {"type": "string", "enum": ["from-transferee", "from-transferor"]},
}
_IP_FORM: dict[str, dict[str, Any]] = {"FriendlyName": {"type": "string"}, "IpAddress": {"type": "string"},
            "CidrPrefixLength": {"type": "integer"}}


def _path_params(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.0 document of the four resources."""
    acls = "/2010-04-01/Accounts/{AccountSid}/SIP/IpAccessControlLists"
    return {
        "openapi": "3.0.1",
        "info": {"title": "sipgate API (Twilio-compatible)", "version": "1.0.0"},
        "components": {
            "securitySchemes": {"accountSid_authToken": {"type": "http", "scheme": "basic"}},
            "schemas": {
                "trunking.v1.trunk": TRUNK,
                "trunking.v1.trunk.ip_access_control_list": TRUNK_ACL,
                "api.v2010.account.sip.sip_ip_access_control_list": ACL,
                "api.v2010.account.sip.sip_ip_access_control_list.sip_ip_address": IP_ADDRESS,
                "error": ERROR,
                "ListTrunkResponse": _v1_list("trunks", "trunking.v1.trunk"),
                "ListIpAccessControlListResponse": _v1_list(
                    "ip_access_control_lists", "trunking.v1.trunk.ip_access_control_list"),
                "ListSipIpAccessControlListResponse": _v2010_list(
                    "ip_access_control_lists", "api.v2010.account.sip.sip_ip_access_control_list"),
                "ListSipIpAddressResponse": _v2010_list(
                    "ip_addresses", "api.v2010.account.sip.sip_ip_access_control_list.sip_ip_address"),
            },
        },
        "security": [{"accountSid_authToken": []}],
        "paths": {
            "/v1/Trunks": {
                "get": {"parameters": _PAGING, **_ok("200", "ListTrunkResponse")},
                "post": {"requestBody": _form(_TRUNK_FORM), **_ok("201", "trunking.v1.trunk")},
            },
            "/v1/Trunks/{Sid}": {
                "parameters": _path_params("Sid"),
                "get": _ok("200", "trunking.v1.trunk"),
                "post": {"requestBody": _form(_TRUNK_FORM), **_ok("200", "trunking.v1.trunk")},
                "delete": _ok("204", None),
            },
            "/v1/Trunks/{TrunkSid}/IpAccessControlLists": {
                "parameters": _path_params("TrunkSid"),
                "get": {"parameters": _PAGING, **_ok("200", "ListIpAccessControlListResponse")},
                "post": {"requestBody": _form({"IpAccessControlListSid": {"type": "string"}},
                                              ["IpAccessControlListSid"]),
                         **_ok("201", "trunking.v1.trunk.ip_access_control_list")},
            },
            "/v1/Trunks/{TrunkSid}/IpAccessControlLists/{Sid}": {
                "parameters": _path_params("TrunkSid", "Sid"),
                "get": _ok("200", "trunking.v1.trunk.ip_access_control_list"),
                "delete": _ok("204", None),
            },
            acls + ".json": {
                "parameters": _path_params("AccountSid"),
                "get": {"parameters": _PAGING, **_ok("200", "ListSipIpAccessControlListResponse")},
                "post": {"requestBody": _form({"FriendlyName": {"type": "string"}}, ["FriendlyName"]),
                         **_ok("201", "api.v2010.account.sip.sip_ip_access_control_list")},
            },
            acls + "/{Sid}.json": {
                "parameters": _path_params("AccountSid", "Sid"),
                "get": _ok("200", "api.v2010.account.sip.sip_ip_access_control_list"),
                "post": {"requestBody": _form({"FriendlyName": {"type": "string"}}, ["FriendlyName"]),
                         **_ok("200", "api.v2010.account.sip.sip_ip_access_control_list")},
                "delete": _ok("204", None),
            },
            acls + "/{IpAccessControlListSid}/IpAddresses.json": {
                "parameters": _path_params("AccountSid", "IpAccessControlListSid"),
                "get": {"parameters": _PAGING, **_ok("200", "ListSipIpAddressResponse")},
                "post": {"requestBody": _form(_IP_FORM, ["FriendlyName", "IpAddress"]),
                         **_ok("201", "api.v2010.account.sip.sip_ip_access_control_list.sip_ip_address")},
            },
            acls + "/{IpAccessControlListSid}/IpAddresses/{Sid}.json": {
                "parameters": _path_params("AccountSid", "IpAccessControlListSid", "Sid"),
                "get": _ok("200", "api.v2010.account.sip.sip_ip_access_control_list.sip_ip_address"),
                "post": {"requestBody": _form(_IP_FORM),
                         **_ok("200", "api.v2010.account.sip.sip_ip_access_control_list.sip_ip_address")},
                "delete": _ok("204", None),
            },
        },
    }
