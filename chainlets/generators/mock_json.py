"""The mock model's structured replies: a small JSON document meeting a step's output schema.

Deterministic and best-effort: `const`, `enum`, `default`, `examples`, `type` (with string
lengths and formats, number bounds, array `minItems`, `prefixItems` and an object's `required`
properties) and `$defs` references within the schema are followed; a schema beyond them
(`oneOf`, `pattern`, `not`, …) may get a reply that does not validate, which the engine then
repairs or fails, as with a real model.
"""

from typing import Any, TypeVar

__all__ = ["mock_json"]

T = TypeVar("T")
_DEPTH = 16  # a recursive schema ends here with null
# Strings of the formats the engine checks (jsonschema's format checker), and a few more.
_FORMATS = {"email": "mock@example.com", "idn-email": "mock@example.com",
            "date": "2026-01-01", "date-time": "2026-01-01T00:00:00Z", "time": "00:00:00Z",
            "ipv4": "192.0.2.1", "ipv6": "2001:db8::1",
            "uuid": "00000000-0000-4000-8000-000000000000",
            "uri": "https://example.com/mock", "hostname": "example.com",
            "idn-hostname": "example.com", "regex": "mock"}


def _resolve(node: Any, root: Any) -> Any:
    ref = node.get("$ref") if isinstance(node, dict) else None
    if not isinstance(ref, str) or not ref.startswith("#"):
        return node
    target: Any = root
    for part in ref[1:].split("/")[1:]:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            return {}
    return target


def _of(node: dict[str, Any], key: str, kind: type[T], default: T) -> T:
    """`node[key]` when it is a `kind`, else `default`."""
    value = node.get(key)
    return value if isinstance(value, kind) else default


def _number(node: dict[str, Any], integer: bool) -> int | float:
    low = node.get("minimum", node.get("exclusiveMinimum"))
    high = node.get("maximum", node.get("exclusiveMaximum"))
    value: float = 0
    if isinstance(low, int | float):
        value = low + (1 if "exclusiveMinimum" in node and "minimum" not in node else 0)
    elif isinstance(high, int | float) and high < 0:
        value = high - (1 if "exclusiveMaximum" in node and "maximum" not in node else 0)
    return int(value) if integer else float(value)


def _value(node: Any, root: Any, label: str, depth: int) -> Any:
    node = _resolve(node, root)
    if not isinstance(node, dict) or depth > _DEPTH:
        return None
    for key in ("const", "default"):
        if key in node:
            return node[key]
    for key in ("enum", "examples"):
        if isinstance(node.get(key), list) and node[key]:
            return node[key][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(node.get(key), list) and node[key]:
            return _value(node[key][0], root, label, depth + 1)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in node else "array" if "items" in node else "string"
    if kind == "object":
        props = _of(node, "properties", dict, {})
        return {name: _value(props.get(name, {}), root, f"{label}.{name}", depth + 1)
                for name in _of(node, "required", list, []) if isinstance(name, str)}
    if kind == "array":
        prefix: list[Any] = _of(node, "prefixItems", list, [])
        count = max(_of(node, "minItems", int, 0), len(prefix))
        items = node.get("items", {})
        return [_value(prefix[i] if i < len(prefix) else items, root, f"{label}[{i}]", depth + 1)
                for i in range(count)]
    if kind in ("integer", "number"):
        return _number(node, kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    text = _FORMATS.get(str(node.get("format")), f"[mock] {label}")
    low = node.get("minLength")
    high = node.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text += "." * (low - len(text))
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


def mock_json(schema: dict[str, Any], step: str) -> Any:
    """A JSON value meeting `schema` where the mock can make one; strings say `[mock] step…`."""
    return _value(schema, schema, step, 0)
