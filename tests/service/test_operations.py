"""The service in process: operations, the worker and the outbox over the in-memory store, with
a fake generator at the engine's seam and a fake receiver at the HTTP client's seam."""

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from benchmarks.runner_process import executor
from chainlets.engine.models import (
    GenerationRequest,
    RunState,
)
from chainlets.errors import ConflictError, NotFoundError, RequestError
from chainlets.language.plugins import DEFAULT_PLUGINS
from chainlets.service.policy import DeliveryPolicy
from chainlets.service.responses import InvocationRef, InvocationStatus
from chainlets.service.runtime import Runtime, ServiceConfig
from chainlets.service.settings import ServiceLimits
from chainlets.service.webhooks import generate_secret
from chainlets.service.worker import WorkerSettings
from chainlets.store import MemoryStore, NewInvocation, StoreSettings
from mocks.fake_generator import FakeGenerator

SECRET = generate_secret()
CHAIN = {"handle": "seed", "inputs": [{"name": "topic"}], "steps": [
    {"handle": "title", "plugin": "mock", "prompt": "A title about {topic}"},
    {"handle": "song", "plugin": "mock", "prompt": "A song called {title}"},
    {"handle": "review", "plugin": "mock", "prompt": "Review {song}"}]}
FAST = {"initial_backoff_s": 0, "max_backoff_s": 0}


@dataclass
class Receiver:
    """A callback receiver at the HTTP client's seam: fails its first `failures` requests."""

    failures: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    attempts: int = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.attempts += 1
        if self.attempts <= self.failures:
            return httpx.Response(500)
        headers = {k: v for k, v in request.headers.items() if k.startswith("webhook-")}
        body = request.content.decode()
        Webhook(SECRET).verify(body, headers)  # raises when the signature is wrong
        self.bodies.append(json.loads(body))
        return httpx.Response(204)


class Gate:
    """A generator reply that holds chosen steps until released, noting cancellations."""

    def __init__(self, held: set[str]) -> None:
        self.held, self.release, self.cancelled = held, asyncio.Event(), set[str]()
        self.holding = asyncio.Event()  # a held step's call arrived

    async def hold(self, request: GenerationRequest) -> None:
        if request.step in self.held:
            self.holding.set()
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancelled.add(request.step)
                raise


@dataclass
class Harness:
    runtime: Runtime
    store: MemoryStore
    fake: FakeGenerator
    receiver: Receiver
    gate: Gate

    async def op(self, op: str, **arguments: Any) -> Any:
        return await self.runtime.handle({"op": op, **arguments})

    async def final(self, invocation_id: str) -> InvocationStatus:
        for _ in range(500):
            status = await self.op("run_status", invocation_id=invocation_id)
            assert isinstance(status, InvocationStatus)
            if status.state.finished:
                return status
            await asyncio.sleep(0.01)
        raise AssertionError(f"{invocation_id} did not finish")

    async def delivered(self, count: int) -> list[dict[str, Any]]:
        for _ in range(500):
            if len(self.receiver.bodies) >= count:
                return self.receiver.bodies
            await asyncio.sleep(0.01)
        raise AssertionError(f"{len(self.receiver.bodies)} of {count} callbacks delivered")


class GatedGenerator(FakeGenerator):
    gate: Gate

    async def _generate(self, request: GenerationRequest) -> Any:
        await self.gate.hold(request)
        return await super()._generate(request)


@pytest.fixture
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    failures = getattr(request, "param", 0)
    gate = Gate(set())
    fake = GatedGenerator(default=lambda r: f"<{r.step}>")
    fake.gate = gate
    receiver = Receiver(failures=failures)
    store = MemoryStore(lease_s=0.3)
    config = ServiceConfig(
        store=StoreSettings(), limits=ServiceLimits(),
        delivery=DeliveryPolicy(first_retry_s=0.01, jitter=0, max_delay_s=0.02),
        webhook_secret=SECRET,
        worker=WorkerSettings(poll_s=0.02, write_delay_s=0.01, heartbeat_s=0.1))
    runtime = Runtime(config, executor(fake), DEFAULT_PLUGINS, store=store,
                      http=httpx.AsyncClient(transport=httpx.MockTransport(receiver)))
    yield Harness(runtime, store, fake, receiver, gate)
    await runtime.close()


async def test_the_seed_flow_create_run_poll(harness: Harness) -> None:
    created = await harness.op("create_chain", chain=CHAIN)
    assert (await harness.op("create_chain", chain=CHAIN)).chain_id == created.chain_id
    ref = await harness.op("run_chain", chain_id=created.chain_id, inputs={"topic": "tea"},
                           options=FAST)
    assert isinstance(ref, InvocationRef) and ref.state == RunState.RUNNING
    status = await harness.final(ref.invocation_id)
    assert status.state == RunState.SUCCEEDED
    assert [s.handle for s in status.steps] == ["title", "song", "review"]
    assert status.output == "<review>" and status.chain == "seed"
    assert status.chain_id == created.chain_id and status.input == {"topic": "tea"}
    assert {harness.fake.calls(h) for h in ("title", "song", "review")} == {1}


async def test_every_step_is_listed_from_the_start_and_outputs_show_as_they_finish(
        harness: Harness) -> None:
    harness.gate.held.add("song")
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"}, options=FAST)
    first = await harness.op("run_status", invocation_id=ref.invocation_id)
    assert [s.handle for s in first.steps] == ["title", "song", "review"]
    assert first.step("review").state == RunState.WAITING
    for _ in range(200):
        status = await harness.op("run_status", invocation_id=ref.invocation_id)
        if status.step("song").state == RunState.RUNNING:
            break
        await asyncio.sleep(0.01)
    assert status.step("title").output == "<title>"
    assert status.state == RunState.RUNNING and status.step("review").state == RunState.WAITING
    harness.gate.release.set()
    assert (await harness.final(ref.invocation_id)).state == RunState.SUCCEEDED


async def test_an_idempotency_key_returns_the_same_invocation_never_a_second_run(
        harness: Harness) -> None:
    request = {"chain": CHAIN, "inputs": {"topic": "tea"}, "idempotency_key": "k-1"}
    first = await harness.op("run_chain", **request)
    again = await harness.op("run_chain", **request)
    assert again.invocation_id == first.invocation_id
    await harness.final(first.invocation_id)
    assert harness.fake.calls("title") == 1
    with pytest.raises(ConflictError):
        await harness.op("run_chain", **{**request, "inputs": {"topic": "coffee"}})


async def test_cancel_stops_the_model_call_and_ends_unfinished_steps_cancelled(
        harness: Harness) -> None:
    harness.gate.held.add("song")
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"})
    await asyncio.wait_for(harness.gate.holding.wait(), 5)
    answer = await harness.op("cancel", invocation_id=ref.invocation_id)
    assert answer.state == RunState.CANCELLED
    assert harness.gate.cancelled == {"song"}
    status = await harness.op("run_status", invocation_id=ref.invocation_id)
    assert status.state == RunState.CANCELLED
    assert [s.state for s in status.steps] == [RunState.SUCCEEDED, RunState.CANCELLED,
                                               RunState.CANCELLED]
    with pytest.raises(ConflictError):
        await harness.op("cancel", invocation_id=ref.invocation_id)


async def test_unknown_ids_and_bad_arguments_are_refused_naming_the_field(
        harness: Harness) -> None:
    with pytest.raises(NotFoundError):
        await harness.op("run_status", invocation_id="inv_nope")
    with pytest.raises(NotFoundError):
        await harness.op("run_chain", chain_id="nope", inputs={})
    with pytest.raises(RequestError, match="callback_url"):
        await harness.op("run_chain", chain=CHAIN, inputs={"topic": "x"},
                         callback_url="ftp://x")
    with pytest.raises(RequestError, match="`bogus` is not an argument"):
        await harness.op("run_status", invocation_id="x", bogus=1)


@pytest.mark.parametrize("harness", [0, 3], indirect=True, ids=["up", "fails-3-times"])
async def test_callbacks_arrive_signed_in_order_once_each(harness: Harness) -> None:
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"},
                           callback_url="https://hooks.example/cr")
    await harness.final(ref.invocation_id)
    bodies = await harness.delivered(4)
    assert [(b["type"], b["step"]) for b in bodies] == [
        ("step.finished", "title"), ("step.finished", "song"), ("step.finished", "review"),
        ("chain.finished", None)]
    assert bodies[-1]["state"] == "succeeded" and bodies[-1]["output"] == "<review>"
    assert len({b["id"] for b in bodies}) == 4
    page = await harness.op("events", invocation_id=ref.invocation_id)
    assert [e.delivery.state for e in page.events] == ["delivered"] * 4


async def test_a_worker_resumes_an_orphaned_invocation_from_its_committed_steps(
        harness: Harness) -> None:
    created = await harness.op("create_chain", chain=CHAIN)
    await harness.runtime.ensure_started()
    orphan = await harness.store.create_invocation(NewInvocation(
        chain_id=created.chain_id, input={"topic": "tea"}, steps=["title", "song", "review"]),
        owner="a-dead-replica")
    assert orphan.lease is not None
    await harness.store.record_step(orphan.lease, _done("title"))
    status = await harness.final(orphan.invocation.invocation_id)
    assert status.state == RunState.SUCCEEDED
    assert harness.fake.calls("title") == 0 and harness.fake.calls("song") == 1
    assert status.step("title").output == "committed before the crash"


def _done(handle: str) -> Any:
    from datetime import UTC

    from chainlets.engine.models import StepRecord

    now = datetime.now(UTC)
    return StepRecord(handle=handle, state=RunState.SUCCEEDED,
                      output="committed before the crash", started_at=now, finished_at=now)


MAP_CHAIN = {"handle": "people", "inputs": [{"name": "people"}, {"name": "team"}], "steps": [
    {"handle": "greet", "plugin": "mock", "map": {"over": "people", "item": "who"},
     "capabilities": {"json_mode": "optional"}, "prompt": "Hello {who} of {team}"}]}


async def test_inputs_may_be_json_and_status_keeps_them_and_every_record_field(
        harness: Harness) -> None:
    inputs = {"people": ["Ann", {"name": "Bob"}], "team": {"name": "blue", "size": 2}}
    ref = await harness.op("run_chain", chain=MAP_CHAIN, inputs=inputs, options=FAST)
    status = await harness.final(ref.invocation_id)
    assert status.state == RunState.SUCCEEDED, status.statusMessage
    assert status.input == inputs
    assert json.loads(status.output or "") == ["<greet[0]>", "<greet[1]>"]
    assert [r.messages[-1].content for r in harness.fake.requests] == [
        'Hello Ann of {"name": "blue", "size": 2}',
        'Hello {"name": "Bob"} of {"name": "blue", "size": 2}']
    item = status.step("greet[0]")  # the store kept what the engine recorded
    assert (item.backend, item.capabilities) == ("mock", {"json_mode": "native"})


async def test_json_inputs_keep_the_input_size_limit(harness: Harness) -> None:
    from chainlets.store import Limits

    harness.store.limits = Limits(max_input_bytes=40)
    with pytest.raises(RequestError, match="CHAINRUNNER_MAX_INPUT_BYTES"):
        await harness.op("run_chain", chain=MAP_CHAIN, options=FAST,
                         inputs={"people": ["x" * 30], "team": "t"})
    with pytest.raises(RequestError, match=r"inputs\.people: input was not a valid JSON value"):
        await harness.op("run_chain", chain=MAP_CHAIN, inputs={"people": {1, 2}}, options=FAST)


ITEMS_CHAIN = {"handle": "arcs", "inputs": [{"name": "people"}], "steps": [
    {"handle": "arcs", "map": {"over": "people", "item": "who", "steps": [
        {"handle": "outline", "plugin": "mock", "prompt": "Outline {who}"},
        {"handle": "arc", "plugin": "mock", "prompt": "Arc from {outline}"}]}},
    {"handle": "story", "plugin": "mock", "prompt": "Story of {arcs}"}]}


async def test_a_map_over_steps_resumes_from_its_committed_items_and_steps(
        harness: Harness) -> None:
    """A dead replica committed item 0 whole and item 1's outline: the worker that takes the
    invocation over calls only what is left, and status lists every item and step."""
    created = await harness.op("create_chain", chain=ITEMS_CHAIN)
    await harness.runtime.ensure_started()
    orphan = await harness.store.create_invocation(NewInvocation(
        chain_id=created.chain_id, input={"people": ["Ann", "Bo"]}, steps=["arcs", "story"]),
        owner="a-dead-replica")
    assert orphan.lease is not None
    for handle in ("arcs[0].outline", "arcs[0].arc", "arcs[0]", "arcs[1].outline"):
        await harness.store.record_step(orphan.lease, _done(handle))
    status = await harness.final(orphan.invocation.invocation_id)
    assert status.state == RunState.SUCCEEDED, status.statusMessage
    assert [r.step for r in harness.fake.requests] == ["arcs[1].arc", "story"]
    assert {s.handle: s.state for s in status.steps} == {
        h: RunState.SUCCEEDED for h in ("arcs", "story", "arcs[0].outline", "arcs[0].arc",
                                        "arcs[0]", "arcs[1].outline", "arcs[1]", "arcs[1].arc")}
    assert json.loads(status.step("arcs").output or "") == ["committed before the crash",
                                                             "<arcs[1].arc>"]
    assert status.step("arcs").statusMessage is None
