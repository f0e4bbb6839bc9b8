"""Function calling on the real openai SDK, against the loopback fake OpenAI: the step's
functions are sent as `tools`, the model's `tool_calls` are run and answered with `tool`
messages, and the loop ends with the model's text."""

import json
from collections.abc import Iterator

import pytest

from chainlets.engine.models import RunState, Usage
from chainlets.language.capabilities import Capability, Served
from chainlets.language.spec import parse_chain
from tests.test_openai_generator import USAGE, FakeOpenAIServer, run, serving

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    with serving(FakeOpenAIServer(), monkeypatch) as fake:
        yield fake

CHAIN = parse_chain({"handle": "judge", "steps": [
    {"handle": "ask", "plugin": "openai", "tools": ["pick_winner"],
     "prompt": "Which scores higher, a (70) or b (80)? Use the tool."}]})


async def test_tool_calls_are_run_and_answered_until_the_model_replies(
        server: FakeOpenAIServer) -> None:
    server.tool_calls = [[("pick_winner", {"scores": {"a": 70, "b": 80}})]]
    result = await run(CHAIN, {})

    record = result.step("ask")
    assert record.state == RunState.SUCCEEDED, record.statusMessage
    assert record.output == server.reply_text(2)
    assert record.capabilities == {Capability.FUNCTION_CALLING: Served.NATIVE}
    assert record.usage == Usage(prompt_tokens=2 * USAGE["prompt_tokens"],
                                 completion_tokens=2 * USAGE["completion_tokens"],
                                 total_tokens=2 * USAGE["total_tokens"])
    winner = '{"name":"b","score":80.0,"candidate":null,"scores":{"a":70.0,"b":80.0}}'
    assert [(a.round, [(c.name, c.output) for c in a.tool_calls or []])
            for a in record.attempts] == [(1, [("pick_winner", winner)]), (2, [])]

    first, second = (r.body for r in server.requests)
    (tool,) = first["tools"]
    assert tool["type"] == "function" and tool["function"]["name"] == "pick_winner"
    assert tool["function"]["parameters"]["required"] == ["scores"]
    assert tool["function"]["description"].startswith("The highest-scoring candidate.")
    assert second["messages"] == [
        first["messages"][0],
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1_0", "type": "function", "function": {
                "name": "pick_winner", "arguments": json.dumps({"scores": {"a": 70, "b": 80}})}}]},
        {"role": "tool", "tool_call_id": "call_1_0", "content": winner}]


async def test_a_failed_tool_call_is_sent_back_as_its_error(server: FakeOpenAIServer) -> None:
    server.tool_calls = [[("pick_winner", {"scores": {}})]]
    result = await run(CHAIN, {})

    assert result.state == RunState.SUCCEEDED, result.statusMessage
    tool_message = server.requests[1].body["messages"][-1]
    assert tool_message["role"] == "tool"
    assert json.loads(tool_message["content"]) == {"error": (
        "FunctionCallError: step `ask`: function `pick_winner` raised ValueError: the scores "
        'hold no numbers; give each candidate one, e.g. {"a": 70, "b": 80}')}


async def test_the_loop_is_bounded(server: FakeOpenAIServer) -> None:
    chain = parse_chain({"handle": "judge", "steps": [
        {**CHAIN.steps[0].model_dump(exclude_defaults=True), "max_tool_rounds": 1}]})
    server.tool_calls = [[("pick_winner", {"scores": {"a": 1}})]] * 3
    result = await run(chain, {})

    record = result.step("ask")
    assert record.state == RunState.FAILED
    assert (record.statusMessage or "").startswith(
        "ToolRoundsError: step `ask`: the model still asked for tools (`pick_winner`) after "
        "max_tool_rounds = 1 round(s)")
    assert len(server.requests) == 2


async def test_with_tools_the_reply_is_not_streamed_and_the_record_says_so(
        server: FakeOpenAIServer) -> None:
    chain = parse_chain({"handle": "judge", "steps": [
        {**CHAIN.steps[0].model_dump(exclude_defaults=True),
         "capabilities": {"streaming": "optional"}}]})
    result = await run(chain, {})

    assert result.state == RunState.SUCCEEDED, result.statusMessage
    assert "stream" not in server.requests[0].body
    assert result.step("ask").capabilities == {Capability.FUNCTION_CALLING: Served.NATIVE,
                                               Capability.STREAMING: Served.UNSERVED}
