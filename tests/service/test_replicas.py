"""Two replicas' services on one store: a replica runs a new invocation itself while it has room,
else leaves it queued for any replica's worker; an invocation is run by one worker at a time."""

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from benchmarks.runner_process import executor
from chainlets.engine.models import RunState
from chainlets.language.plugins import DEFAULT_PLUGINS
from chainlets.service.policy import DeliveryPolicy
from chainlets.service.responses import InvocationRef, InvocationStatus
from chainlets.service.runtime import Runtime, ServiceConfig
from chainlets.service.settings import ServiceLimits
from chainlets.service.worker import WorkerSettings
from chainlets.store import MemoryStore, NewInvocation, StoreSettings
from tests.service.test_operations import CHAIN, FAST, SECRET, Gate, GatedGenerator

Replica = tuple[Runtime, GatedGenerator]


def _replica(store: MemoryStore, *, max_running: int, held: set[str]) -> Replica:
    fake = GatedGenerator(default=lambda r: f"<{r.step}>")
    fake.gate = Gate(held)
    config = ServiceConfig(
        store=StoreSettings(), limits=ServiceLimits(), delivery=DeliveryPolicy(),
        webhook_secret=SECRET, worker=WorkerSettings(
            poll_s=0.02, write_delay_s=0.01, heartbeat_s=0.1, max_running=max_running))
    return Runtime(config, executor(fake), DEFAULT_PLUGINS, store=store,
                   http=httpx.AsyncClient(transport=httpx.MockTransport(
                       lambda _r: httpx.Response(204)))), fake


@pytest.fixture
async def replicas() -> AsyncIterator[tuple[Replica, Replica]]:
    store = MemoryStore(lease_s=0.3)
    busy = _replica(store, max_running=1, held={"title"})  # holds its first step until told
    idle = _replica(store, max_running=10, held=set())
    yield busy, idle
    busy[1].gate.release.set()
    for runtime, _ in (busy, idle):
        await runtime.close()


async def _final(runtime: Runtime, invocation_id: str) -> InvocationStatus:
    for _ in range(500):
        status = await runtime.handle({"op": "run_status", "invocation_id": invocation_id})
        assert isinstance(status, InvocationStatus)
        if status.state.finished:
            return status
        await asyncio.sleep(0.01)
    raise AssertionError(f"{invocation_id} did not finish")


async def test_a_full_replica_leaves_new_invocations_to_one_with_room(
        replicas: tuple[Replica, Replica]) -> None:
    (busy, busy_fake), (idle, idle_fake) = replicas
    await idle.ensure_started()
    first = await busy.handle({"op": "run_chain", "chain": CHAIN, "inputs": {"topic": "a"},
                               "options": FAST})
    await busy_fake.gate.holding.wait()  # the busy replica runs its one invocation
    second = await busy.handle({"op": "run_chain", "chain": CHAIN, "inputs": {"topic": "b"},
                                "options": FAST})
    assert isinstance(first, InvocationRef) and isinstance(second, InvocationRef)
    assert second.state == RunState.RUNNING  # queued: no replica holds it yet
    status = await _final(busy, second.invocation_id)
    assert status.state == RunState.SUCCEEDED
    assert idle_fake.calls("title") == 1  # the replica with room ran it, the busy one did not
    assert busy_fake.calls("title") == 0  # the held call never reached the fake's answer
    busy_fake.gate.release.set()
    assert (await _final(busy, first.invocation_id)).state == RunState.SUCCEEDED
    assert busy_fake.calls("title") == 1 and idle_fake.calls("title") == 1  # none ran twice


async def test_a_backlog_is_claimed_in_batches_without_waiting_a_poll_between_them() -> None:
    store = MemoryStore(lease_s=0.3)
    fake = GatedGenerator(default=lambda r: f"<{r.step}>")
    fake.gate = Gate(set())
    config = ServiceConfig(
        store=StoreSettings(), limits=ServiceLimits(), delivery=DeliveryPolicy(),
        webhook_secret=None, worker=WorkerSettings(poll_s=60, claim_batch=2,
                                                   write_delay_s=0.01, heartbeat_s=0.1))
    runtime = Runtime(config, executor(fake), DEFAULT_PLUGINS, store=store)
    chain_id = (await store.create_chain(CHAIN)).chain_id
    queued = [(await store.create_invocation(NewInvocation(
        chain_id=chain_id, input={"topic": str(n)}, steps=["title", "song", "review"],
        options=FAST))).invocation.invocation_id for n in range(5)]
    try:
        await runtime.ensure_started()  # one poll, then the next only after 60 s
        for invocation_id in queued:
            assert (await _final(runtime, invocation_id)).state == RunState.SUCCEEDED
        assert fake.calls("title") == 5
    finally:
        await runtime.close()
