"""The JSON schema of `wafersim` reports, and a minimal validator for the subset it uses.

`schema.json` holds the `kernel` report at the top level and the `run` and `sweep` reports in
`$defs`; `load_schema(report)` returns one of them. Supported keywords: type (a name or a list),
required, properties, additionalProperties (bool or schema), items, enum, const, minimum,
maximum, minItems, maxItems, anyOf, and `$ref` to "#/..." pointers into the root. Enough to
check reports without `jsonschema`.
"""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA_PATH = Path(__file__).with_name("schema.json")
REPORTS = ("kernel", "run", "sweep")
_TYPES: dict[str, type | tuple[type, ...]] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def load_schema(report: str = "kernel", path: Path = SCHEMA_PATH) -> dict:
    """The schema of one report kind; `$ref`s resolve against the file's root (`$root`)."""
    if report not in REPORTS:
        raise ValueError(f"report must be one of {REPORTS}, got {report!r}")
    root = json.loads(path.read_text())
    schema = root if report == "kernel" else root["$defs"][report]
    return {**schema, "$root": root}


def _resolve(ref: str, root: dict) -> dict:
    if not ref.startswith("#/"):
        raise ValueError(f"only local '#/...' references are supported, got {ref!r}")
    node = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _is(instance: object, kind: str) -> bool:
    return isinstance(instance, _TYPES[kind]) and not (
        kind in ("integer", "number") and isinstance(instance, bool)
    )


def validate(
    instance: object, schema: dict, where: str = "$", root: dict | None = None
) -> list[str]:
    """Every way `instance` breaks `schema`, as 'path: problem' lines (empty when valid)."""
    root = schema.get("$root", root if root is not None else schema)
    if "$ref" in schema:
        return validate(instance, _resolve(schema["$ref"], root), where, root)
    if "anyOf" in schema:
        tries = [validate(instance, s, where, root) for s in schema["anyOf"]]
        return [] if any(not t for t in tries) else min(tries, key=len)
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is(instance, k) for k in kinds):
            return [f"{where}: expected {' or '.join(kinds)}, got {type(instance).__name__}"]
    errors = _value_errors(instance, schema, where)
    if isinstance(instance, dict):
        errors += _object_errors(instance, schema, where, root)
    if isinstance(instance, list):
        errors += _array_errors(instance, schema, where, root)
    return errors


def _value_errors(instance: object, schema: dict, where: str) -> list[str]:
    """`const`, `enum`, `minimum` and `maximum`."""
    errors: list[str] = []
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{where}: expected {schema['const']!r}, got {instance!r}")
    if "enum" in schema and instance not in schema["enum"]:
        errors.append(f"{where}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, int | float) and not isinstance(instance, bool):
        if "minimum" in schema and instance < schema["minimum"]:
            errors.append(f"{where}: {instance} < minimum {schema['minimum']}")
        if "maximum" in schema and instance > schema["maximum"]:
            errors.append(f"{where}: {instance} > maximum {schema['maximum']}")
    return errors


def _object_errors(instance: dict, schema: dict, where: str, root: dict) -> list[str]:
    """`required`, `properties` and `additionalProperties`."""
    errors = [
        f"{where}: missing {key!r}" for key in schema.get("required", ()) if key not in instance
    ]
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for key, value in instance.items():
        if key in properties:
            errors += validate(value, properties[key], f"{where}.{key}", root)
        elif extra is False:
            errors.append(f"{where}: unexpected {key!r}")
        elif isinstance(extra, dict):
            errors += validate(value, extra, f"{where}.{key}", root)
    return errors


def _array_errors(instance: list, schema: dict, where: str, root: dict) -> list[str]:
    """`minItems`, `maxItems` and `items`."""
    errors: list[str] = []
    if len(instance) < schema.get("minItems", 0):
        errors.append(f"{where}: fewer than {schema['minItems']} items")
    if "maxItems" in schema and len(instance) > schema["maxItems"]:
        errors.append(f"{where}: more than {schema['maxItems']} items")
    if "items" in schema:
        for i, item in enumerate(instance):
            errors += validate(item, schema["items"], f"{where}[{i}]", root)
    return errors
