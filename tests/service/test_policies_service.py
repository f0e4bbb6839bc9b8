"""Per-step policies through the service in process: status shows every retry's error kind
and what a catch caught, read back from the store."""

import json

import pytest

from chainlets.engine.models import CaughtError, ErrorKind, RunState
from chainlets.errors import GenerationError, RequestError, TransientGenerationError
from tests.service.test_operations import FAST, Harness

CHAIN = {"handle": "caught", "inputs": [{"name": "topic"}], "steps": [
    {"handle": "title", "plugin": "mock", "prompt": "A title about {topic}",
     "retry": {"max_attempts": 2, "on": ["transient"], "jitter": False},
     "timeout_s": 30},
    {"handle": "song", "plugin": "mock", "prompt": "A song called {title}",
     "retry": {"max_attempts": 2, "on": ["model"]}, "catch": {"step": "apology"}},
    {"handle": "apology", "plugin": "mock", "prompt": "Apologise for {title}: {error}"},
    {"handle": "review", "plugin": "mock", "prompt": "Review {song}"}],
    "output": "review", "deadline_s": 60}


async def test_status_shows_retries_and_the_catch_of_a_stored_invocation(
        harness: Harness) -> None:
    harness.fake.replies = {"title": [TransientGenerationError("503"), "T"],
                            "song": GenerationError("refused"),
                            "apology": lambda r: f"sorry: {r.messages[-1].content}"}
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"}, options=FAST)
    status = await harness.final(ref.invocation_id)

    assert status.state == RunState.SUCCEEDED
    title, song, apology = status.step("title"), status.step("song"), status.step("apology")
    assert [a.error_kind for a in title.attempts] == [ErrorKind.MODEL, None]
    assert [a.error_kind for a in song.attempts] == [ErrorKind.MODEL, ErrorKind.MODEL]
    assert apology.output == "sorry: Apologise for T: GenerationError: refused"
    assert (song.state, song.output) == (RunState.SUCCEEDED, apology.output)
    assert song.caught == CaughtError(error="GenerationError: refused",
                                      error_kind=ErrorKind.MODEL, step="apology")
    assert status.output == "<review>" and harness.fake.calls("review") == 1
    shown = json.loads(status.model_dump_json())["steps"][1]
    assert shown["caught"] == {"error": "GenerationError: refused", "error_kind": "model",
                               "step": "apology"}
    assert shown["attempts"][0]["error_kind"] == "model"


async def test_a_bad_policy_is_refused_before_anything_runs(harness: Harness) -> None:
    bad = {**CHAIN, "steps": [{**CHAIN["steps"][0], "retry": {"on": ["timeouts"]}},  # type: ignore[index]
                              *CHAIN["steps"][1:]]}  # type: ignore[index]
    with pytest.raises(RequestError, match=r"chain.steps\[`title`\].retry.on\[0\]: not an error "
                                           r"kind \(did you mean `timeout`\?\)"):
        await harness.op("run_chain", chain=bad, inputs={"topic": "tea"})
    assert harness.fake.requests == []
