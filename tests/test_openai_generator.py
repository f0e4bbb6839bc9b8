"""The openai backend end to end: runner chainlet → openai SDK → a real loopback HTTP server."""

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
import truss_chains as chains

from chainlets.engine.models import ChainInputs, InvocationResult, RunOptions, RunState, Usage
from chainlets.language.spec import ChainSpec, parse_chain
from chainlets.runner import ChainRunner

pytestmark = pytest.mark.e2e

API_KEY = "sk-test-chainrunner"
COMPLETION_WORDS = 30
USAGE = {"prompt_tokens": 11, "completion_tokens": COMPLETION_WORDS,
         "total_tokens": 11 + COMPLETION_WORDS}

# The Steamship joke chain, verbatim, as shipped.
JOKE_CHAIN: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "chains/specs/joke.json").read_text(encoding="utf-8"))


class Serves(Protocol):
    """A fake server: a request handler class to serve."""

    def handler(self) -> type[BaseHTTPRequestHandler]: ...


F = TypeVar("F", bound=Serves)


@dataclass(frozen=True)
class Received:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeOpenAIServer:
    """Answers POST /v1/chat/completions like OpenAI, on loopback, in a background thread.

    Each reply is `COMPLETION_WORDS` words unique to the request (`r<n>w<i>`); `statuses`
    scripts error answers (HTTP status per request, consumed in order) before plain 200s;
    `tool_calls` scripts replies that call tools (a list of (name, arguments) per reply,
    consumed in order by requests that offer `tools`).
    """

    statuses: list[int] = field(default_factory=list)
    # Scripted 200 replies, consumed in order before the normal ones: a raw body with its
    # content type, or (None, content) for a completion whose message content is `content`.
    replies: list[tuple[str | None, bytes | str | None]] = field(default_factory=list)
    requests: list[Received] = field(default_factory=list)
    tool_calls: list[list[tuple[str, dict[str, Any]]]] = field(default_factory=list)
    delay_s: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arrive(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def reply_text(self, number: int) -> str:
        return " ".join(f"r{number}w{i}" for i in range(COMPLETION_WORDS))

    def answer(self, received: Received) -> tuple[int, dict[str, Any] | tuple[str, bytes]]:
        with self._lock:
            self.requests.append(received)
            number = len(self.requests)
            status = self.statuses.pop(0) if self.statuses else 200
            scripted = self.replies.pop(0) if self.replies and status == 200 else None
            calls = self.tool_calls.pop(0) if self.tool_calls and status == 200 \
                and received.body.get("tools") else None
        content: str | None = self.reply_text(number)
        if scripted is not None:
            content_type, raw = scripted
            if content_type is not None:
                assert isinstance(raw, bytes)
                return 200, (content_type, raw)
            assert not isinstance(raw, bytes)
            content = raw
        if received.path != "/v1/chat/completions":
            return 404, {"error": {"message": f"no route {received.path}", "type": "invalid"}}
        if status != 200:
            return status, {"error": {"message": f"scripted {status}", "type": "scripted",
                                      "code": None, "param": None}}
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if calls is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [
                {"id": f"call_{number}_{i}", "type": "function",
                 "function": {"name": name, "arguments": json.dumps(arguments)}}
                for i, (name, arguments) in enumerate(calls)]}
        return 200, {
            "id": f"chatcmpl-{number}", "object": "chat.completion", "created": 1_700_000_000,
            "model": received.body["model"],
            "choices": [{"index": 0, "logprobs": None, "message": message,
                         "finish_reason": "stop" if calls is None else "tool_calls"}],
            "usage": USAGE,
        }

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.arrive()
                try:
                    time.sleep(fake.delay_s)  # a model that takes a while, per request thread
                    status, payload = fake.answer(Received(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                finally:
                    fake.leave()
                content_type, data = payload if isinstance(payload, tuple) \
                    else ("application/json", json.dumps(payload).encode())
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: pytest shows failures, not access logs."""

        return Handler


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    """A fake OpenAI on a free loopback port; the SDK finds it through its standard env vars."""
    with serving(FakeOpenAIServer(), monkeypatch) as fake:
        yield fake


@contextlib.contextmanager
def serving(fake: F, monkeypatch: pytest.MonkeyPatch) -> Iterator[F]:
    """`fake` on a free loopback port until the block ends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    httpd.daemon_threads = True
    # A short poll interval: shutdown() waits for the serving loop to notice.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01},
                              name="fake-openai", daemon=True)
    thread.start()
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                  "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.delenv("CHAINRUNNER_OPENAI_MODEL", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{httpd.server_address[1]}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    try:
        yield fake
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


FAST = RunOptions(llm="openai", initial_backoff_s=0)


async def run(chain: ChainSpec | dict[str, Any], inputs: dict[str, str],
              options: RunOptions = FAST) -> InvocationResult:
    """Run `chain` through the runner chainlet, wired by truss's run_local like the CLI does."""
    spec = chain if isinstance(chain, ChainSpec) else parse_chain(chain)
    with chains.run_local():
        runner = ChainRunner()
        answer = await runner.run_remote(spec, ChainInputs(inputs), options)
    assert isinstance(answer.root, InvocationResult)
    return answer.root


def one_step(plugin: str, plugin_config: dict[str, Any]) -> ChainSpec:
    return parse_chain({"handle": "one", "steps": [
        {"handle": "ask", "plugin": plugin, "plugin_config": plugin_config,
         "prompt": "Say something"}]})


async def test_joke_chain_runs_through_the_openai_sdk(server: FakeOpenAIServer) -> None:
    result = await run(JOKE_CHAIN, {"topic": "lighthouses"})

    assert result.state == RunState.SUCCEEDED and result.statusMessage is None
    joke = " ".join(server.reply_text(1).split()[:10])
    tell, judge = result.step("tell-joke"), result.step("judge-joke")
    assert (tell.state, tell.output) == (RunState.SUCCEEDED, joke)
    assert (judge.state, judge.output) == (RunState.SUCCEEDED,
                                           " ".join(server.reply_text(2).split()[:10]))
    assert result.output == judge.output
    assert [len(r.attempts) for r in result.steps] == [1, 1]
    assert tell.usage == judge.usage == Usage.model_validate(USAGE)

    assert len(server.requests) == 2
    first, second = server.requests
    assert first.path == second.path == "/v1/chat/completions"
    assert first.headers["authorization"] == second.headers["authorization"] == \
        f"Bearer {API_KEY}"
    assert first.body["messages"] == [
        {"role": "user", "content": "Tell me a joke about lighthouses"}]
    assert second.body["messages"] == [
        {"role": "user", "content": f"A comedian told a joke:\n\n{joke}\n\n Is it funny? YES/NO:"}]
    # `max_words` caps the output by truncation and asks the model for few tokens up front.
    assert first.body["max_tokens"] == second.body["max_tokens"] == 10 * 2 + 8


async def test_rate_limits_are_retried_until_the_call_succeeds(server: FakeOpenAIServer) -> None:
    server.statuses = [429, 429]
    result = await run(one_step("openai", {}), {})

    record = result.step("ask")
    assert result.state == record.state == RunState.SUCCEEDED
    assert record.output == server.reply_text(3)
    error = ("BackendOverloadedError: step `ask`: OpenAI API returned HTTP 429: "
             "scripted 429")
    assert [(a.number, a.error) for a in record.attempts] == [(1, error), (2, error), (3, None)]
    assert len(server.requests) == 3


async def test_server_errors_fail_the_step_after_three_attempts(server: FakeOpenAIServer) -> None:
    server.statuses = [500] * 10
    result = await run(JOKE_CHAIN, {"topic": "lighthouses"})

    error = "TransientGenerationError: step `tell-joke`: OpenAI API returned HTTP 500: scripted 500"
    tell, judge = result.step("tell-joke"), result.step("judge-joke")
    assert (tell.state, tell.statusMessage) == (RunState.FAILED, error)
    assert [a.error for a in tell.attempts] == [error] * 3
    assert (judge.state, judge.statusMessage) == (
        RunState.SKIPPED, "not run: depends on `tell-joke`, which failed")
    assert judge.attempts == []
    assert result.state == RunState.FAILED
    assert result.statusMessage == f"step `tell-joke` failed: {error}"
    assert result.output is None
    assert len(server.requests) == 3


async def test_bad_requests_are_not_retried(server: FakeOpenAIServer) -> None:
    server.statuses = [400]
    result = await run(one_step("openai", {}), {})

    record = result.step("ask")
    error = "GenerationError: step `ask`: OpenAI API returned HTTP 400: scripted 400"
    assert (record.state, record.statusMessage) == (RunState.FAILED, error)
    assert [(a.number, a.error) for a in record.attempts] == [(1, error)]
    assert len(server.requests) == 1


@pytest.mark.parametrize(("plugin_config", "expected"), [
    ({"model": "gpt-test", "temperature": 0.25, "max_tokens": 42, "top_p": 0.5,
      "stop": ["END", "STOP"], "seed": 7},
     {"model": "gpt-test", "temperature": 0.25, "max_tokens": 42, "top_p": 0.5,
      "stop": ["END", "STOP"], "seed": 7}),
    ({"stop": "END"}, {"model": "gpt-4o-mini", "stop": ["END"]}),
    ({}, {"model": "gpt-4o-mini"}),
], ids=["every-parameter", "stop-as-string", "defaults"])
async def test_openai_plugin_config_is_forwarded(server: FakeOpenAIServer,
                                                 plugin_config: dict[str, Any],
                                                 expected: dict[str, Any]) -> None:
    result = await run(one_step("openai", plugin_config), {})

    assert result.state == RunState.SUCCEEDED
    (request,) = server.requests
    assert request.body == {**expected, "messages": [{"role": "user", "content": "Say something"}]}


async def test_a_missing_api_key_fails_the_step_naming_the_variable(
        server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY")
    result = await run(JOKE_CHAIN, {"topic": "lighthouses"})

    tell = result.step("tell-joke")
    assert tell.state == RunState.FAILED
    assert tell.statusMessage == (
        "GenerationError: step `tell-joke`: no OpenAI API key: set $OPENAI_API_KEY (or the truss "
        "secret `openai_api_key`), or run with --llm mock")
    assert len(tell.attempts) == 1
    assert result.step("judge-joke").state == RunState.SKIPPED
    assert result.state == RunState.FAILED
    assert server.requests == []


async def test_independent_steps_reach_the_server_at_the_same_time(
        server: FakeOpenAIServer) -> None:
    """Parallelism seen from outside: the fan-out's four calls are in flight together."""
    server.delay_s = 0.2
    chain = {"handle": "fan", "steps": [
        {"handle": "topic", "plugin": "gpt-3", "plugin_config": {"max_words": 3},
         "prompt": "Pick a topic"},
        *({"handle": f"joke-{i}", "plugin": "gpt-3", "plugin_config": {"max_words": 5},
           "prompt": f"Joke {i} about {{topic}}"} for i in range(4)),
        {"handle": "best", "plugin": "gpt-3", "plugin_config": {"max_words": 5},
         "prompt": "Best of: {joke-0} | {joke-1} | {joke-2} | {joke-3}"}]}
    result = await run(chain, {})
    assert result.state == RunState.SUCCEEDED
    assert len(server.requests) == 6
    assert server.max_in_flight == 4
