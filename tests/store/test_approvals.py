"""Approvals (task tokens) and retention, on every backend."""

import hashlib
from datetime import timedelta

import pytest

from chainlets.engine.models import RunState
from chainlets.errors import ConflictError, NotFoundError, RequestError
from chainlets.store import ApprovalState, NewEvent, OpenApproval, State, Store
from tests.store.conftest import LEASE_S, FakeClock
from tests.store.helpers import CHAIN, URL, at, start, step

TOKEN = hashlib.sha256(b"token-1").hexdigest()


async def _waiting(store: Store, clock: FakeClock, timeout_s: float = 60) -> str:
    """An invocation whose `judge` waits for a human, suspended (it holds no lease)."""
    invocation_id, lease = await start(store, callback_url=URL)
    assert lease is not None
    await store.record_step(lease, step("tell"))
    await store.record_step(
        lease, step("judge", RunState.WAITING),
        approval=OpenApproval(token_hash=TOKEN, prompt="Pick one: out-tell",
                              choices=["greenlight", "pass"], deadline=at(clock.now + timeout_s)),
        events=[NewEvent(type="step.waiting", step="judge")])
    assert await store.suspend(lease, ["judge"])
    return invocation_id


async def test_a_suspended_invocation_waits_without_a_lease(store: Store,
                                                            clock: FakeClock) -> None:
    invocation_id = await _waiting(store, clock)
    invocation = await store.get_invocation(invocation_id)
    assert invocation.state == State.WAITING
    approval = invocation.steps[1].approval
    assert approval is not None
    assert (approval.state, approval.prompt, approval.choices) == (
        ApprovalState.OPEN, "Pick one: out-tell", ["greenlight", "pass"])
    clock.advance(LEASE_S * 5)
    assert await store.claim("B") == []
    found_id, found = await store.get_approval(TOKEN)
    assert (found_id, found.handle) == (invocation_id, "judge")


async def test_a_resume_completes_the_step_once(store: Store, clock: FakeClock) -> None:
    invocation_id = await _waiting(store, clock)
    resumed = await store.resume_approval(TOKEN, output="greenlight", events=[
        NewEvent(type="step.finished", step="judge", data={"output": "greenlight"})])
    assert (resumed.state, resumed.output) == (State.SUCCEEDED, "greenlight")
    assert resumed.approval is not None and resumed.approval.state == ApprovalState.RESUMED
    [lease] = await store.claim("B")  # runnable again, by any replica
    assert (lease.invocation_id, lease.signals) == (invocation_id, 1)
    with pytest.raises(ConflictError, match=r"step `judge` of invocation `.*`: the task token "
                                            r"was already used \(approval resumed\)"):
        await store.resume_approval(TOKEN, output="pass")
    assert [e.type for e in await store.list_events(invocation_id)] == [
        "step.waiting", "step.finished"]


async def test_a_resume_with_an_error_fails_the_step(store: Store, clock: FakeClock) -> None:
    await _waiting(store, clock)
    failed = await store.resume_approval(TOKEN, error="rejected by the reviewer")
    assert (failed.state, failed.statusMessage) == (State.FAILED, "rejected by the reviewer")


@pytest.mark.parametrize(("output", "error"), [(None, None), ("a", "b")],
                         ids=["neither", "both"])
async def test_a_resume_takes_an_output_or_an_error(store: Store, clock: FakeClock,
                                                    output: str | None,
                                                    error: str | None) -> None:
    await _waiting(store, clock)
    with pytest.raises(RequestError, match="exactly one of `output`"):
        await store.resume_approval(TOKEN, output=output, error=error)


async def test_an_unknown_token_is_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError, match="task_token: no step waits on this token"):
        await store.resume_approval("0" * 64, output="x")


async def test_the_deadline_wakes_the_invocation_and_the_timeout_wins(
        store: Store, clock: FakeClock) -> None:
    invocation_id = await _waiting(store, clock, timeout_s=60)
    clock.advance(59)
    assert await store.claim("B") == []
    clock.advance(1)
    [lease] = await store.claim("B")
    assert (await store.get_invocation(invocation_id)).state == State.RUNNING
    assert await store.expire_approval(lease, "judge", message="step `judge`: no decision "
                                                                "within 60 s")
    assert not await store.expire_approval(lease, "judge", message="again")
    with pytest.raises(ConflictError, match="approval timed_out"):
        await store.resume_approval(TOKEN, output="late")
    judge = (await store.get_invocation(invocation_id)).steps[1]
    assert (judge.state, judge.statusMessage) == (State.FAILED,
                                                   "step `judge`: no decision within 60 s")
    with pytest.raises(NotFoundError, match="has no step `nope`"):
        await store.expire_approval(lease, "nope", message="x")


async def test_a_cancel_wins_over_a_later_resume(store: Store, clock: FakeClock) -> None:
    invocation_id = await _waiting(store, clock)
    cancelled = await store.cancel_invocation(invocation_id, message="cancelled")
    assert cancelled.steps[1].approval is not None
    assert cancelled.steps[1].approval.state == ApprovalState.CANCELLED
    with pytest.raises(ConflictError, match="approval cancelled"):
        await store.resume_approval(TOKEN, output="greenlight")


async def test_an_ended_invocation_cannot_be_resumed(store: Store, clock: FakeClock) -> None:
    invocation_id, lease = await start(store)
    assert lease is not None
    await store.record_step(lease, step("judge", RunState.WAITING), approval=OpenApproval(
        token_hash=TOKEN, prompt="ok?", deadline=at(clock.now + 60)))
    await store.update_invocation(lease, state=State.FAILED, status_message="`tell` failed")
    with pytest.raises(ConflictError, match=f"invocation `{invocation_id}` already ended "
                                            "`failed`; its approvals can no longer be resumed"):
        await store.resume_approval(TOKEN, output="yes")
    assert (await store.get_invocation(invocation_id)).steps[0].state == State.WAITING


async def test_suspend_refuses_when_an_approval_was_settled_meanwhile(
        store: Store, clock: FakeClock) -> None:
    invocation_id, lease = await start(store)
    assert lease is not None
    await store.record_step(lease, step("judge", RunState.WAITING), approval=OpenApproval(
        token_hash=TOKEN, prompt="ok?", deadline=at(clock.now + 60)))
    await store.resume_approval(TOKEN, output="yes")  # arrives while the holder still runs
    assert (await store.heartbeat(lease)).signals == 1
    assert not await store.suspend(lease, ["judge"])
    assert (await store.get_invocation(invocation_id)).state == State.RUNNING
    with pytest.raises(RequestError, match="waiting_on: name the approval steps"):
        await store.suspend(lease, [])


async def test_a_token_hash_is_single_use_across_steps(store: Store, clock: FakeClock) -> None:
    await _waiting(store, clock)
    _, lease = await start(store)
    assert lease is not None
    with pytest.raises(ConflictError, match="this task token hash is already in use"):
        await store.record_step(lease, step("judge", RunState.WAITING), approval=OpenApproval(
            token_hash=TOKEN, prompt="again", deadline=at(clock.now + 60)))


async def test_purge_removes_old_finished_invocations_only(store: Store,
                                                           clock: FakeClock) -> None:
    old, lease = await start(store, callback_url=URL, key="k", request_hash="h")
    assert lease is not None
    await store.record_step(lease, step("tell"), events=[NewEvent(type="step.finished")])
    await store.update_invocation(lease, state=State.SUCCEEDED, output="ok")
    running, _ = await start(store)
    clock.advance(3600)
    recent, recent_lease = await start(store)
    assert recent_lease is not None
    await store.update_invocation(recent_lease, state=State.FAILED)
    unused = await store.create_chain({**CHAIN, "handle": "unused"})
    await store.delete_chain(unused.chain_id)

    counts = await store.purge(at(clock.now) - timedelta(seconds=60))
    assert counts.model_dump() == {"invocations": 1, "steps": 2, "events": 1, "chains": 1}
    with pytest.raises(NotFoundError):
        await store.get_invocation(old)
    with pytest.raises(NotFoundError):
        await store.list_events(old)
    assert {i.invocation_id for i in (await store.list_invocations()).items} == {running,
                                                                                 recent}
    again, _ = await start(store, key="k", request_hash="other")  # the key is free again
    assert again != old
    assert (await store.purge(at(clock.now) - timedelta(seconds=60))).invocations == 0
