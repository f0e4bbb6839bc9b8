"""The outbox: events in the transaction of their state change, delivered in order per
invocation, claimed by one worker at a time, retried, given up, redelivered."""

import asyncio

import pytest

from chainlets.engine.models import RunState
from chainlets.errors import LeaseLostError, NotFoundError, RequestError
from chainlets.store import EventClaim, EventState, NewEvent, State, Store
from tests.store.conftest import LEASE_S, FakeClock, make_store
from tests.store.helpers import URL, at, finished, start, step


async def _three_events(store: Store, url: str | None = URL) -> str:
    invocation_id, lease = await start(store, callback_url=url)
    assert lease is not None
    await store.record_step(lease, step("tell"), events=[finished("tell")])
    await store.record_step(lease, step("judge"), events=[finished("judge")])
    await store.update_invocation(lease, state=State.SUCCEEDED, output="out-judge", events=[
        NewEvent(type="chain.finished", data={"state": "succeeded", "output": "out-judge"})])
    return invocation_id


def _seqs(claims: list[EventClaim]) -> list[tuple[str, int]]:
    return [(c.event.invocation_id, c.event.seq) for c in claims]


async def test_events_are_numbered_and_stored_with_their_change(store: Store) -> None:
    invocation_id = await _three_events(store)
    events = await store.list_events(invocation_id)
    assert [(e.seq, e.type, e.step, e.state) for e in events] == [
        (1, "step.finished", "tell", EventState.PENDING),
        (2, "step.finished", "judge", EventState.PENDING),
        (3, "chain.finished", None, EventState.PENDING)]
    body = events[2].body()
    assert body == {"id": events[2].event_id, "type": "chain.finished",
                    "timestamp": events[2].created_at.isoformat(),
                    "invocation_id": invocation_id, "chain_id": events[2].chain_id,
                    "step": None, "state": "succeeded", "output": "out-judge"}


async def test_a_rejected_write_stores_no_event(store: Store, clock: FakeClock) -> None:
    invocation_id, stale = await start(store, callback_url=URL)
    assert stale is not None
    clock.advance(LEASE_S)
    await store.claim("B")
    with pytest.raises(LeaseLostError):
        await store.record_step(stale, step("tell"), events=[finished("tell")])
    assert await store.list_events(invocation_id) == []


async def test_only_the_earliest_undelivered_event_of_an_invocation_is_claimed(
        store: Store) -> None:
    first = await _three_events(store)
    second = await _three_events(store)
    claims = await store.claim_events("A", limit=10)
    assert sorted(_seqs(claims)) == [(first, 1), (second, 1)]
    assert await store.claim_events("B", limit=10) == []  # heads are claimed, the rest wait
    for claim in claims:
        await store.event_delivered(claim)
    assert sorted(_seqs(await store.claim_events("B", limit=10))) == [(first, 2), (second, 2)]


async def test_a_failed_delivery_blocks_later_events_until_retried(store: Store,
                                                                   clock: FakeClock) -> None:
    invocation_id = await _three_events(store)
    [claim] = await store.claim_events("A")
    await store.event_failed(claim, error="HTTP 500", retry_at=at(clock.now + 30))
    assert await store.claim_events("A") == []
    clock.advance(30)
    [retry] = await store.claim_events("A")
    assert (retry.event.seq, retry.event.attempts, retry.event.last_error) == (1, 1, "HTTP 500")
    assert (retry.event.state, retry.event.last_attempt_at) == (EventState.RETRYING,
                                                                at(clock.now - 30))
    assert retry.event.event_id == claim.event.event_id  # the webhook-id is stable
    await store.event_delivered(retry)
    [after] = await store.claim_events("A")
    assert after.event.seq == 2
    delivered = (await store.list_events(invocation_id))[0]
    assert (delivered.state, delivered.attempts, delivered.delivered_at) == (
        EventState.DELIVERED, 2, at(clock.now))


async def test_a_given_up_event_lets_the_next_one_go(store: Store) -> None:
    invocation_id = await _three_events(store)
    [claim] = await store.claim_events("A")
    await store.event_failed(claim, error="retry period over", retry_at=None)
    [after] = await store.claim_events("A")
    assert after.event.seq == 2
    gave_up = (await store.list_events(invocation_id))[0]
    assert (gave_up.state, gave_up.last_error) == (EventState.GAVE_UP, "retry period over")


async def test_an_expired_delivery_claim_passes_to_another_worker(store: Store,
                                                                  clock: FakeClock) -> None:
    await _three_events(store)
    [stale] = await store.claim_events("A")
    clock.advance(LEASE_S)
    [fresh] = await store.claim_events("B")
    assert (fresh.event.event_id, fresh.attempt) == (stale.event.event_id, stale.attempt + 1)
    with pytest.raises(LeaseLostError, match=f"event `{stale.event.event_id}`: the delivery "
                                             "claim of `A`"):
        await store.event_delivered(stale)
    await store.event_delivered(fresh)


async def test_gone_disables_every_pending_event_for_the_url(store: Store) -> None:
    first = await _three_events(store)
    other = await _three_events(store, url="https://other.example/hook")
    claims = {c.event.invocation_id: c for c in await store.claim_events("A", limit=10)}
    await store.event_failed(claims[first], error="HTTP 410 Gone", retry_at=None,
                             disable_url=True)
    assert {e.state for e in await store.list_events(first)} == {EventState.GONE}
    assert [e.state for e in await store.list_events(other)][1:] == [EventState.PENDING] * 2


async def test_events_without_a_callback_url_are_recorded_not_sent(store: Store) -> None:
    invocation_id = await _three_events(store, url=None)
    assert {e.state for e in await store.list_events(invocation_id)} == {EventState.RECORDED}
    assert await store.claim_events("A", limit=10) == []
    with pytest.raises(RequestError, match="has no callback_url"):
        await store.redeliver(invocation_id, (await store.list_events(invocation_id))[0]
                              .event_id)


async def test_redeliver_sends_delivered_events_again_in_order(store: Store) -> None:
    invocation_id = await _three_events(store)
    for _ in range(3):
        [claim] = await store.claim_events("A")
        await store.event_delivered(claim)
    assert await store.redeliver(invocation_id) == 3
    [again] = await store.claim_events("A")
    assert (again.event.seq, again.event.attempts) == (1, 0)
    events = await store.list_events(invocation_id)
    assert await store.redeliver(invocation_id, events[0].event_id) == 1
    with pytest.raises(LeaseLostError):  # redelivery voids the claim taken before it
        await store.event_delivered(again)
    with pytest.raises(NotFoundError, match="has no event `evt_nope`"):
        await store.redeliver(invocation_id, "evt_nope")
    with pytest.raises(NotFoundError):
        await store.list_events("inv_nope")


async def test_concurrent_deliverers_keep_each_invocations_order(backend: str,
                                                                 clock: FakeClock) -> None:
    """Four deliverers on their own connection pools drain 5 invocations of 4 events: each
    event is delivered once, and an invocation's in sequence."""
    stores = [await make_store(backend, clock) for _ in range(4)]
    if backend == "memory":
        stores = [stores[0]] * 4
    try:
        for _ in range(5):
            invocation_id, lease = await start(stores[0], callback_url=URL)
            assert lease is not None
            for n in range(4):
                await stores[0].record_step(lease, step("tell", RunState.RUNNING),
                                            events=[NewEvent(type=f"e{n}", step="tell")])
        delivered: list[tuple[str, int]] = []

        async def deliver(store: Store, owner: str) -> None:
            while claims := await store.claim_events(owner, limit=2):
                # Noted when claimed: a later event can only be claimed once this is delivered.
                delivered.extend((c.event.invocation_id, c.event.seq) for c in claims)
                for claim in claims:
                    await store.event_delivered(claim)

        await asyncio.gather(*(deliver(stores[n], f"d{n}") for n in range(4)))
        assert len(delivered) == len(set(delivered)) == 20
        by_invocation: dict[str, list[int]] = {}
        for invocation_id, seq in delivered:
            by_invocation.setdefault(invocation_id, []).append(seq)
        assert all(seqs == [1, 2, 3, 4] for seqs in by_invocation.values())
    finally:
        for opened in {id(s): s for s in stores}.values():
            await opened.close()


async def test_a_redelivered_event_gets_a_retry_period_from_its_redelivery(
        store: Store, clock: FakeClock) -> None:
    invocation_id = await _three_events(store)
    first = (await store.list_events(invocation_id))[0]
    assert first.window_start == first.created_at
    [claim] = await store.claim_events("A")
    await store.event_failed(claim, error="HTTP 500", retry_at=None)  # its period ran out
    clock.advance(3 * 86_400)
    redelivered_at = clock.now
    assert await store.redeliver(invocation_id, first.event_id) == 1
    [again] = await store.claim_events("A")
    assert (again.event.window_start, again.event.created_at) == (at(redelivered_at),
                                                                  first.created_at)
    await store.event_failed(again, error="HTTP 500", retry_at=at(clock.now + 1))
    clock.advance(1)  # a retry keeps the redelivery's period
    [retry] = await store.claim_events("A")
    assert (retry.event.attempts, retry.event.window_start) == (1, at(redelivered_at))
