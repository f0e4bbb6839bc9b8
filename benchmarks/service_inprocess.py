"""The service in process, on a fake generator: sustained 3-step invocations/s from `run_chain`
to their final state, and the cost of durability (the soundtrack chain through the store vs the
engine alone in memory)."""

import asyncio
import json
import statistics
import time
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from chainlets.engine.approval import ApprovalGate
from chainlets.engine.models import InvocationResult, RunOptions, RunState
from chainlets.engine.scheduler import StepCommit, StepObserver, run_chain
from chainlets.language.compiler import CompiledChain, compile_chain
from chainlets.language.plugins import DEFAULT_PLUGINS
from chainlets.language.spec import JsonValue
from chainlets.service.policy import DeliveryPolicy
from chainlets.service.responses import ChainCreated, InvocationRef
from chainlets.service.runtime import Runtime, ServiceConfig
from chainlets.service.settings import ServiceLimits
from chainlets.service.worker import WorkerSettings
from chainlets.store import Store, StoreSettings
from mocks.fake_generator import FakeGenerator

__all__ = ["CHAIN", "Durability", "durability", "soundtrack", "throughput"]

CHAIN = {"handle": "bench", "steps": [
    {"handle": "a", "plugin": "mock", "prompt": "x"},
    {"handle": "b", "plugin": "mock", "prompt": "{a}"},
    {"handle": "c", "plugin": "mock", "prompt": "{b}"}]}
SOUNDTRACK = Path(__file__).resolve().parents[1] / "chains" / "specs" / "soundtrack.json"


@cache
def soundtrack() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(SOUNDTRACK.read_text())
    return spec


def _runtime(store: Store, fake: FakeGenerator) -> Runtime:
    generators = {"mock": fake, "openai": fake}

    async def execute(chain: CompiledChain, inputs: dict[str, JsonValue], options: RunOptions,
                      *,
                      observer: StepObserver, commit: StepCommit,
                      previous: InvocationResult | None,
                      approvals: ApprovalGate | None = None,
                      started_at: datetime | None = None) -> InvocationResult:
        return await run_chain(chain, inputs, generators, options, observer=observer,
                               commit=commit, previous=previous, approvals=approvals,
                               started_at=started_at)

    config = ServiceConfig(store=StoreSettings(), limits=ServiceLimits(),
                           delivery=DeliveryPolicy(), webhook_secret=None,
                           worker=WorkerSettings(poll_s=60))
    return Runtime(config, execute, DEFAULT_PLUGINS, store=store)


async def _run_one(runtime: Runtime, chain_id: str) -> str:
    """`run_chain` then wait for its end; returns the invocation id."""
    ref = await runtime.handle({"op": "run_chain", "chain_id": chain_id})
    assert isinstance(ref, InvocationRef)
    assert runtime.worker is not None
    task = runtime.worker.running.get(ref.invocation_id)
    if task is not None:
        await task
    return ref.invocation_id


async def _create(runtime: Runtime, chain: dict[str, Any]) -> str:
    await runtime.ensure_started()
    created = await runtime.handle({"op": "create_chain", "chain": chain})
    assert isinstance(created, ChainCreated)
    return created.chain_id


async def throughput(store: Store, invocations: int, concurrency: int) -> float:
    """Invocations/s: `invocations` submitted `concurrency` at a time, each awaited to its end."""
    runtime = _runtime(store, FakeGenerator())
    chain_id = await _create(runtime, CHAIN)
    slots = asyncio.Semaphore(concurrency)

    async def one() -> str:
        async with slots:
            return await _run_one(runtime, chain_id)

    started = time.perf_counter()
    ids = await asyncio.gather(*(one() for _ in range(invocations)))
    elapsed = time.perf_counter() - started
    final = [await store.get_invocation(i) for i in ids[:10]]
    assert all(i.state.value == "succeeded" for i in final), [i.state for i in final]
    assert runtime.worker is not None
    await runtime.worker.close()
    return invocations / elapsed


@dataclass(frozen=True)
class Durability:
    """The soundtrack chain's wall time, one run at a time (median of `runs`)."""

    memory_s: float
    store_s: float
    steps: int  # steps in the chain
    critical_steps: int  # steps on its longest dependency path

    @property
    def ratio(self) -> float:
        return self.store_s / self.memory_s

    @property
    def per_step_ms(self) -> float:
        """The store's added time per step on the critical path (what a step waits for)."""
        return (self.store_s - self.memory_s) * 1000 / self.critical_steps


def _depth(chain: CompiledChain) -> int:
    depth: dict[str, int] = {}

    def of(handle: str) -> int:
        if handle not in depth:
            deps = chain.steps[handle].deps
            depth[handle] = 1 + max((of(d) for d in deps), default=0)
        return depth[handle]

    return max(of(h) for h in chain.steps)


async def durability(store: Store, runs: int, latency_s: float = 0.05) -> Durability:
    """Soundtrack at `latency_s` per model call: through the store (run_chain → final state)
    vs the engine alone with nothing persisted, interleaved, `runs` of each."""
    spec = soundtrack()
    compiled = compile_chain(spec, DEFAULT_PLUGINS)
    fake = FakeGenerator(latency_s=latency_s)
    runtime = _runtime(store, fake)
    chain_id = await _create(runtime, spec)
    generators = {"mock": fake, "openai": fake}
    memory, stored = [], []
    for _ in range(runs):
        started = time.perf_counter()
        result = await run_chain(compiled, {}, generators, RunOptions())
        memory.append(time.perf_counter() - started)
        assert result.state == RunState.SUCCEEDED, result.statusMessage
        started = time.perf_counter()
        invocation_id = await _run_one(runtime, chain_id)
        stored.append(time.perf_counter() - started)
        final = await store.get_invocation(invocation_id)
        assert final.state.value == "succeeded", final.statusMessage
    assert runtime.worker is not None
    await runtime.worker.close()
    return Durability(memory_s=statistics.median(memory), store_s=statistics.median(stored),
                      steps=len(compiled.steps), critical_steps=_depth(compiled))
