"""AttemptTimer: a run's per-attempt limits on one loop timer, told apart from other cancels."""

import asyncio

import pytest

from chainlets.engine.failures import StepTimeoutError
from chainlets.engine.models import AttemptRecord, ErrorKind
from chainlets.engine.retry import RetryPolicy
from chainlets.engine.timeouts import AttemptTimer

ONCE = RetryPolicy(max_attempts=1)


async def _never(_: str) -> str:
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def _at_once(text: str) -> str:
    return text


async def test_every_attempt_past_its_limit_times_out_whatever_ended_between() -> None:
    timer = AttemptTimer(0.01)
    records: list[list[AttemptRecord]] = [[], [], []]
    slow_first = asyncio.create_task(ONCE.call(_never, "a", records[0], "mock", timer=timer))
    await asyncio.sleep(0)
    quick = asyncio.create_task(ONCE.call(_at_once, "b", records[1], "mock", timer=timer))
    slow_last = asyncio.create_task(ONCE.call(_never, "c", records[2], "mock", timer=timer))
    results = await asyncio.gather(slow_first, quick, slow_last, return_exceptions=True)
    assert isinstance(results[0], StepTimeoutError)
    assert results[1] == "b"
    assert isinstance(results[2], StepTimeoutError)
    assert str(results[2]) == ("generator `mock` gave no answer within step_timeout_s=0.01 s; "
                               "the attempt was abandoned")
    assert [r.error_kind for r in records[0] + records[1] + records[2]] == \
        [ErrorKind.TIMEOUT, None, ErrorKind.TIMEOUT]


async def test_a_cancel_from_outside_is_a_cancel_not_a_timeout() -> None:
    timer = AttemptTimer(60)
    task = asyncio.create_task(ONCE.call(_never, "a", [], "mock", timer=timer))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_an_attempt_timed_out_is_retried_under_the_policy() -> None:
    answers = iter([False, True])

    async def slow_then_quick(text: str) -> str:
        if not next(answers):
            await asyncio.Event().wait()
        return text

    attempts: list[AttemptRecord] = []
    policy = RetryPolicy(max_attempts=2, initial_backoff_s=0, max_backoff_s=0)
    assert await policy.call(slow_then_quick, "ok", attempts, "mock",
                             timer=AttemptTimer(0.01)) == "ok"
    assert [a.error_kind for a in attempts] == [ErrorKind.TIMEOUT, None]
