"""Every boundary model survives a JSON round trip (run_local skips serialization)."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel, RootModel

import chainlets.errors
from chainlets.engine.models import (
    AttemptRecord,
    CaughtError,
    ChainInputs,
    ErrorKind,
    Generation,
    GenerationRequest,
    InvocationResult,
    RunOptions,
    RunState,
    StepRecord,
    Usage,
)
from chainlets.generators.mock_model import MockRule, MockScript
from chainlets.language.capabilities import Capability, CapabilityRequests, RequestLevel, Served
from chainlets.language.plugins import Gpt3Config, MockConfig, ModelParams, OpenAIConfig
from chainlets.language.policies import CatchSpec, RetrySpec
from chainlets.language.spec import (
    ChainSpec,
    ChatMessage,
    InputDecl,
    StepSpec,
    chain_json_schema,
    load_chain,
)
from chains.soundtrack import Soundtrack

SPECS = Path(__file__).parent.parent / "chains" / "specs"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)

SAMPLES: list[BaseModel] = [
    load_chain(SPECS / "joke.json"),
    load_chain(SPECS / "soundtrack.json"),
    ChainSpec(handle="c", inputs=[InputDecl(name="x", description="d", default="1")],
              steps=[StepSpec(handle="a", prompt="{x}", plugin="openai",
                              plugin_config={"model": "m", "stop": ["\n"]}, input={"n": 3},
                              system_prompt="s", depends_on=[],
                              messages=[ChatMessage(role="assistant", content="hi")])],
              output="a", callback_url="http://127.0.0.1:9/cb"),
    GenerationRequest(step="a", plugin="gpt-3", messages=[ChatMessage(role="user", content="q")],
                      params=ModelParams(model="m", temperature=0.2, max_tokens=5, top_p=0.9,
                                         stop=["x"], seed=1, max_words=3)),
    Generation(text="t", model="m", usage=Usage(prompt_tokens=1, completion_tokens=2,
                                                total_tokens=3)),
    RunOptions(llm="openai", max_concurrency=4, max_attempts=5, initial_backoff_s=0.1,
               max_backoff_s=1),
    InvocationResult(
        chain="c", input={"topic": "food"}, output=None, state=RunState.FAILED,
        statusMessage="step `a` failed: x",
        steps=[StepRecord(handle="a", state=RunState.FAILED, statusMessage="x",
                          attempts=[AttemptRecord(number=1, started_at=NOW, finished_at=NOW,
                                                  error="x", error_kind=ErrorKind.TIMEOUT)],
                          started_at=NOW, finished_at=NOW, usage=Usage(),
                          error_kind=ErrorKind.INTERNAL),
               StepRecord(handle="b", state=RunState.SKIPPED, statusMessage="not run"),
               StepRecord(handle="c", state=RunState.QUEUED),
               StepRecord(handle="d", state=RunState.SUCCEEDED, output="{}",
                          capabilities={Capability.JSON_MODE: Served.NATIVE,
                                        Capability.SYSTEM_PROMPT: Served.BEST_EFFORT,
                                        Capability.STREAMING: Served.UNSERVED})]),
    ChainSpec(handle="routed", steps=[StepSpec(
        handle="a", prompt="p", plugin=["gpt-3", "openai"], system_prompt="s",
        plugin_config={"gpt-3": {"max_words": 5}, "openai": {"temperature": 0}},
        capabilities=CapabilityRequests(json_mode=RequestLevel.BEST_EFFORT,
                                        streaming=RequestLevel.OPTIONAL,
                                        function_calling=RequestLevel.DISABLE))]),
    GenerationRequest(step="a", plugin="openai", messages=[ChatMessage(role="user", content="q")],
                      capabilities={Capability.JSON_MODE: Served.NATIVE,
                                    Capability.CONVERSATION: Served.IGNORED}),
    Generation(text="{}", capabilities={Capability.STREAMING: Served.DISABLED}),
    ChainSpec(handle="policies", deadline_s=30, steps=[
        StepSpec(handle="a", prompt="p", plugin="mock", timeout_s=2.5,
                 retry=RetrySpec(max_attempts=4, initial_backoff_s=0.1, max_backoff_s=1,
                                 jitter=False, on=["timeout", "transient", "schema"]),
                 catch=CatchSpec(step="h", errors=["model"])),
        StepSpec(handle="h", prompt="{error_kind}: {error}", plugin="mock",
                 catch=CatchSpec(output={"fallback": [1, "two"]}))]),
    InvocationResult(chain="c", state=RunState.SUCCEEDED, output="sorry", steps=[
        StepRecord(handle="a", state=RunState.SUCCEEDED, output="sorry",
                   statusMessage="caught: GenerationError: no; the output is `catch.output`",
                   caught=CaughtError(error="GenerationError: no", error_kind=ErrorKind.SCHEMA)),
        StepRecord(handle="b", state=RunState.SUCCEEDED, output="x",
                   caught=CaughtError(error="e", error_kind=ErrorKind.TIMEOUT, step="h"))]),
    load_chain(SPECS / "json-fixer.json"),
    StepSpec(handle="s", prompt="{a.b[0]}", plugin="mock", max_repairs=3,
             output_schema={"type": "object", "properties": {"n": {"type": "integer"}},
                            "required": ["n"], "$defs": {"x": {"const": None}}}),
    GenerationRequest(step="s", plugin="openai", messages=[ChatMessage(role="user", content="q")],
                      capabilities={Capability.JSON_MODE: Served.BEST_EFFORT},
                      output_schema={"type": "array", "items": {"type": "number"}}),
    InvocationResult(chain="c", steps=[StepRecord(
        handle="s", state=RunState.FAILED, error_kind=ErrorKind.SCHEMA,
        attempts=[AttemptRecord(number=1, started_at=NOW, finished_at=NOW, error="bad",
                                error_kind=ErrorKind.SCHEMA)])]),
    MockScript(latency_ms=5, rules=[MockRule(match="a+", step="s", reply="r", times=2),
                                    MockRule(error="transient")]),
    OpenAIConfig(model="m", temperature=1, max_tokens=3, top_p=0.5, stop="x", seed=2),
    Gpt3Config(max_words=10),
    MockConfig(max_words=None),
    ChainInputs({"topic": "t", "people": ["Ann", {"name": "Bob", "age": 3}], "n": None}),
    InvocationResult(chain="c", input={"people": ["Ann"], "limits": {"max": 2.5, "on": True}}),
    Soundtrack(topic="t", movie_title="m", song_title="s", main_characters="c",
               song_lyrics="l", reviews=["r"] * 5),
]


@pytest.mark.parametrize("model", SAMPLES, ids=lambda m: type(m).__name__)
def test_json_round_trip(model: BaseModel) -> None:
    data = model.model_dump_json()
    assert type(model).model_validate_json(data) == model
    assert type(model).model_validate(json.loads(data)) == model


def test_result_uses_steamship_field_names() -> None:
    result = InvocationResult(chain="c", state=RunState.RUNNING,
                              steps=[StepRecord(handle="a", statusMessage="m")])
    data = json.loads(result.model_dump_json())
    assert set(data) == {"chain", "input", "output", "state", "statusMessage", "steps"}
    assert set(data["steps"][0]) == {"handle", "state", "statusMessage", "output", "attempts",
                                     "started_at", "finished_at", "usage", "error_kind",
                                     "backend", "model", "capabilities", "caught"}
    assert data["state"] == "running" and data["steps"][0]["statusMessage"] == "m"


def test_field_names_survive_truss_output_wrapping() -> None:
    """Truss returns a chainlet's output through its own RootModel and `model_dump`; the
    Steamship names must come out as they are, with no alias configuration to lose."""
    wrapper = RootModel[InvocationResult](
        InvocationResult(chain="c", statusMessage="m", steps=[StepRecord(handle="a")]))
    dumped = wrapper.model_dump(mode="python")
    assert dumped["statusMessage"] == "m" and "statusMessage" in dumped["steps"][0]


def test_json_schema_describes_the_language() -> None:
    schema = chain_json_schema()
    assert schema["title"] == "chainrunner chain"
    assert schema["required"] == ["handle", "steps"]
    step = schema["$defs"]["StepSpec"]
    assert {"handle", "prompt", "plugin", "plugin_config", "input", "system_prompt",
            "messages", "depends_on"} <= set(step["properties"])
    assert step["additionalProperties"] is False


def test_error_module_exports_every_error_and_each_takes_one_message() -> None:
    assert sorted(chainlets.errors.__all__) == [
        "BackendOverloadedError", "ChainDefinitionError", "ChainrunnerError",
        "ConfigurationError", "ConflictError", "FunctionCallError",
        "GenerationError", "GenerationTimeoutError", "InputsError", "LeaseLostError",
        "NotFoundError", "OutputSchemaError", "PayloadTooLargeError", "RequestError",
        "StepDataError", "TransientGenerationError", "UnknownFunctionError"]
    for name in chainlets.errors.__all__:
        cls = getattr(chainlets.errors, name)
        assert str(cls("one message")) == "one message"
        assert issubclass(cls, chainlets.errors.ChainrunnerError)


def test_a_chain_dumped_without_aliases_reads_back() -> None:
    """Truss's output wrapper may ignore aliases; a stored chain read back must validate."""
    spec = ChainSpec.model_validate({"$schema": "https://example.test/chain.schema.json",
                                     "handle": "c", "steps": [{"handle": "a", "prompt": "p",
                                                                "plugin": "mock"}]})
    assert ChainSpec.model_validate(spec.model_dump(by_alias=False)) == spec
    assert ChainSpec.model_validate_json(spec.model_dump_json()) == spec
