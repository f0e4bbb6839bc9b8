"""Capabilities on the real openai SDK, against a loopback OpenAI-compatible server: JSON mode
sets `response_format`, streaming reads server-sent events, gpt-3 concatenates the system
prompt."""

import io
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from chainlets.engine.models import RunState
from chainlets.language.capabilities import Capability, Served
from chainlets.language.spec import parse_chain
from tests.test_openai_generator import USAGE, FakeOpenAIServer, Received, run, serving

pytestmark = pytest.mark.e2e


class StreamingFakeOpenAI(FakeOpenAIServer):
    """The fake OpenAI, answering `"stream": true` with server-sent events, one word a chunk,
    and the usage in a last chunk without choices (as `stream_options.include_usage` asks)."""

    def chunks(self, received: Received) -> Iterator[dict[str, Any]]:
        status, payload = self.answer(received)
        assert status == 200 and isinstance(payload, dict), payload
        base = {"id": payload["id"], "object": "chat.completion.chunk",
                "created": payload["created"], "model": payload["model"]}
        for word in payload["choices"][0]["message"]["content"].split(" "):
            yield {**base, "choices": [{"index": 0, "delta": {"content": word + " "},
                                        "finish_reason": None}]}
        yield {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield {**base, "choices": [], "usage": USAGE}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake, plain = self, super().handler()

        class Handler(plain):  # type: ignore[valid-type,misc]  # a class made at run time
            def do_POST(self) -> None:
                # The plain fake's class is made at run time: mypy cannot type its streams.
                length = int(self.headers["Content-Length"])
                raw: bytes = self.rfile.read(length)  # type: ignore[has-type]
                body = json.loads(raw)
                if not body.get("stream"):
                    self.rfile = io.BytesIO(raw)  # the plain fake reads it again
                    super().do_POST()
                    return
                received = Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                    body)
                events = [f"data: {json.dumps(chunk)}\n\n" for chunk in fake.chunks(received)]
                data = "".join([*events, "data: [DONE]\n\n"]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@pytest.fixture
def streaming_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[StreamingFakeOpenAI]:
    with serving(StreamingFakeOpenAI(), monkeypatch) as fake:
        yield fake


def one(**step: Any) -> Any:
    return parse_chain({"handle": "one", "steps": [
        {"handle": "ask", "plugin": "openai", "prompt": "Reply in JSON", **step}]})


async def test_json_mode_sets_response_format(streaming_server: StreamingFakeOpenAI) -> None:
    result = await run(one(capabilities={"json_mode": "native"}), {})
    assert result.state == RunState.SUCCEEDED, result.statusMessage
    body = streaming_server.requests[0].body
    assert body["response_format"] == {"type": "json_object"}
    assert "stream" not in body or body["stream"] is False
    assert result.step("ask").capabilities == {Capability.JSON_MODE: Served.NATIVE}


async def test_without_json_mode_no_response_format(
        streaming_server: StreamingFakeOpenAI) -> None:
    result = await run(one(capabilities={"json_mode": "disable"}), {})
    assert result.state == RunState.SUCCEEDED, result.statusMessage
    assert "response_format" not in streaming_server.requests[0].body
    assert result.step("ask").capabilities == {Capability.JSON_MODE: Served.DISABLED}


async def test_streaming_reads_the_events_whole(streaming_server: StreamingFakeOpenAI) -> None:
    result = await run(one(capabilities={"streaming": "best-effort"}), {})
    assert result.state == RunState.SUCCEEDED, result.statusMessage
    body = streaming_server.requests[0].body
    assert (body["stream"], body["stream_options"]) == (True, {"include_usage": True})
    record = result.step("ask")
    assert record.output == streaming_server.reply_text(1) + " "
    assert record.usage is not None and record.usage.total_tokens == USAGE["total_tokens"]
    assert record.capabilities == {Capability.STREAMING: Served.NATIVE}


async def test_gpt3_sends_its_system_prompt_in_the_prompt(
        streaming_server: StreamingFakeOpenAI) -> None:
    chain = parse_chain({"handle": "one", "steps": [
        {"handle": "ask", "plugin": "gpt-3", "plugin_config": {"max_words": 50},
         "system_prompt": "You are terse.", "prompt": "Say hi"}]})
    result = await run(chain, {})
    assert result.state == RunState.SUCCEEDED, result.statusMessage
    assert streaming_server.requests[0].body["messages"] == [
        {"role": "user", "content": "You are terse.\n\nSay hi"}]
    assert result.step("ask").capabilities == {Capability.SYSTEM_PROMPT: Served.BEST_EFFORT}
