"""Structured output at validation: `output_schema` checked itself (its draft's metaschema, its
`$ref`s), `max_repairs` bounded, JSON mode implied, and path reads checked against the schema
of the step they read; every problem in one round."""

from typing import Any

import pytest

from chainlets.errors import ChainDefinitionError
from chainlets.language.capabilities import Capability, Served
from chainlets.language.compiler import compile_chain
from chainlets.language.structured import schema_path_problem

CARD: dict[str, Any] = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                   "tags": {"type": "array", "items": {"type": "object",
                                                       "properties": {"k": {"type": "string"}}}},
                   "pair": {"type": "array", "prefixItems": [{"type": "string"},
                                                             {"type": "object"}]},
                   "any": {}},
    "required": ["name"]}


def step(handle: str, prompt: str, **more: Any) -> dict[str, Any]:
    return {"handle": handle, "plugin": "mock", "prompt": prompt, **more}


def problems(*steps: dict[str, Any]) -> list[str]:
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain({"handle": "c", "steps": list(steps)})
    return excinfo.value.problems


def test_a_valid_schema_compiles_with_its_bound_and_json_mode() -> None:
    chain = compile_chain({"handle": "c", "steps": [
        step("a", "x", output_schema=CARD), step("b", "x", output_schema=CARD, max_repairs=0),
        step("c", "{a.name} {b.tags[0].k} {a.pair[1]} {a.any.deep[3]}")]})
    a, b = chain.steps["a"], chain.steps["b"]
    assert a.structured is not None and a.structured.max_repairs == 2  # the default
    assert b.structured is not None and b.structured.max_repairs == 0
    assert a.served == {Capability.JSON_MODE: Served.NATIVE}  # the mock has JSON mode
    assert chain.steps["c"].deps == {"a", "b"}
    assert chain.steps["c"].structured is None


def test_every_schema_problem_is_reported_at_once_with_step_and_field() -> None:
    found = problems(
        step("a", "x", output_schema={"type": "objekt", "required": "name",
                                      "properties": {"n": {"minimum": "zero"}}}),
        step("b", "x", max_repairs=2),
        step("c", "x", output_schema={"$ref": "#/$defs/missing"}),
        step("d", "x", output_schema={"$schema": "https://example.com/my-draft"}),
        {"handle": "e", "output_schema": CARD, "choice": {
            "branches": [{"when": {"value": "q", "equals": "y"}, "then": ["a"]}]}})
    assert found == [
        "step `a`: output_schema.properties.n.minimum: 'zero' is not of type 'number'",
        "step `a`: output_schema.required: 'name' is not of type 'array'",
        "step `a`: output_schema.type: 'objekt' is not valid under any of the given schemas",
        "step `b`: `max_repairs` needs an `output_schema` to repair against; add one, or remove "
        "`max_repairs`",
        "step `c`: output_schema: `$ref` `#/$defs/missing` does not resolve within the schema "
        "(references to other documents are never fetched); point it at `$defs`",
        "step `d`: `$schema` `https://example.com/my-draft` is not a JSON Schema draft "
        "jsonschema knows; remove it (draft 2020-12 is the default)",
        "step `e`: a `choice` step makes no model call, so it has no `output_schema`; put it on "
        "the steps it runs"]


def test_a_schema_of_another_draft_is_checked_against_that_draft() -> None:
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
              "definitions": {"n": {"type": "integer"}},
              "properties": {"n": {"$ref": "#/definitions/n"}}}
    chain = compile_chain({"handle": "c", "steps": [step("a", "x", output_schema=draft7)]})
    structured = chain.steps["a"].structured
    assert structured is not None
    assert structured.apply('{"n": 1}') == ('{"n": 1}', [])
    assert structured.apply('{"n": "1"}')[1] == ["at `$.n`: '1' is not of type 'integer'"]


def test_max_repairs_is_bounded_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINRUNNER_MAX_REPAIRS", "3")
    assert problems(step("a", "x", output_schema=CARD, max_repairs=4)) == [
        "step `a`: `max_repairs` = 4 is invalid: 4 is over the limit of 3 repairs set by "
        "CHAINRUNNER_MAX_REPAIRS; lower it or raise CHAINRUNNER_MAX_REPAIRS"]
    assert problems(step("a", "x", output_schema=CARD, max_repairs=-1))[0].startswith(
        "step `a`: `max_repairs` = -1 is invalid")


def test_path_reads_are_checked_against_the_schema_of_the_step_they_read() -> None:
    found = problems(
        step("a", "x", output_schema=CARD),
        step("b", "{a.nmae} {a.age.x} {a[0]} {a.tags.k} {a.tags[0].q} {a.pair[0].x}",
             system_prompt="{a.name}"))
    assert found == [
        "step `b`: prompt reads `{a.nmae}`, which step `a`'s output_schema never has: at the "
        "top the schema has no property `nmae` (did you mean `name`?); its properties are "
        "`name`, `age`, `tags`, `pair`, `any`",
        "step `b`: prompt reads `{a.age.x}`, which step `a`'s output_schema never has: at `age` "
        "the schema has type `integer`, not object",
        "step `b`: prompt reads `{a[0]}`, which step `a`'s output_schema never has: at the top "
        "the schema has type `object`, not array",
        "step `b`: prompt reads `{a.tags.k}`, which step `a`'s output_schema never has: at "
        "`tags` the schema has type `array`, not object",
        "step `b`: prompt reads `{a.tags[0].q}`, which step `a`'s output_schema never has: at "
        "`tags[0]` the schema has no property `q`; its properties are `k`",
        "step `b`: prompt reads `{a.pair[0].x}`, which step `a`'s output_schema never has: at "
        "`pair[0]` the schema has type `string`, not object"]


def test_a_read_of_an_unknown_step_is_named_like_any_reference() -> None:
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain({"handle": "c", "inputs": [], "steps": [step("a", "{extarct.name}"),
                                                              step("extract", "x")]})
    assert excinfo.value.problems == [
        "step `a`: prompt references `{extarct}`, which is neither a declared input nor a step "
        "(did you mean `extract`?)"]


@pytest.mark.parametrize(
    ("schema", "path"),
    [
        ({"type": "object", "additionalProperties": True, "properties": {"a": {}}}, ("b",)),
        ({"type": "object", "additionalProperties": {"type": "object"}}, ("b", "c")),
        ({"type": "object", "patternProperties": {"^x": {}}, "properties": {}}, ("x1",)),
        ({"anyOf": [{"type": "string"}, {"type": "object"}]}, ("a",)),
        ({"$ref": "#/$defs/x", "$defs": {"x": {"type": "string"}}}, ("a",)),
        ({"type": "object"}, ("anything", 3)),
        ({"type": ["object", "null"], "properties": {"a": {}}}, ("a",)),
        ({"type": "array"}, (0, "x")),
    ],
    ids=["additional-true", "additional-schema", "pattern", "any-of", "ref", "open-object",
         "type-list", "open-array"],
)
def test_a_path_the_schema_does_not_rule_out_is_accepted(schema: dict[str, Any],
                                                         path: tuple[str | int, ...]) -> None:
    assert schema_path_problem(schema, path) is None


def test_a_step_of_a_plugin_without_json_mode_gets_it_best_effort_through_repairs() -> None:
    chain = compile_chain({"handle": "c", "steps": [
        {"handle": "a", "plugin": "gpt-3", "plugin_config": {"max_words": 50}, "prompt": "x",
         "output_schema": CARD},
        {"handle": "b", "plugin": "gpt-3", "plugin_config": {"max_words": 50}, "prompt": "x",
         "output_schema": CARD, "capabilities": {"json_mode": "disable"}}]})
    assert chain.steps["a"].served == {Capability.JSON_MODE: Served.BEST_EFFORT}
    assert chain.steps["b"].served == {Capability.JSON_MODE: Served.DISABLED}
    found = problems({"handle": "a", "plugin": "gpt-3", "plugin_config": {"max_words": 50},
                      "prompt": "x", "output_schema": CARD,
                      "capabilities": {"json_mode": "native"}})
    assert found == [
        "step `a`: plugin `gpt-3` cannot serve capabilities.json_mode = `native` (it supports "
        "it only best-effort); use a plugin that can (`mock`, `openai`), or lower the request"]


def test_routing_prefers_the_first_plugin_once_a_schema_makes_json_mode_emulable() -> None:
    chain = compile_chain({"handle": "c", "steps": [
        {"handle": "a", "plugin": ["gpt-3", "openai"], "prompt": "x", "output_schema": CARD,
         "plugin_config": {"gpt-3": {"max_words": 50}}}]})
    assert chain.steps["a"].plugin.name == "gpt-3"
    assert chain.steps["a"].served == {Capability.JSON_MODE: Served.BEST_EFFORT}


def test_condition_paths_are_checked_against_the_schema_of_the_value_they_test() -> None:
    found = problems(
        step("a", "x", output_schema=CARD),
        {"handle": "route", "choice": {"branches": [
            {"when": {"all": [{"value": "a", "path": "name", "equals": "Ada"},
                              {"not": {"value": "a", "path": "tags[0].kk", "equals": "x"}}]},
             "then": ["b"]}]}},
        step("b", "x"),
        {"handle": "l", "loop": {"max_iterations": 2, "until": {
            "value": "j", "path": "agee", "ge": 3}, "steps": [step("j", "x",
                                                                 output_schema=CARD)]}})
    assert found == [
        "step `route`: branch 1 `when`: path `tags[0].kk` of `a` is never in its "
        "output_schema: at `tags[0]` the schema has no property `kk` (did you mean `k`?); its "
        "properties are `k`",
        "step `l`: `until`: path `agee` of `j` is never in its output_schema: at the top the "
        "schema has no property `agee` (did you mean `age`?); its properties are `name`, `age`, "
        "`tags`, `pair`, `any`"]


def test_formats_jsonschema_can_check_are_asserted() -> None:
    chain = compile_chain({"handle": "c", "steps": [step("a", "x", output_schema={
        "type": "object", "properties": {"e": {"type": "string", "format": "email"},
                                         "d": {"type": "string", "format": "date"}}})]})
    structured = chain.steps["a"].structured
    assert structured is not None
    assert structured.apply('{"e": "ada@example.com", "d": "2026-12-01"}')[1] == []
    assert structured.apply('{"e": "ada", "d": "yesterday"}')[1] == [
        "at `$.e`: 'ada' is not a 'email'", "at `$.d`: 'yesterday' is not a 'date'"]


def test_an_approval_step_has_no_output_schema() -> None:
    assert problems({"handle": "ok", "plugin": "human-approval", "prompt": "Approve?",
                     "plugin_config": {"timeout_s": 60}, "output_schema": CARD}) == [
        "step `ok`: a `human-approval` step's answer comes from a person, not a model to "
        "repair; remove `output_schema`"]
