"""The invocation writer's delayed writes (chainlets.service.writer): a step's `running` state
is written once it has run `delay_s`, not when an earlier step's was due; a step that
succeeds sooner costs its commit alone. On looptime's fast-forwarded loop clock, so that a
stalled machine cannot move a timer past the moment the test checks."""

import asyncio
from datetime import UTC, datetime
from typing import Any

import looptime

from chainlets.engine.models import RunState, StepRecord
from chainlets.service.writer import InvocationWriter
from chainlets.store import Lease, MemoryStore, NewInvocation

DELAY_S = 0.6


class _CountingStore(MemoryStore):
    """The in-memory store, keeping the (step, state) of every `record_step`."""

    def __init__(self) -> None:
        super().__init__()
        self.recorded: list[tuple[str, str]] = []

    async def record_step(self, lease: Lease, step: StepRecord, **kwargs: Any) -> None:
        self.recorded.append((step.handle, step.state.value))
        await super().record_step(lease, step, **kwargs)


def _record(handle: str, state: RunState) -> StepRecord:
    now = datetime.now(UTC)
    return StepRecord(handle=handle, state=state, started_at=now,
                      output="x" if state is RunState.SUCCEEDED else None,
                      finished_at=now if state is RunState.SUCCEEDED else None)


def test_a_running_state_is_written_when_due_not_when_an_earlier_one_was() -> None:
    # looptime's loop: its clock moves only while the loop waits, so the sleeps below are exact
    # and a stalled machine cannot carry a timer past the moment checked.
    loop = looptime.new_event_loop(_enabled=True)
    try:
        loop.run_until_complete(_scenario())
    finally:
        loop.close()


async def _scenario() -> None:
    store = _CountingStore()
    chain = await store.create_chain({"handle": "w", "steps": [
        {"handle": h, "plugin": "mock", "prompt": "x"} for h in "abc"]})
    created = await store.create_invocation(
        NewInvocation(chain_id=chain.chain_id, steps=["a", "b", "c"]), owner="me")
    assert created.lease is not None
    writer = InvocationWriter(store, created.lease, callbacks=False, delay_s=DELAY_S,
                              unfinished={"a", "b", "c"})
    try:
        writer.note(_record("a", RunState.RUNNING))  # sets the timer, due at DELAY_S
        await writer.commit(_record("a", RunState.SUCCEEDED))
        await asyncio.sleep(DELAY_S / 2)
        writer.note(_record("b", RunState.RUNNING))  # due at 1.5 DELAY_S
        await asyncio.sleep(DELAY_S * 2 / 3)  # past a's time (the timer fired), before b's
        await writer.commit(_record("b", RunState.SUCCEEDED))
        assert store.recorded == [("a", "succeeded"), ("b", "succeeded")]
        writer.note(_record("c", RunState.RUNNING))  # c runs on: written once due
        await asyncio.sleep(DELAY_S * 4 / 3)
        assert store.recorded[-1] == ("c", "running")
    finally:
        await writer.close()
        await store.close()
