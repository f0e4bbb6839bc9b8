"""The runtime's retention timer: finished invocations older than the retention are purged
with their steps and events, on a short interval and an injected clock."""

import asyncio
from datetime import UTC, datetime

import pytest

from benchmarks.runner_process import executor
from chainlets.errors import NotFoundError
from chainlets.language.plugins import DEFAULT_PLUGINS
from chainlets.service.policy import DeliveryPolicy
from chainlets.service.runtime import Runtime, ServiceConfig
from chainlets.service.settings import ServiceLimits
from chainlets.service.worker import WorkerSettings
from chainlets.store import MemoryStore, NewEvent, NewInvocation, State, StoreSettings
from mocks.fake_generator import FakeGenerator
from tests.service.test_operations import CHAIN
from tests.store.conftest import FakeClock

RETENTION_S = 3600.0


async def _invocation(store: MemoryStore, state: State | None) -> str:
    """An invocation left running (`state` None) or finished in `state` now."""
    stored = await store.create_chain(CHAIN)
    created = await store.create_invocation(NewInvocation(
        chain_id=stored.chain_id, input={"topic": "tea"}, steps=["title", "song", "review"],
        callback_url="https://hooks.example/cr"), owner="elsewhere")
    assert created.lease is not None
    if state is not None:
        await store.update_invocation(created.lease, state=state, events=[NewEvent(
            type="chain.finished", data={"state": state.value, "output": None,
                                         "error": None})])
    return created.invocation.invocation_id


async def test_the_timer_purges_finished_invocations_older_than_the_retention() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock, lease_s=10 * RETENTION_S)
    old = await _invocation(store, State.SUCCEEDED)
    old_failed = await _invocation(store, State.FAILED)
    running = await _invocation(store, None)  # started as long ago, never finished
    clock.advance(RETENTION_S + 1)
    recent = await _invocation(store, State.SUCCEEDED)
    config = ServiceConfig(
        store=StoreSettings(retention_s=RETENTION_S), limits=ServiceLimits(),
        delivery=DeliveryPolicy(), webhook_secret=None,
        worker=WorkerSettings(poll_s=0.02), purge_every_s=0.01)
    runtime = Runtime(config, executor(FakeGenerator()), DEFAULT_PLUGINS, store=store,
                      clock=lambda: datetime.fromtimestamp(clock(), UTC))
    try:
        await runtime.ensure_started()
        for _ in range(50):  # the timer's first round comes after one interval
            if old not in {i.invocation_id for i in (await store.list_invocations()).items}:
                break
            await asyncio.sleep(0.01)
        for purged in (old, old_failed):
            with pytest.raises(NotFoundError):
                await store.get_invocation(purged)
            with pytest.raises(NotFoundError):
                await store.list_events(purged)
        assert (await store.get_invocation(running)).state == State.RUNNING
        assert (await store.get_invocation(recent)).state == State.SUCCEEDED
        assert [e.type for e in await store.list_events(recent)] == ["chain.finished"]
    finally:
        await runtime.close()
