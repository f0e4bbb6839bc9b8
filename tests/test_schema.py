"""The chain language's JSON Schema, as an editor uses it: Draft 2020-12, per-plugin configs."""

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from pydantic import BaseModel, ConfigDict, Field

from chainlets.errors import ChainDefinitionError
from chainlets.language.compiler import compile_chain
from chainlets.language.plugins import DEFAULT_PLUGINS, ModelParams, Plugin
from chainlets.language.spec import chain_json_schema

SPECS = sorted((Path(__file__).resolve().parent.parent / "chains" / "specs").glob("*.json"))


def step(plugin: str = "mock", **extra: Any) -> dict[str, Any]:
    return {"handle": "a", "prompt": "x", "plugin": plugin, **extra}


def chain(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"handle": "c", "steps": list(steps), **extra}


def validator(schema: dict[str, Any] | None = None) -> jsonschema.Draft202012Validator:
    schema = schema or chain_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_every_shipped_spec_conforms() -> None:
    assert SPECS, "no specs found in chains/specs"
    check = validator()
    for path in SPECS:
        errors = list(check.iter_errors(json.loads(path.read_text(encoding="utf-8"))))
        assert errors == [], f"{path.name}: {errors}"


@pytest.mark.parametrize("data", [
    chain(step(), **{"$schema": "./chain.schema.json"}),
    chain(step("gpt-3", plugin_config={"max_words": 5})),
    chain(step("openai", plugin_config={"temperature": 0.7, "stop": "\n", "model": "m"})),
    chain(step("mock")),
    chain(step(depends_on=["tell-joke_2"]), output="a"),
], ids=["schema-key", "gpt-3", "openai", "mock-without-config", "names"])
def test_valid_chains_pass_the_schema_and_validation(data: dict[str, Any]) -> None:
    validator().validate(data)
    data["steps"].append(step(handle="tell-joke_2"))
    compile_chain(data)


@pytest.mark.parametrize(("data", "keyword"), [
    (chain(step("gpt-3")), "required"),
    (chain(step("gpt-3", plugin_config={})), "required"),
    (chain(step("gpt-3", plugin_config={"max_words": 0})), "exclusiveMinimum"),
    (chain(step("openai", plugin_config={"temperature": 3})), "maximum"),
    (chain(step("openai", plugin_config={"top_p": -0.1})), "minimum"),
    (chain(step("openai", plugin_config={"temprature": 1})), "additionalProperties"),
    (chain(step("mock", plugin_config={"max_words": "ten"})), "type"),
    (chain(step("gpt-4")), "enum"),
    (chain(step(handle="a b")), "pattern"),
    (chain(step(handle="")), "pattern"),
    (chain(step(depends_on=["x.y"])), "pattern"),
    (chain(step(), output="out put"), "pattern"),
    (chain(step(), inputs=[{"name": "a b"}]), "pattern"),
    (chain(step(promt="typo")), "additionalProperties"),
    (chain({"handle": "a", "plugin": "mock"}), "required"),
    (chain(), "minItems"),
    (chain(step(), extra=1), "additionalProperties"),
], ids=["gpt-3-without-config", "gpt-3-empty-config", "gpt-3-zero-words",
        "openai-temperature-high", "openai-top-p-negative", "openai-unknown-option",
        "mock-words-not-a-number", "unknown-plugin", "handle-with-space", "empty-handle",
        "depends-on-pattern", "output-pattern", "input-name-pattern", "typo-field",
        "missing-prompt", "no-steps", "unknown-chain-field"])
def test_invalid_chains_fail_the_schema_and_validation(data: dict[str, Any],
                                                       keyword: str) -> None:
    """An editor flags what `chainrunner validate` rejects, for the reason it rejects it."""
    errors = list(validator().iter_errors(data))
    assert errors, "the schema accepted it"
    assert keyword in {e.validator for err in errors for e in [err, *(err.context or ())]}
    with pytest.raises(ChainDefinitionError):
        compile_chain(data)


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    voice: str = Field(description="Who echoes.")


def _echo_params(config: BaseModel) -> ModelParams:
    return ModelParams()


def test_a_registered_plugin_appears_with_its_config_schema() -> None:
    plugins = DEFAULT_PLUGINS.with_plugins(
        Plugin("echo", EchoConfig, _echo_params, generator="echo", description="Echoes."))
    schema = chain_json_schema(plugins)
    check = validator(schema)
    step_schema = schema["$defs"]["StepSpec"]
    assert step_schema["properties"]["plugin"]["anyOf"][0]["enum"] == [
        "echo", "gpt-3", "human-approval", "mock", "openai"]
    check.validate(chain(step("echo", plugin_config={"voice": "low"})))
    assert not check.is_valid(chain(step("echo")))
    assert not check.is_valid(chain(step("echo", plugin_config={"voice": 1})))
    assert not validator().is_valid(chain(step("echo", plugin_config={"voice": "low"})))
    branch = next(b for b in step_schema["allOf"]
                  if b["if"]["properties"]["plugin"].get("const") == "echo")
    assert branch["then"]["properties"]["plugin_config"]["description"] == "Echoes."
    assert chain_json_schema() == chain_json_schema(DEFAULT_PLUGINS), "default schema changed"


def test_the_schema_documents_each_plugin_config_for_an_editor() -> None:
    schema = chain_json_schema()
    gpt3 = schema["$defs"]["Gpt3Config"]
    assert gpt3["required"] == ["max_words"]
    assert gpt3["properties"]["max_words"]["examples"] == [50]
    temperature = schema["$defs"]["OpenAIConfig"]["properties"]["temperature"]["anyOf"][0]
    assert (temperature["minimum"], temperature["maximum"]) == (0, 2)
    assert schema["properties"]["$schema"]["anyOf"][0] == {"type": "string"}
