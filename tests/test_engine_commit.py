"""The engine's commit hook: a step's success is awaited through it before dependents start."""

import asyncio

import pytest

from chainlets.engine.models import GenerationRequest, RunOptions, RunState, StepRecord
from chainlets.engine.scheduler import run_chain
from chainlets.language.compiler import compile_chain
from chainlets.language.spec import parse_chain
from mocks.fake_generator import FakeGenerator

FAST = RunOptions(llm="mock", initial_backoff_s=0, max_backoff_s=0)
CHAIN = compile_chain(parse_chain({"handle": "t", "steps": [
    {"handle": "a", "plugin": "mock", "prompt": "go"},
    {"handle": "b", "plugin": "mock", "prompt": "{a}"},
    {"handle": "c", "plugin": "mock", "prompt": "{a}"},
    {"handle": "d", "plugin": "mock", "prompt": "{b}{c}"}]}))


class StoreLike:
    """Records what was committed, and when dependents called the model, in one timeline."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.timeline: list[str] = []
        self.records: list[StepRecord] = []
        self.fail_on = fail_on

    async def commit(self, record: StepRecord) -> None:
        await asyncio.sleep(0.01)  # a commit that takes a while, as a database's does
        if record.handle == self.fail_on:
            raise OSError("database is gone")
        self.timeline.append(f"commit {record.handle}")
        self.records.append(record)

    def reply(self, request: GenerationRequest) -> str:
        self.timeline.append(f"call {request.step}")
        return request.step.upper()


async def test_dependents_start_only_after_the_result_is_committed() -> None:
    store = StoreLike()
    fake = FakeGenerator(default=store.reply)
    result = await run_chain(CHAIN, {}, {"mock": fake}, FAST, commit=store.commit)
    assert result.state == RunState.SUCCEEDED
    timeline = store.timeline
    assert timeline.index("commit a") < min(timeline.index("call b"), timeline.index("call c"))
    assert timeline.index("call d") > max(timeline.index("commit b"), timeline.index("commit c"))
    assert sorted(r.handle for r in store.records) == ["a", "b", "c", "d"]
    committed = {r.handle: r for r in store.records}
    assert committed["a"].state == RunState.SUCCEEDED and committed["a"].output == "A"
    assert committed["d"].output == result.step("d").output == "D"


async def test_a_commit_that_raises_ends_the_run_with_its_error() -> None:
    store = StoreLike(fail_on="b")
    fake = FakeGenerator(default=store.reply)
    with pytest.raises(OSError, match="database is gone"):
        await run_chain(CHAIN, {}, {"mock": fake}, FAST, commit=store.commit)
    assert fake.calls("d") == 0
