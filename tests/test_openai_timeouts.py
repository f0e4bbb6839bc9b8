"""A step's `timeout_s` against a hung OpenAI-compatible server, through the openai SDK: the
call is cancelled (the server sees its connection closed) long before the SDK's own 120 s,
and `retry.on: ["timeout"]` tries it again."""

import json
import select
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from chainlets.engine.models import ErrorKind, RunOptions, RunState
from chainlets.generators.openai_chat import REQUEST_TIMEOUT_S
from tests.test_openai_generator import FakeOpenAIServer, Received, run, serving

pytestmark = pytest.mark.e2e

TIMEOUT_S = 0.3
HANG_LIMIT_S = 30.0  # a hung request gives up by itself: the test never leaves a thread behind


@dataclass
class HungOpenAI(FakeOpenAIServer):
    """Reads the first `hangs` requests and never answers them: it waits for the client to
    close the connection, noting when; later requests are answered as FakeOpenAIServer does."""

    hangs: int = 1
    hung_up: threading.Event = field(default_factory=threading.Event)  # a client closed one

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake, answer = self, super().handler()

        class Handler(answer):  # type: ignore[valid-type,misc]
            def do_POST(self) -> None:
                with fake._lock:
                    hang = len(fake.requests) < fake.hangs
                if not hang:
                    super().do_POST()
                    return
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(Received(self.path, dict(self.headers), body))
                started = time.monotonic()
                while time.monotonic() - started < HANG_LIMIT_S:
                    readable, _, _ = select.select([self.connection], [], [], 0.05)
                    if readable and not self.connection.recv(1):  # EOF: the client hung up
                        fake.hung_up.set()
                        break
                self.close_connection = True

        return Handler


@pytest.fixture
def hung(monkeypatch: pytest.MonkeyPatch) -> Iterator[HungOpenAI]:
    with serving(HungOpenAI(), monkeypatch) as fake:
        yield fake


def chain(retry_on: list[str]) -> dict[str, Any]:
    return {"handle": "hung", "steps": [
        {"handle": "ask", "plugin": "openai", "prompt": "Say something",
         "timeout_s": TIMEOUT_S, "retry": {"max_attempts": 2, "on": retry_on,
                                           "initial_backoff_s": 0, "max_backoff_s": 0}}]}


async def test_a_hung_call_is_cancelled_at_timeout_s_and_retried_on_timeout(
        hung: HungOpenAI) -> None:
    result = await run(chain(["timeout"]), {}, RunOptions(llm="openai"))

    record = result.step("ask")
    assert (result.state, record.state) == (RunState.SUCCEEDED, RunState.SUCCEEDED)
    assert record.output == hung.reply_text(2) and len(hung.requests) == 2
    first, second = record.attempts
    assert first.error_kind is ErrorKind.TIMEOUT and second.error is None
    # The engine's limit fires first (it starts before the SDK's, which it also sets).
    assert first.error in ("StepTimeoutError: generator `openai` gave no answer within "
                           "timeout_s=0.3 s; the attempt was abandoned",
                           "GenerationTimeoutError: step `ask`: APITimeoutError: Request "
                           "timed out.")
    # The server saw the client close the hung request's connection (it waits for that at
    # most HANG_LIMIT_S, far below the SDK's own limit): the call was cancelled, not left
    # waiting.
    assert HANG_LIMIT_S < REQUEST_TIMEOUT_S and hung.hung_up.wait(HANG_LIMIT_S)


async def test_a_timeout_not_in_retry_on_fails_the_step_after_one_attempt(
        hung: HungOpenAI) -> None:
    result = await run(chain(["model"]), {}, RunOptions(llm="openai"))

    record = result.step("ask")
    assert (result.state, record.error_kind, len(record.attempts)) == (
        RunState.FAILED, ErrorKind.TIMEOUT, 1)
    assert len(hung.requests) == 1 and hung.hung_up.wait(HANG_LIMIT_S)
