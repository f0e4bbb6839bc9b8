"""Odd replies of an OpenAI-compatible server, through `chainrunner run --llm openai`.

A reply without text is a failed (retried) attempt, never an empty success; a 200 whose body is
not a chat completion names the step, the backend and its URL. The server is the loopback fake
of test_openai_generator.py; the CLI reaches it through OPENAI_BASE_URL.
"""

import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import invoke, write_json
from tests.test_openai_generator import FakeOpenAIServer, server

__all__ = ["server"]  # the fixture

pytestmark = pytest.mark.e2e


def run_one_step(tmp_path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    spec = write_json(tmp_path / "c.json", {"handle": "c", "steps": [
        {"handle": "ask", "plugin": "openai", "prompt": "Say something"}]})
    result = invoke("run", spec, "--llm", "openai", "--json", *args)
    document: dict[str, Any] = json.loads(result.stdout)
    return result.exit_code, document["steps"][0]


NO_TEXT = ("TransientGenerationError: step `ask`: the openai backend (model `gpt-4o-mini`) "
           "returned no text (content null, finish_reason `stop`)")


def test_a_reply_without_text_fails_the_step_after_its_attempts(
        server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.replies = [(None, None)] * 2
    code, step = run_one_step(tmp_path, "--max-attempts", "2")
    assert code == 1
    assert (step["state"], step["output"], step["statusMessage"]) == ("failed", None, NO_TEXT)
    assert [attempt["error"] for attempt in step["attempts"]] == [NO_TEXT] * 2


def test_a_reply_without_text_is_retried(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.replies = [(None, "")]
    code, step = run_one_step(tmp_path, "--max-attempts", "2")
    assert code == 0
    assert step["output"] == server.reply_text(2)
    assert [attempt["error"] for attempt in step["attempts"]] == [
        NO_TEXT.replace("content null", 'content ""'), None]


def test_a_refusal_fails_the_step_saying_why(server: FakeOpenAIServer, tmp_path: Path) -> None:
    refusal = {"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
               "choices": [{"index": 0, "finish_reason": "stop", "message": {
                   "role": "assistant", "content": None, "refusal": "I can't help with that"}}]}
    server.replies = [("application/json", json.dumps(refusal).encode())]
    code, step = run_one_step(tmp_path)
    assert code == 1
    assert step["statusMessage"] == ("GenerationError: step `ask`: the model `gpt-4o-mini` "
                                     "refused: I can't help with that")
    assert len(step["attempts"]) == 1


@pytest.mark.parametrize(("content_type", "body", "what"), [
    ("application/json", b"<html>Bad gateway</html>",
     "a body that is not JSON (Expecting value at line 1, column 1)"),
    ("text/html", b"<html>Bad gateway</html>",
     "a body that is not JSON ('<html>Bad gateway</html>')"),
], ids=["declared-json", "html"])
def test_a_200_that_is_not_json_names_the_step_and_the_backend(
        server: FakeOpenAIServer, tmp_path: Path, content_type: str, body: bytes,
        what: str) -> None:
    server.replies = [(content_type, body)]
    code, step = run_one_step(tmp_path)
    assert code == 1
    base_url = os.environ["OPENAI_BASE_URL"]
    assert step["statusMessage"] == (
        f"GenerationError: step `ask`: the openai backend at {base_url}/ answered HTTP 200 with "
        f"{what}; check that OPENAI_BASE_URL names an OpenAI-compatible API")
    assert len(step["attempts"]) == 1
