"""BackendGate: the per-backend cap's slots, taken at once or waited for, never lost."""

import asyncio

from chainlets.engine.backends import BackendGate


async def test_a_free_slot_is_taken_at_once_and_a_full_gate_makes_callers_wait() -> None:
    gate = BackendGate("mock", 1)
    assert gate.try_enter()
    assert not gate.try_enter()
    waiting = asyncio.create_task(gate.enter())
    await asyncio.sleep(0)
    assert not waiting.done()
    gate.leave()  # handed to the waiter, not freed
    await waiting
    assert not gate.try_enter()
    gate.leave()
    assert gate.try_enter()


async def test_a_waiter_cancelled_before_or_after_its_hand_off_loses_no_slot() -> None:
    gate = BackendGate("mock", 1)
    assert gate.try_enter()
    first = asyncio.create_task(gate.enter())
    second = asyncio.create_task(gate.enter())
    await asyncio.sleep(0)
    first.cancel()  # cancelled while waiting: leaves the queue
    await asyncio.gather(first, return_exceptions=True)
    gate.leave()
    await second  # the slot went to the one still waiting
    third = asyncio.create_task(gate.enter())
    await asyncio.sleep(0)
    gate.leave()  # handed to `third`, which is cancelled before it runs: passed on, kept
    third.cancel()
    await asyncio.gather(third, return_exceptions=True)
    assert gate.try_enter()
    assert not gate.try_enter()


async def test_a_closed_gate_admits_no_call_until_it_reopens() -> None:
    gate = BackendGate("mock", 2)
    gate.back_off(0.01)
    assert not gate.try_enter()
    await gate.enter()  # waits out the backoff
    assert gate.closed_for == 0
    assert gate.try_enter()
    assert not gate.try_enter()
