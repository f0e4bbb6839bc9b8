"""Time bounds and backends through `chainrunner run`: step timeout, deadline, backoff bounds,
the backend and model on every record, and the per-backend gate."""

import asyncio
import json
from pathlib import Path
from typing import Any

import pydantic
import pytest

from chainlets.engine.models import Generation, GenerationRequest, RunOptions, RunState
from chainlets.engine.scheduler import run_chain
from chainlets.errors import BackendOverloadedError
from chainlets.language.compiler import compile_chain
from tests.test_cli import JOKE, clean_env, invoke

__all__ = ["clean_env"]


def run_json(*args: str | Path) -> tuple[int, dict[str, Any]]:
    result = invoke("run", JOKE, "-i", "topic=x", "--llm", "mock", "--json", *args)
    return result.exit_code, json.loads(result.stdout)


def test_an_attempt_past_the_step_timeout_is_a_timeout_and_retried(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINRUNNER_MOCK_LATENCY_MS", "5000")
    code, result = run_json("--step-timeout", "0.2", "--max-attempts", "2")
    assert code == 1
    tell = result["steps"][0]
    error = ("StepTimeoutError: generator `mock` gave no answer within step_timeout_s=0.2 s; "
             "the attempt was abandoned")
    assert [(a["error"], a["error_kind"]) for a in tell["attempts"]] == [(error, "timeout")] * 2
    assert (tell["state"], tell["error_kind"], tell["backend"]) == ("failed", "timeout", "mock")


def test_the_deadline_ends_the_run_naming_the_unfinished_steps(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINRUNNER_MOCK_LATENCY_MS", "5000")
    code, result = run_json("--deadline", "0.3")
    assert code == 1
    assert result["statusMessage"] == ("the run's deadline (deadline_s=0.3 s) passed: 2 "
                                       "unfinished step(s) failed: `tell-joke`, `judge-joke`")
    message = ("DeadlineExceeded: the run's deadline (deadline_s=0.3 s) passed before the step "
               "finished")
    assert [(s["state"], s["error_kind"], s["statusMessage"]) for s in result["steps"]] == [
        ("failed", "timeout", message)] * 2


@pytest.mark.parametrize(("options", "message"), [
    ({"max_backoff_s": 1e9}, "Input should be less than or equal to 60"),
    ({"initial_backoff_s": 1e9, "max_backoff_s": 1e9}, "less than or equal to 60"),
    ({"initial_backoff_s": 10, "max_backoff_s": 5},
     "initial_backoff_s (10) must be at most max_backoff_s (5); lower it or raise "
     "max_backoff_s (at most 60)"),
    ({"step_timeout_s": 0}, "greater than 0"),
    ({"deadline_s": 1e9}, "less than or equal to 86400"),
], ids=["max-backoff", "both", "initial-over-max", "no-timeout", "deadline"])
def test_time_options_are_bounded(options: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as excinfo:
        RunOptions.model_validate(options)
    assert message in str(excinfo.value)


@pytest.mark.parametrize("args", [("--step-timeout", "0"), ("--deadline", "1e9"),
                                  ("--max-backend-calls", "0")])
def test_time_flags_out_of_range_exit_2(args: tuple[str, str]) -> None:
    result = invoke("run", JOKE, "-i", "topic=x", "--llm", "mock", *args)
    assert result.exit_code == 2 and args[0] in result.stderr


def test_every_record_names_its_backend_and_model() -> None:
    code, result = run_json()
    assert code == 0
    assert [(s["backend"], s["model"]) for s in result["steps"]] == [("mock", "mock")] * 2


class _Overloaded:
    """Refuses the first call as overloaded; counts calls in flight."""

    def __init__(self) -> None:
        self.calls = 0
        self.in_flight = 0
        self.most = 0

    async def run_remote(self, request: GenerationRequest) -> Generation:
        self.calls += 1
        if self.calls == 1:
            raise BackendOverloadedError("HTTP 429")
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        return Generation(text="ok", model="fake-1")


async def test_calls_to_one_backend_are_capped_and_back_off_together() -> None:
    chain = compile_chain({"handle": "fan", "steps": [
        {"handle": f"s{i}", "plugin": "mock", "prompt": "x"} for i in range(20)]})
    fake = _Overloaded()
    result = await run_chain(chain, {}, {"mock": fake}, RunOptions(
        llm="mock", max_backend_calls=3, initial_backoff_s=0.05, max_backoff_s=0.05))
    assert result.state == RunState.SUCCEEDED
    assert fake.most == 3  # the cap, never more
    assert fake.calls == 21  # one refusal, then each step once: no storm of retries
    assert {(s.backend, s.model) for s in result.steps} == {("mock", "fake-1")}


def test_the_default_cap_is_64() -> None:
    assert RunOptions().max_backend_calls == 64
