"""A worker that loses its lease stops: the in-memory store on an injected clock, the engine
with a fake generator that holds a step until the lease is taken over."""

import asyncio
from typing import Any

import pytest

from benchmarks.runner_process import executor
from chainlets.engine.models import StepRecord
from chainlets.language.compiler import compile_chain
from chainlets.language.plugins import DEFAULT_PLUGINS
from chainlets.language.spec import ChainSpec
from chainlets.service.worker import Worker, WorkerSettings
from chainlets.store import Lease, MemoryStore, NewEvent, NewInvocation, State
from tests.service.test_operations import CHAIN, Gate, GatedGenerator
from tests.store.conftest import FakeClock

LEASE_S = 10.0


class RecordingStore(MemoryStore):
    """The in-memory store, noting every write tried under a lease (owner, what), whether
    the fence lets it in or not, and every renewal that succeeded."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(lease_s=LEASE_S, clock=clock)
        self.writes: list[tuple[str, str]] = []
        self.beats: list[str] = []

    async def record_step(self, lease: Lease, step: StepRecord, **kwargs: Any) -> None:
        self.writes.append((lease.owner, f"record_step {step.handle} {step.state}"))
        await super().record_step(lease, step, **kwargs)

    async def update_invocation(self, lease: Lease, *, state: State, output: str | None = None,
                                status_message: str | None = None,
                                events: Any = (), steps: Any = ()) -> None:
        ended = "".join(f" +{s.handle}" for s in steps)
        self.writes.append((lease.owner, f"update_invocation {state}{ended}"))
        await super().update_invocation(lease, state=state, output=output,
                                        status_message=status_message, events=events,
                                        steps=steps)

    async def heartbeat(self, lease: Lease) -> Lease:
        renewed = await super().heartbeat(lease)
        self.beats.append(lease.owner)
        return renewed


async def _until(condition: Any, what: str) -> None:
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(what)


async def test_a_worker_whose_heartbeat_loses_the_lease_stops_and_writes_nothing_after() -> None:
    clock = FakeClock()
    store = RecordingStore(clock)
    gate = Gate({"song"})
    fake = GatedGenerator(default=lambda r: f"<{r.step}>")
    fake.gate = gate
    compiled = compile_chain(ChainSpec.model_validate(CHAIN), DEFAULT_PLUGINS)
    stored = await store.create_chain(CHAIN)
    created = await store.create_invocation(NewInvocation(
        chain_id=stored.chain_id, input={"topic": "tea"}, steps=["title", "song", "review"],
        callback_url="https://hooks.example/cr"), owner="A")
    assert created.lease is not None
    invocation_id = created.invocation.invocation_id

    async def no_chain(chain_id: str) -> Any:
        raise AssertionError("the worker does not poll in this test")

    worker = Worker(store, executor(fake), no_chain, owner="A",
                    settings=WorkerSettings(heartbeat_s=0.01, write_delay_s=0.01))
    try:
        worker.start(created.lease, created.invocation, compiled)
        await gate.holding.wait()  # `title` is committed, `song` is being generated
        await _until(lambda: "A" in store.beats, "no heartbeat")
        clock.advance(LEASE_S + 1)  # A's lease lapses; B takes the invocation over
        [taken] = await store.claim("B")
        assert taken.invocation_id == invocation_id
        before = (await store.get_invocation(invocation_id), await store.list_events(
            invocation_id), len(store.writes))
        await _until(lambda: not worker.running, "the run did not stop")
        assert gate.cancelled == {"song"}  # its model call was cancelled
        await asyncio.sleep(0.05)  # a few heartbeats and write delays later
        assert store.writes[before[2]:] == []  # A tried no write after the takeover
        assert (await store.get_invocation(invocation_id), await store.list_events(
            invocation_id), len(store.writes)) == before
        lease_b = await store.heartbeat(taken)  # B goes on undisturbed
        await store.update_invocation(lease_b, state=State.SUCCEEDED, output="by B", events=[
            NewEvent(type="chain.finished", data={"state": "succeeded", "output": "by B",
                                                   "error": None})])
        assert (await store.get_invocation(invocation_id)).output == "by B"
    finally:
        await worker.close()


PARALLEL = {"handle": "seed", "inputs": [{"name": "topic"}], "steps": [
    {"handle": "title", "plugin": "mock", "prompt": "A title about {topic}"},
    {"handle": "song", "plugin": "mock", "prompt": "A song called {title}"},
    {"handle": "poster", "plugin": "mock", "prompt": "A poster about {topic}"}]}


@pytest.mark.parametrize(("chain", "held", "writes"), [
    # Linear: the last step has no dependent left, so its result and the end commit together.
    (CHAIN, set(), ["record_step title succeeded", "record_step song succeeded",
                    "update_invocation succeeded +review"]),
    # `song` ends while `poster` still runs: committed at once (visible in status); `poster`,
    # the last, goes with the end.
    (PARALLEL, {"poster"}, ["record_step title succeeded", "record_step song succeeded",
                            "update_invocation succeeded +poster"]),
])
async def test_the_last_step_commits_with_the_invocations_end(
        chain: dict[str, Any], held: set[str], writes: list[str]) -> None:
    store = RecordingStore(FakeClock())
    gate = Gate(held)
    fake = GatedGenerator(default=lambda r: f"<{r.step}>")
    fake.gate = gate
    compiled = compile_chain(ChainSpec.model_validate(chain), DEFAULT_PLUGINS)
    stored = await store.create_chain(chain)
    created = await store.create_invocation(NewInvocation(
        chain_id=stored.chain_id, input={"topic": "tea"}, steps=list(compiled.steps),
        callback_url="https://hooks.example/cr"), owner="A")
    assert created.lease is not None
    invocation_id = created.invocation.invocation_id

    async def no_chain(chain_id: str) -> Any:
        raise AssertionError("the worker does not poll in this test")

    worker = Worker(store, executor(fake), no_chain, owner="A",
                    settings=WorkerSettings(write_delay_s=60))
    try:
        worker.start(created.lease, created.invocation, compiled)
        if held:
            await _until(lambda: ("A", "record_step song succeeded") in store.writes,
                         "song was not committed while poster ran")
            gate.release.set()
        await _until(lambda: not worker.running, "the run did not end")
    finally:
        await worker.close()
    assert [what for _, what in store.writes] == writes
    invocation = await store.get_invocation(invocation_id)
    assert invocation.state == State.SUCCEEDED
    assert all(s.state == State.SUCCEEDED for s in invocation.steps)
    events = await store.list_events(invocation_id)  # in order: the step's, then the chain's
    last = writes[-1].rpartition("+")[2]
    assert [(e.type, e.step) for e in events][-2:] == [("step.finished", last),
                                                       ("chain.finished", None)]
