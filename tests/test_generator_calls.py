"""Cancelling a generator's model call from its caller across a chainlet boundary that, like
truss's, does not pass a caller's cancellation on (chainlets.generators.calls)."""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from chainlets.engine.models import Generation, GenerationRequest
from chainlets.generators.calls import (
    CANCEL_REPLY,
    CallCancelledError,
    CancellableGenerator,
    CancellingCaller,
    InFlightCalls,
    cancellable,
)
from chainlets.generators.mock import MockGenerator
from chainlets.language.spec import ChatMessage
from mocks.fake_generator import FakeGenerator

REQUEST = GenerationRequest(step="slow", plugin="mock",
                            messages=[ChatMessage(role="user", content="hi")])


@dataclass
class Detached:
    """A chainlet boundary like truss's: the callee runs in a task of its own, which runs on
    when its caller stops waiting."""

    chainlet: CancellableGenerator
    tasks: list[asyncio.Task[Generation]] = field(default_factory=list)

    async def run_remote(self, request: GenerationRequest, cancel: str) -> Generation:
        task = asyncio.get_running_loop().create_task(self.chainlet.run_remote(request, cancel))
        self.tasks.append(task)
        return await asyncio.shield(task)


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


async def _in_flight(fake: FakeGenerator) -> None:
    await _until(lambda: fake.in_flight > 0)


async def test_a_cancelled_wait_cancels_the_call_in_the_generator() -> None:
    fake = FakeGenerator(latency_s=30)
    remote = Detached(fake)
    caller = CancellingCaller(remote, new_id=lambda: "call-1")
    waiting = asyncio.create_task(caller.run_remote(REQUEST))
    await _in_flight(fake)
    assert fake.requests[0].call_id == "call-1"
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await caller.drain()
    with pytest.raises(CallCancelledError, match="step `slow`: call call-1 was cancelled"):
        await remote.tasks[0]
    assert fake.cancels == ["call-1"] and fake.in_flight == 0
    assert await remote.tasks[1] == CANCEL_REPLY


async def test_without_the_cancel_the_detached_call_runs_on() -> None:
    fake = FakeGenerator(latency_s=30)
    remote = Detached(fake)
    waiting = asyncio.create_task(remote.run_remote(REQUEST, None))  # type: ignore[arg-type]
    await _in_flight(fake)
    waiting.cancel()
    await asyncio.sleep(0.01)
    assert fake.in_flight == 1 and not remote.tasks[0].done()
    remote.tasks[0].cancel()


async def test_a_cancel_that_overtakes_its_call_refuses_the_call() -> None:
    calls = InFlightCalls()
    assert calls.cancel("early") is False
    with pytest.raises(CallCancelledError, match="cancelled by its caller before it started"):
        await calls.run(REQUEST.model_copy(update={"call_id": "early"}), FakeGenerator().run_remote)


async def test_a_cancel_of_the_task_itself_stays_a_cancellation() -> None:
    calls = InFlightCalls()
    fake = FakeGenerator(latency_s=30)
    task = asyncio.create_task(calls.run(REQUEST.model_copy(update={"call_id": "c"}),
                                         fake.run_remote))
    await _in_flight(fake)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(calls) == 0


async def test_the_mock_generator_cancels_a_call_by_name() -> None:
    mock = MockGenerator()
    mock._model.script.latency_ms = 30_000
    call = asyncio.create_task(mock.run_remote(REQUEST.model_copy(update={"call_id": "m"})))
    await _until(lambda: len(mock._calls) > 0)
    assert await mock.run_remote(cancel="m") == CANCEL_REPLY
    with pytest.raises(CallCancelledError):
        await call


def test_only_generators_that_take_a_cancel_are_wrapped() -> None:
    class OneArgument:
        async def run_remote(self, request: GenerationRequest) -> Any:
            return Generation(text="x")

    plain = OneArgument()
    assert cancellable(plain) is plain
    assert isinstance(cancellable(FakeGenerator()), CancellingCaller)


def test_a_request_with_a_call_id_round_trips_through_json() -> None:
    request = REQUEST.model_copy(update={"call_id": "abc"})
    assert GenerationRequest.model_validate_json(request.model_dump_json()) == request
