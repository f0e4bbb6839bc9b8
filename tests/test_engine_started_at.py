"""`run_chain(started_at=…)`: a resumed invocation's deadline counts from its first start, so a
run begun past it calls no model and fails what is left; one begun within it gets the rest."""

from datetime import UTC, datetime, timedelta

from chainlets.engine.models import InvocationResult, RunOptions, RunState, StepRecord
from chainlets.engine.scheduler import run_chain
from chainlets.language.compiler import compile_chain
from mocks.fake_generator import FakeGenerator

CHAIN = compile_chain({"handle": "two", "steps": [
    {"handle": "first", "plugin": "mock", "prompt": "One"},
    {"handle": "second", "plugin": "mock", "prompt": "Two {first}"}]})
DONE = InvocationResult(chain="two", steps=[StepRecord(handle="first",
                                                       state=RunState.SUCCEEDED, output="1")])


async def test_a_run_begun_past_its_deadline_calls_nothing_and_fails_the_rest() -> None:
    fake = FakeGenerator(default=lambda r: f"<{r.step}>")
    result = await run_chain(CHAIN, {}, {"mock": fake}, RunOptions(deadline_s=60),
                             previous=DONE, started_at=datetime.now(UTC) - timedelta(seconds=61))
    assert fake.requests == []
    assert result.state == RunState.FAILED
    assert result.step("first").output == "1"  # committed earlier: kept
    assert result.statusMessage == ("the run's deadline (deadline_s=60 s) passed: 1 unfinished "
                                    "step(s) failed: `second`")
    assert "deadline_s=60 s" in (result.step("second").statusMessage or "")


async def test_a_run_begun_within_its_deadline_has_only_what_is_left_of_it() -> None:
    slow = FakeGenerator(default=lambda r: f"<{r.step}>", latency_s=30)
    result = await run_chain(CHAIN, {}, {"mock": slow}, RunOptions(deadline_s=60),
                             previous=DONE,
                             started_at=datetime.now(UTC) - timedelta(seconds=59.8))
    assert result.state == RunState.FAILED  # 0.2 s were left, not 60
    assert [r.step for r in slow.requests] == ["second"]
    assert "DeadlineExceeded" in (result.step("second").statusMessage or "")
