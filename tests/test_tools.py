"""Function calling: a step's `tools` are registered functions the model may call; the model →
tools → model loop is bounded by `max_tool_rounds` (at most CHAINRUNNER_MAX_TOOL_ROUNDS), and
each round is recorded on the attempt that asked for its calls. On the mock model here; on the
real openai SDK in test_openai_tools.py."""

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from chainlets.engine.code_models import ToolCall, ToolCallRecord, ToolRound, ToolSpec
from chainlets.engine.models import (
    AttemptRecord,
    ErrorKind,
    Generation,
    GenerationRequest,
    InvocationResult,
    RunOptions,
    StepRecord,
)
from chainlets.engine.models import RunState as S
from chainlets.engine.scheduler import run_chain
from chainlets.errors import ChainDefinitionError
from chainlets.generators.mock_model import MockModel, MockScript
from chainlets.language.capabilities import Capability, Served
from chainlets.language.compiler import compile_chain
from chainlets.language.plugins import DEFAULT_PLUGINS


def add(a: int, b: int) -> int:
    """The sum of `a` and `b`."""
    return a + b


async def stall() -> str:
    await asyncio.Event().wait()
    return "never"


PLUGINS = DEFAULT_PLUGINS.with_functions(add, stall)


class Scripted:
    """The mock model behind the generator port, keeping every request."""

    def __init__(self, **script: Any) -> None:
        self.model = MockModel(MockScript.model_validate(script))
        self.requests: list[GenerationRequest] = []

    async def run_remote(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        return await self.model.generate(request)


def step(**fields: Any) -> dict[str, Any]:
    return {"handle": "ask", "plugin": "openai", "prompt": "What is 2 + 3?",
            "tools": ["add"], **fields}


async def run(generator: Scripted, *steps: dict[str, Any],
              options: RunOptions | None = None) -> InvocationResult:
    chain = compile_chain({"handle": "c", "steps": list(steps)}, PLUGINS)
    return await run_chain(chain, {}, {"mock": generator},
                           options or RunOptions(llm="mock", max_attempts=1))


def calls(*pairs: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{"name": name, "arguments": arguments} for name, arguments in pairs]


async def test_the_model_calls_a_tool_then_answers_and_each_round_is_recorded() -> None:
    mock = Scripted(rules=[{"step": "ask", "times": 1,
                            "tool_calls": calls(("add", {"a": 2, "b": 3}))}])
    result = await run(mock, step())
    record = result.step("ask")
    assert record.state == S.SUCCEEDED, record.statusMessage
    assert record.output == "[mock] ask re: 5"
    first, second = record.attempts
    assert (first.round, second.round, second.tool_calls) == (1, 2, None)
    assert first.tool_calls == [ToolCallRecord(id="call_0", name="add",
                                               arguments='{"a": 2, "b": 3}', output="5")]
    assert record.capabilities == {Capability.FUNCTION_CALLING: Served.NATIVE}
    # Offered with its schema; the second call carries the first round and its result.
    offered, answered = mock.requests
    assert offered.tools == (ToolSpec(name="add", description="The sum of `a` and `b`.",
                                      parameters={
        "type": "object", "required": ["a", "b"],
        "properties": {"a": {"title": "A", "type": "integer"},
                       "b": {"title": "B", "type": "integer"}}}),)
    assert offered.tool_rounds == ()
    assert answered.tool_rounds == (ToolRound(text="", calls=first.tool_calls or []),)
    # Usage is every round's together.
    assert record.usage is not None and record.usage.prompt_tokens == 2 * 5


async def test_a_model_that_keeps_calling_fails_at_max_tool_rounds_naming_the_limit() -> None:
    mock = Scripted(rules=[{"step": "ask", "tool_calls": calls(("add", {"a": 1, "b": 1}))}])
    result = await run(mock, step(max_tool_rounds=2))
    record = result.step("ask")
    assert (record.state, record.error_kind) == (S.FAILED, ErrorKind.MODEL)
    assert record.statusMessage == (
        "ToolRoundsError: step `ask`: the model still asked for tools (`add`) after "
        "max_tool_rounds = 2 round(s); raise the step's max_tool_rounds (at most 10, set by "
        "CHAINRUNNER_MAX_TOOL_ROUNDS) or ask the model to answer sooner")
    assert [a.round for a in record.attempts] == [1, 2, 3]
    assert [c.output for a in record.attempts[:2] for c in a.tool_calls or []] == ["2", "2"]
    last = record.attempts[2].tool_calls
    assert last is not None and last[0].error == "not run: max_tool_rounds reached"
    assert len(mock.requests) == 3


async def test_a_bad_tool_call_is_told_to_the_model_which_may_try_again() -> None:
    mock = Scripted(rules=[{"step": "ask", "times": 1, "tool_calls": calls(
        ("add", {"a": "two", "b": 3}), ("add", "{not json"), ("sub", {}), ("stall", {}))}])
    result = await run(mock, step(tools=["add", "stall"]),
                       options=RunOptions(llm="mock", max_attempts=1, step_timeout_s=0.05))
    record = result.step("ask")
    assert record.state == S.SUCCEEDED, record.statusMessage
    tool_calls = record.attempts[0].tool_calls
    assert tool_calls is not None
    assert [c.error for c in tool_calls] == [
        "FunctionCallError: step `ask`: function `add` argument `a` = \"two\" is not a valid "
        "int: Input should be a valid integer, unable to parse string as an integer",
        "the arguments are not JSON (Expecting property name enclosed in double quotes: line 1 "
        "column 2 (char 1))",
        "no tool is named `sub`; the tools are `add`, `stall`",
        "StepTimeoutError: generator `code` gave no answer within step_timeout_s=0.05 s; the "
        "attempt was abandoned"]
    # The mock's answer is about what the tools said (its last words).
    assert (record.output or "").endswith("within step_timeout_s=0.05 s; the attempt was "
                                          "abandoned")


def test_tools_on_a_plugin_without_function_calling_fail_validation_before_any_call() -> None:
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain({"handle": "c", "steps": [
            step(plugin="gpt-3", plugin_config={"max_words": 10}),
            step(handle="b", capabilities={"function_calling": "disable"})]}, PLUGINS)
    assert excinfo.value.problems == [
        "step `ask`: plugin `gpt-3` cannot serve `tools` (capabilities.function_calling, "
        "`native` by default) (it does not support it); use a plugin that can (`mock`, "
        "`openai`), or lower the request",
        "step `b`: capabilities.function_calling is `disable`, but the step sets `tools`; "
        "remove one of them"]


def test_a_list_of_plugins_routes_tools_to_one_that_can_call_them() -> None:
    chain = compile_chain({"handle": "c", "steps": [
        step(plugin=["gpt-3", "openai"], plugin_config={"gpt-3": {"max_words": 10}})]},
        PLUGINS)
    assert chain.steps["ask"].plugin.name == "openai"


def test_max_tool_rounds_is_bounded_by_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINRUNNER_MAX_TOOL_ROUNDS", "3")
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain({"handle": "c", "steps": [step(max_tool_rounds=5)]}, PLUGINS)
    assert excinfo.value.problems == [
        "step `ask`: `max_tool_rounds` = 5 is invalid: 5 is over the limit of 3 rounds set by "
        "CHAINRUNNER_MAX_TOOL_ROUNDS; lower it or raise CHAINRUNNER_MAX_TOOL_ROUNDS"]
    # The default (4) is held to a lower limit too.
    chain = compile_chain({"handle": "c", "steps": [step()]}, PLUGINS)
    assert chain.steps["ask"].max_tool_rounds == 3


def test_tool_models_round_trip_through_json() -> None:
    record = ToolCallRecord(id="c1", name="add", arguments='{"a": 1}', error="bad")
    request = GenerationRequest(
        step="ask", plugin="openai", messages=[{"role": "user", "content": "hi"}],
        tools=[ToolSpec(name="add", description="d", parameters={"type": "object"})],
        tool_rounds=[ToolRound(text="let me add", calls=[record])])
    assert GenerationRequest.model_validate_json(request.model_dump_json()) == request
    generation = Generation(text="", tool_calls=[ToolCall(id="c1", name="add", arguments="{}")])
    assert Generation.model_validate_json(generation.model_dump_json()) == generation
    result = InvocationResult(chain="c", steps=[StepRecord(handle="ask", attempts=[
        AttemptRecord(number=1, started_at=datetime(2026, 1, 1, tzinfo=UTC),
                      finished_at=datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC),
                      round=1, tool_calls=[record])])])
    again = InvocationResult.model_validate_json(result.model_dump_json())
    assert json.loads(again.model_dump_json()) == json.loads(result.model_dump_json())
    assert again.steps[0].attempts[0].tool_calls == [record]
