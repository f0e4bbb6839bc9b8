"""Leases: claims, heartbeats, fencing, takeover, and concurrent claimers, on every backend."""

import asyncio
from collections import Counter

import pytest

from chainlets.engine.models import RunState
from chainlets.errors import LeaseLostError
from chainlets.store import Lease, NewInvocation, State, Store
from tests.store.conftest import LEASE_S, FakeClock, make_store
from tests.store.helpers import CHAIN, STEPS, start, step


async def test_a_live_lease_is_never_claimed(store: Store, clock: FakeClock) -> None:
    await start(store, owner="A")
    clock.advance(LEASE_S - 0.001)
    assert await store.claim("B") == []


async def test_an_unowned_invocation_is_claimed_once(store: Store) -> None:
    invocation_id, _ = await start(store, owner=None)
    [lease] = await store.claim("A", limit=5)
    assert (lease.invocation_id, lease.owner, lease.attempt) == (invocation_id, "A", 1)
    assert await store.claim("B", limit=5) == []


async def test_claims_take_the_oldest_first(store: Store, clock: FakeClock) -> None:
    ids = []
    for _ in range(3):
        ids.append((await start(store, owner=None))[0])
        clock.advance(1)
    assert [lease.invocation_id for lease in await store.claim("A", limit=2)] == ids[:2]


async def test_a_stale_owner_is_fenced_out_after_takeover(store: Store,
                                                          clock: FakeClock) -> None:
    invocation_id, stale = await start(store, owner="A")
    assert stale is not None
    await store.record_step(stale, step("tell"))
    clock.advance(LEASE_S)
    [fresh] = await store.claim("B")
    assert (fresh.owner, fresh.attempt) == ("B", 2)
    message = f"invocation `{invocation_id}`: the lease of `A` \\(attempt 1\\) is lost"
    for write in (store.record_step(stale, step("judge", output="stale")),
                  store.update_invocation(stale, state=State.SUCCEEDED, output="stale"),
                  store.heartbeat(stale), store.release(stale),
                  store.suspend(stale, ["judge"]), store.expire_approval(stale, "judge",
                                                                         message="x")):
        with pytest.raises(LeaseLostError, match=message):
            await write
    invocation = await store.get_invocation(invocation_id)
    assert (invocation.state, invocation.output) == (State.RUNNING, None)
    assert [(s.handle, s.output) for s in invocation.steps] == [("tell", "out-tell"),
                                                                ("judge", None)]
    await store.record_step(fresh, step("judge"))
    assert (await store.get_invocation(invocation_id)).steps[1].state == State.SUCCEEDED


async def test_the_same_owner_is_fenced_by_attempt(store: Store, clock: FakeClock) -> None:
    _, first = await start(store, owner="A")
    assert first is not None
    clock.advance(LEASE_S)
    [second] = await store.claim("A")
    with pytest.raises(LeaseLostError):
        await store.heartbeat(first)
    await store.heartbeat(second)


async def test_a_heartbeat_keeps_the_lease(store: Store, clock: FakeClock) -> None:
    _, lease = await start(store, owner="A")
    assert lease is not None
    for _ in range(3):
        clock.advance(LEASE_S - 1)
        lease = await store.heartbeat(lease)
        assert await store.claim("B") == []
    assert lease.expires_at.timestamp() == clock.now + LEASE_S


async def test_a_released_invocation_is_claimable_at_once(store: Store) -> None:
    invocation_id, lease = await start(store, owner="A")
    assert lease is not None
    await store.release(lease)
    [taken] = await store.claim("B")
    assert (taken.invocation_id, taken.attempt) == (invocation_id, 2)


async def test_finished_and_cancelled_invocations_are_never_claimed(store: Store,
                                                                    clock: FakeClock) -> None:
    _, lease = await start(store, owner="A")
    cancelled, _ = await start(store, owner=None)
    assert lease is not None
    await store.update_invocation(lease, state=State.SUCCEEDED, output="ok")
    await store.cancel_invocation(cancelled, message="stop")
    clock.advance(LEASE_S * 10)
    assert await store.claim("B", limit=10) == []


async def _claim_all(store: Store, owner: str, taken: list[Lease]) -> None:
    while claimed := await store.claim(owner, limit=3):
        taken.extend(claimed)
        # Work on one, so claimers interleave with writers as replicas do.
        await store.record_step(claimed[0], step("tell", RunState.RUNNING))


async def test_racing_claimers_never_claim_an_invocation_twice(backend: str,
                                                               clock: FakeClock) -> None:
    """Eight claimers on four separate connections pools (replicas) race for 40
    invocations; each is claimed exactly once, and every claim's writes are accepted."""
    stores = [await make_store(backend, clock) for _ in range(4)]
    if backend == "memory":
        stores = [stores[0]] * 4  # one process's memory: the claimers share it
    try:
        chain_id = (await stores[0].create_chain(CHAIN)).chain_id
        ids = {(await stores[0].create_invocation(NewInvocation(
            chain_id=chain_id, steps=STEPS))).invocation.invocation_id for _ in range(40)}
        taken: list[Lease] = []
        await asyncio.gather(*(_claim_all(stores[n % 4], f"worker-{n}", taken)
                               for n in range(8)))
        counts = Counter(lease.invocation_id for lease in taken)
        assert set(counts) == ids
        assert max(counts.values()) == 1
    finally:
        for opened in {id(s): s for s in stores}.values():
            await opened.close()
