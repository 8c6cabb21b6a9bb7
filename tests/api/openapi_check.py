"""Validate responses against sipgate's own /openapi.json (jsonschema)."""

from __future__ import annotations

import re
from typing import Any

import jsonschema


def to_json_schema(node: Any, components: dict[str, Any]) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: inline $refs, nullable -> null type."""
    if isinstance(node, list):
        return [to_json_schema(n, components) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return to_json_schema(components[node["$ref"].rsplit("/", 1)[1]], components)
    out = {k: to_json_schema(v, components) for k, v in node.items() if k not in ("nullable", "format")}
    if node.get("nullable"):
        return {"anyOf": [out, {"type": "null"}]}
    return out


class OpenApiChecker:
    """Finds the response schema of (method, path, status) and validates a body."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = document
        self.components = document["components"]["schemas"]
        self.paths = [(re.compile("^" + "[^/]+".join(map(re.escape, re.split(r"\{[^}]+\}", t))) + "$"), t)
                      for t in document["paths"]]
        self.checked: set[tuple[str, str, str]] = set()

    def template(self, path: str) -> str | None:
        for rx, template in self.paths:
            if rx.match(path.split("?", 1)[0]):
                return template
        return None

    def check(self, method: str, path: str, status: int, body: Any) -> None:
        template = self.template(path)
        assert template is not None, f"{path} is not in /openapi.json"
        ops = self.doc["paths"][template]
        assert method.lower() in ops or status == 405, f"{method} {template} is not in /openapi.json"
        if status == 405:
            schema = to_json_schema({"$ref": "#/components/schemas/error"}, self.components)
        else:
            responses = ops[method.lower()]["responses"]
            assert str(status) in responses, f"{method} {template} does not declare {status}"
            content = responses[str(status)].get("content")
            if content is None:
                assert body is None, f"{method} {template} {status} must have no body"
                self.checked.add((method, template, str(status)))
                return
            schema = to_json_schema(content["application/json"]["schema"], self.components)
        jsonschema.validate(body, schema)
        self.checked.add((method, template, str(status)))
