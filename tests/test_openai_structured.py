"""Structured output through the real openai SDK against the loopback fake OpenAI: the schema
is sent as `response_format` (json_schema), an invalid reply is repaired in the conversation,
and a JSON reply is never cut to `max_words`."""

import json
from typing import Any

import pytest

from chainlets.engine.models import ErrorKind, RunState
from chainlets.language.spec import parse_chain
from tests.test_openai_generator import FakeOpenAIServer, run, server  # noqa: F401  # fixture

pytestmark = pytest.mark.e2e

CARD: dict[str, Any] = {"type": "object", "required": ["name", "age"],
                        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}


def chain(plugin: str = "openai", **more: Any) -> Any:
    config = {"max_words": 5} if plugin == "gpt-3" else {}
    return parse_chain({"handle": "c", "steps": [
        {"handle": "extract", "plugin": plugin, "plugin_config": config,
         "prompt": "The card of Ada, 36", "output_schema": CARD, **more},
        {"handle": "note", "plugin": "openai", "prompt": "Hello {extract.name}"}]})


async def test_the_schema_is_sent_and_an_invalid_reply_repaired(
        server: FakeOpenAIServer) -> None:  # noqa: F811
    server.replies = [(None, '{"name": "Ada"}'), (None, '{"name": "Ada", "age": 36}')]
    result = await run(chain(), {})
    assert result.state == RunState.SUCCEEDED, result.statusMessage
    first, repair, note = (r.body for r in server.requests)
    assert first["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "extract", "schema": CARD, "strict": False}}
    assert repair["response_format"] == first["response_format"]
    assert repair["messages"][:2] == [
        {"role": "user", "content": "The card of Ada, 36"},
        {"role": "assistant", "content": '{"name": "Ada"}'}]
    assert repair["messages"][2]["role"] == "user"
    assert "- at `$`: 'age' is a required property" in repair["messages"][2]["content"]
    assert "response_format" not in note
    assert note["messages"] == [{"role": "user", "content": "Hello Ada"}]
    record = result.step("extract")
    assert record.output == '{"name": "Ada", "age": 36}'
    assert [a.error_kind for a in record.attempts] == [ErrorKind.SCHEMA, None]
    assert record.usage is not None and record.usage.total_tokens == 2 * 41


async def test_after_its_repairs_the_step_fails_with_kind_schema(
        server: FakeOpenAIServer) -> None:  # noqa: F811
    server.replies = [(None, "not json")] * 2
    result = await run(chain(max_repairs=1), {})
    record = result.step("extract")
    assert record.state == RunState.FAILED and record.error_kind == ErrorKind.SCHEMA
    assert len(server.requests) == 2
    assert result.step("note").state == RunState.SKIPPED


async def test_a_gpt3_step_gets_json_mode_and_its_json_reply_is_not_cut(
        server: FakeOpenAIServer) -> None:  # noqa: F811
    card = json.dumps({"name": "Ada Augusta King, Countess of Lovelace", "age": 36})
    server.replies = [(None, card)]
    result = await run(chain("gpt-3"), {})
    assert result.state == RunState.SUCCEEDED, result.statusMessage
    assert result.step("extract").output == card  # more than max_words=5 words, whole
    assert server.requests[0].body["response_format"]["type"] == "json_schema"
    assert result.step("extract").capabilities == {"json_mode": "best-effort"}
