"""The operations of an OpenAPI document and the fields each takes and answers, flattened to
comparable rows (``tests/data/openapi_fields.json`` keeps the rows of the document as it was
before the result types became the response models, issue #16)."""

from __future__ import annotations

from typing import Any

Row = str


def operations(document: dict[str, Any]) -> dict[str, dict[str, Row]]:
    """``"METHOD path"`` -> ``{"request": fields, "<status>": fields, ...}`` where ``fields``
    maps a dotted field path (``candidates[].distance``) to its types, enum and required flag."""
    found: dict[str, dict[str, Row]] = {}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            entry: dict[str, Row] = {"operation_id": str(operation.get("operationId"))}
            for parameter in operation.get("parameters", []):
                entry[f"parameter {parameter['in']} {parameter['name']}"] = _describe(
                    document, parameter.get("schema", {}), parameter.get("required", False))
            for media, body in operation.get("requestBody", {}).get("content", {}).items():
                entry.update(_flatten(document, body.get("schema", {}), f"request {media}"))
            for status, response in operation.get("responses", {}).items():
                for media, body in response.get("content", {}).items():
                    if status.startswith("2"):
                        entry.update(_flatten(document, body.get("schema", {}),
                                              f"{status} {media}"))
                    else:  # problem documents: one shape, checked by test_error_mapping
                        entry[f"{status} {media}"] = "documented"
            found[f"{method.upper()} {path}"] = entry
    return found


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def _variants(document: dict[str, Any], schema: dict[str, Any]) -> list[dict[str, Any]]:
    schema = _resolve(document, schema)
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        return [v for option in options for v in _variants(document, option)]
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _variants(document, schema["allOf"][0])
    return [schema]


def _describe(document: dict[str, Any], schema: dict[str, Any], required: bool) -> Row:
    """``"integer|null"``, then `` enum=a,b`` if the values are listed, `` required``, and
    `` described`` if the document explains the field."""
    variants = _variants(document, schema)
    types = sorted({str(v.get("type", "const" if "const" in v else "any")) for v in variants})
    enum = sorted({str(e) for v in variants for e in v.get("enum", [])}
                  | {str(v["const"]) for v in variants if "const" in v})
    described = "description" in schema or any("description" in v for v in variants)
    return "|".join(types) + (f" enum={','.join(enum)}" if enum else "") + (
        " required" if required else "") + (" described" if described else "")


def _flatten(document: dict[str, Any], schema: dict[str, Any], prefix: str,
             required: bool = True, depth: int = 0) -> dict[str, Row]:
    rows = {prefix: _describe(document, schema, required)}
    if depth > 6:
        return rows
    for variant in _variants(document, schema):
        needed = set(variant.get("required", []))
        for name, child in variant.get("properties", {}).items():
            rows.update(_flatten(document, child, f"{prefix}.{name}", name in needed,
                                 depth + 1))
        if "items" in variant and isinstance(variant["items"], dict):
            rows.update(_flatten(document, variant["items"], f"{prefix}[]", True, depth + 1))
    return rows
