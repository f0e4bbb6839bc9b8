"""The outbox dispatcher end to end in process: the in-memory store on an injected clock, the
sender's receiver at the HTTP client's seam (`httpx.MockTransport`)."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from benchmarks.runner_process import executor
from chainlets.engine.models import RunState
from chainlets.language.plugins import DEFAULT_PLUGINS
from chainlets.service.events import DeliveryState
from chainlets.service.outbox import Dispatcher
from chainlets.service.policy import DeliveryPolicy
from chainlets.service.responses import EventPage
from chainlets.service.runtime import Runtime, ServiceConfig
from chainlets.service.settings import ServiceLimits
from chainlets.service.webhooks import WebhookSender, WebhookSigner, generate_secret
from chainlets.service.worker import WorkerSettings
from chainlets.store import EventState, MemoryStore, NewEvent, NewInvocation, State, StoreSettings
from mocks.fake_generator import FakeGenerator
from tests.service.test_operations import CHAIN
from tests.store.conftest import FakeClock

SECRET = generate_secret()
GONE_URL = "https://gone.example/hook"
GOOD_URL = "https://good.example/hook"
DAY = 86_400.0


def _datetimes(clock: FakeClock) -> Callable[[], datetime]:
    """The sender's view of the store's clock."""
    return lambda: datetime.fromtimestamp(clock(), UTC)


async def _finished_invocation(store: MemoryStore, url: str) -> str:
    stored = await store.create_chain(CHAIN)
    created = await store.create_invocation(NewInvocation(
        chain_id=stored.chain_id, input={"topic": "tea"}, steps=["title", "song", "review"],
        callback_url=url), owner="A")
    assert created.lease is not None
    await store.update_invocation(created.lease, state=State.SUCCEEDED, output="x", events=[
        NewEvent(type="chain.finished",
                 data={"state": "succeeded", "output": "x", "error": None})])
    return created.invocation.invocation_id


async def test_a_redelivered_old_event_is_retried_within_a_period_from_its_redelivery() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    answers: list[int] = []

    def receiver(request: httpx.Request) -> httpx.Response:
        answers.append(500)
        return httpx.Response(500)

    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as http:
        sender = WebhookSender(http, WebhookSigner(SECRET), DeliveryPolicy(jitter=0),
                               clock=_datetimes(clock))
        dispatcher = Dispatcher(store, sender, "A")
        invocation_id = await _finished_invocation(store, GOOD_URL)
        clock.advance(2 * DAY)  # long past the event's own period of one day
        [event] = await store.list_events(invocation_id)
        assert await store.redeliver(invocation_id, event.event_id) == 1
        [claim] = await store.claim_events("A")
        await dispatcher.send(claim)
        [event] = await store.list_events(invocation_id)
        assert answers == [500]
        assert (event.state, event.attempts) == (EventState.RETRYING, 1)
        assert event.next_attempt_at == datetime.fromtimestamp(clock() + 1, UTC)


class GoneReceiver:
    """Answers 410 at GONE_URL (once `open` is set) and 204 elsewhere; counts requests."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.requests: dict[str, int] = {}

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        url = str(request.url)
        self.requests[url] = self.requests.get(url, 0) + 1
        if url != GONE_URL:
            return httpx.Response(204)
        await self.open.wait()  # so every event of the run is pending by then
        return httpx.Response(410)


async def _settled(runtime: Runtime, invocation_id: str) -> EventPage:
    for _ in range(300):
        page = await runtime.handle({"op": "events", "invocation_id": invocation_id})
        assert isinstance(page, EventPage)
        if page.events and all(e.delivery.state not in (DeliveryState.PENDING,
                                                        DeliveryState.RETRYING)
                               for e in page.events):
            return page
        await asyncio.sleep(0.01)
    raise AssertionError(f"the events of {invocation_id} did not settle")


async def _run(runtime: Runtime, url: str) -> str:
    ref: Any = await runtime.handle({"op": "run_chain", "chain": CHAIN,
                                     "inputs": {"topic": "tea"}, "callback_url": url})
    for _ in range(300):
        status: Any = await runtime.handle({"op": "run_status",
                                            "invocation_id": ref.invocation_id})
        if status.state.finished:
            assert status.state == RunState.SUCCEEDED
            return str(ref.invocation_id)
        await asyncio.sleep(0.01)
    raise AssertionError(f"{ref.invocation_id} did not finish")


async def test_410_gone_stops_delivery_to_that_url_and_lists_its_events_as_gone() -> None:
    receiver = GoneReceiver()
    config = ServiceConfig(
        store=StoreSettings(), limits=ServiceLimits(),
        delivery=DeliveryPolicy(first_retry_s=0.01, jitter=0, max_delay_s=0.02),
        webhook_secret=SECRET, worker=WorkerSettings(poll_s=0.02, write_delay_s=0.01))
    runtime = Runtime(config, executor(FakeGenerator(default=lambda r: f"<{r.step}>")),
                      DEFAULT_PLUGINS, store=MemoryStore(),
                      http=httpx.AsyncClient(transport=httpx.MockTransport(receiver)))
    try:
        gone = await _run(runtime, GONE_URL)
        good = await _run(runtime, GOOD_URL)
        receiver.open.set()
        page = await _settled(runtime, gone)
        assert [(e.type, e.delivery.state, e.delivery.attempts) for e in page.events] == [
            ("step.finished", DeliveryState.GONE, 1)] + [
            (t, DeliveryState.GONE, 0) for t in ("step.finished", "step.finished",
                                                  "chain.finished")]
        assert all("HTTP 410" in (e.delivery.detail or "") for e in page.events)
        assert receiver.requests[GONE_URL] == 1  # the others were never sent
        delivered = await _settled(runtime, good)
        assert {e.delivery.state for e in delivered.events} == {DeliveryState.DELIVERED}
        assert receiver.requests[GOOD_URL] == 4
    finally:
        await runtime.close()
