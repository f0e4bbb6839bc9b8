"""The mock's structured replies meet the schemas it understands, deterministically."""

from typing import Any

import jsonschema
import pytest

from chainlets.generators.mock_json import mock_json


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"name": {"type": "string", "minLength": 40},
                                      "n": {"type": "integer", "minimum": 5, "maximum": 9}},
     "required": ["name", "n"], "additionalProperties": False},
    {"type": "array", "items": {"type": "number", "exclusiveMinimum": 3}, "minItems": 2},
    {"type": "array", "prefixItems": [{"type": "boolean"}, {"const": "x"}], "items": False},
    {"enum": ["red", "green"]},
    {"type": ["null", "integer"], "maximum": -3},
    {"type": "string", "maxLength": 4},
    {"$ref": "#/$defs/card", "$defs": {"card": {"type": "object", "required": ["tags"],
                                                "properties": {"tags": {
                                                    "type": "array", "minItems": 1,
                                                    "items": {"$ref": "#/$defs/tag"}}}},
                                       "tag": {"type": "string", "examples": ["t1"]}}},
    {"anyOf": [{"type": "integer"}, {"type": "string"}]},
    {"type": "object", "required": ["e", "d", "u", "i"],
     "properties": {"e": {"format": "email"}, "d": {"format": "date"},
                    "u": {"format": "uuid"}, "i": {"format": "ipv6"}}},
    {"type": "object", "properties": {"x": {"default": {"a": 1}}}, "required": ["x"]},
    {"properties": {"nested": {"properties": {"deep": {"type": "boolean"}},
                               "required": ["deep"]}}, "required": ["nested"]},
], ids=["object", "array", "tuple", "enum", "nullable", "max-length", "refs", "any-of",
        "formats", "default", "untyped"])
def test_the_reply_meets_the_schema(schema: dict[str, Any]) -> None:
    value = mock_json(schema, "step")
    jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator,
                        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    assert mock_json(schema, "step") == value  # deterministic


def test_strings_say_where_they_are() -> None:
    assert mock_json({"type": "object", "properties": {"a": {"type": "string"}},
                      "required": ["a"]}, "extract") == {"a": "[mock] extract.a"}


def test_a_recursive_schema_ends() -> None:
    schema = {"$ref": "#/$defs/node", "$defs": {"node": {
        "type": "object", "required": ["child"],
        "properties": {"child": {"$ref": "#/$defs/node"}}}}}
    value = mock_json(schema, "s")
    depth = 0
    while isinstance(value, dict):
        value, depth = value["child"], depth + 1
    assert value is None and depth > 10
