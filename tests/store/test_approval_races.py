"""Whichever of resume, the approval's timeout, the run's deadline and cancel comes first settles
an approval step, atomically, on every backend: at the boundaries on the store's clock, and
racing for real (two stores on one database, as two replicas' connections race)."""

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import pytest

from chainlets.engine.models import RunState, StepRecord
from chainlets.errors import ConflictError
from chainlets.store import ApprovalState, Lease, NewInvocation, OpenApproval, State, Store
from tests.store.conftest import FakeClock, make_store
from tests.store.helpers import CHAIN, STEPS, at, step

ROUNDS = 6  # races per test; each asserts the same invariant whichever order it took


async def _open(store: Store, clock: FakeClock, *, timeout_s: float = 60,
                deadline_s: float = 600, suspend: bool = True) -> tuple[str, Lease, str]:
    """An invocation whose `judge` waits for approval (suspended: no lease held) and its
    token's hash; the lease is the one it ran under (lost once suspended)."""
    chain_id = (await store.create_chain(CHAIN)).chain_id
    created = await store.create_invocation(NewInvocation(
        chain_id=chain_id, input={"topic": "tea"}, steps=STEPS,
        options={"deadline_s": deadline_s}), owner="A")
    assert created.lease is not None
    token = hashlib.sha256(os.urandom(16)).hexdigest()
    await store.record_step(created.lease, step("tell"))
    await store.record_step(created.lease, step("judge", RunState.WAITING), approval=OpenApproval(
        token_hash=token, prompt="ok?", deadline=at(clock.now + timeout_s)))
    if suspend:
        assert await store.suspend(created.lease, ["judge"])
    return created.invocation.invocation_id, created.lease, token


async def _judge(store: Store, invocation_id: str) -> tuple[State, ApprovalState, str | None]:
    judge = (await store.get_invocation(invocation_id)).steps[1]
    assert judge.approval is not None
    return judge.state, judge.approval.state, judge.statusMessage


def _unanswered(deadline_s: float) -> StepRecord:
    """What the engine records for a step parked when the run's deadline passes."""
    return StepRecord(handle="judge", state=RunState.FAILED,
                      statusMessage=f"DeadlineExceeded: the run's deadline (deadline_s="
                                    f"{deadline_s:g} s) passed before anyone answered")


@pytest.fixture
async def other(backend: str, store: Store, clock: FakeClock) -> AsyncIterator[Store]:
    """A second store on the same database (the same one in memory)."""
    if backend == "memory":
        yield store
        return
    opened = await make_store(backend, clock)
    try:
        yield opened
    finally:
        await opened.close()


async def test_a_resume_just_before_the_timeout_wins_and_one_at_it_loses(
        store: Store, clock: FakeClock) -> None:
    early, _, early_token = await _open(store, clock, timeout_s=60)
    late, _, late_token = await _open(store, clock, timeout_s=60)
    clock.advance(59.999)
    await store.resume_approval(early_token, output="yes")
    assert await _judge(store, early) == (State.SUCCEEDED, ApprovalState.RESUMED, None)
    clock.advance(0.001)  # the deadline: the timeout wins though no worker recorded it yet
    with pytest.raises(ConflictError, match=r"step `judge` of invocation `.*`: its approval "
                                            r"timed out at .* the task token can no longer "
                                            r"resume it"):
        await store.resume_approval(late_token, output="yes")
    [lease] = [lease for lease in await store.claim("B", limit=5)
               if lease.invocation_id == late]
    assert await store.expire_approval(lease, "judge", message="approval timed out")
    assert await _judge(store, late) == (State.FAILED, ApprovalState.TIMED_OUT,
                                         "approval timed out")


async def test_the_runs_deadline_while_waiting_wakes_it_and_voids_the_token(
        store: Store, clock: FakeClock) -> None:
    invocation_id, _, token = await _open(store, clock, timeout_s=3600, deadline_s=100)
    clock.advance(99)
    assert await store.claim("B") == []
    clock.advance(1)  # the run's deadline comes before the approval's: it wakes then
    [lease] = await store.claim("B")
    with pytest.raises(ConflictError, match=r"the run's deadline \(deadline_s=100 s\) passed "
                                            r"at .* while it waited for approval; the task "
                                            r"token can no longer resume it"):
        await store.resume_approval(token, output="yes")
    # The engine ends the step; the writer commits it with the invocation's end.
    await store.update_invocation(lease, state=State.FAILED, status_message="deadline",
                                  steps=[_unanswered(100)])
    state, approval, message = await _judge(store, invocation_id)
    assert (state, approval) == (State.FAILED, ApprovalState.EXPIRED)
    assert message is not None and "passed before anyone answered" in message
    with pytest.raises(ConflictError, match=r"can no longer be used \(approval expired\)"):
        await store.resume_approval(token, output="yes")


async def test_an_ended_record_never_overrides_an_answer_that_came_first(
        store: Store, clock: FakeClock) -> None:
    invocation_id, lease, token = await _open(store, clock, suspend=False)
    await store.resume_approval(token, output="yes")
    await store.record_step(lease, _unanswered(600))  # the run's view, late
    await store.update_invocation(lease, state=State.FAILED, steps=[_unanswered(600)])
    judge = (await store.get_invocation(invocation_id)).steps[1]
    assert (judge.state, judge.output) == (State.SUCCEEDED, "yes")
    assert judge.approval is not None and judge.approval.state == ApprovalState.RESUMED


async def test_cancel_closes_the_approval_saying_so(store: Store, clock: FakeClock) -> None:
    invocation_id, _, token = await _open(store, clock)
    await store.cancel_invocation(invocation_id, message="cancelled by request")
    assert await _judge(store, invocation_id) == (
        State.CANCELLED, ApprovalState.CANCELLED, "cancelled by request while it waited for "
        "approval; its task token no longer resumes it")
    with pytest.raises(ConflictError, match=r"can no longer be used \(approval cancelled\)"):
        await store.resume_approval(token, output="yes")


async def test_a_resume_and_a_cancel_at_once_one_settles_the_step(
        store: Store, other: Store, clock: FakeClock) -> None:
    for _ in range(ROUNDS):
        invocation_id, _, token = await _open(store, clock)
        resumed, cancelled = await asyncio.gather(
            store.resume_approval(token, output="yes"),
            other.cancel_invocation(invocation_id, message="cancelled by request"),
            return_exceptions=True)
        assert not isinstance(cancelled, BaseException)  # an active invocation: it cancels
        assert (await store.get_invocation(invocation_id)).state == State.CANCELLED
        state, approval, _ = await _judge(store, invocation_id)
        if isinstance(resumed, BaseException):  # the cancel came first
            assert isinstance(resumed, ConflictError), resumed
            assert (state, approval) == (State.CANCELLED, ApprovalState.CANCELLED)
        else:  # the resume came first: its answer stands, the rest was cancelled
            assert (state, approval) == (State.SUCCEEDED, ApprovalState.RESUMED)


async def test_a_resume_and_the_timeout_at_once_one_settles_the_step(
        store: Store, other: Store, clock: FakeClock) -> None:
    for _ in range(ROUNDS):
        invocation_id, lease, token = await _open(store, clock, suspend=False)
        resumed, expired = await asyncio.gather(
            store.resume_approval(token, output="yes"),
            other.expire_approval(lease, "judge", message="approval timed out"),
            return_exceptions=True)
        state, approval, _ = await _judge(store, invocation_id)
        if isinstance(resumed, BaseException):
            assert isinstance(resumed, ConflictError) and expired is True, (resumed, expired)
            assert (state, approval) == (State.FAILED, ApprovalState.TIMED_OUT)
        else:
            assert expired is False
            assert (state, approval) == (State.SUCCEEDED, ApprovalState.RESUMED)


async def test_a_resume_and_the_runs_deadline_at_once_one_settles_the_step(
        store: Store, other: Store, clock: FakeClock) -> None:
    for _ in range(ROUNDS):
        invocation_id, lease, token = await _open(store, clock, suspend=False)
        resumed, recorded = await asyncio.gather(
            store.resume_approval(token, output="yes"),
            other.record_step(lease, _unanswered(600)), return_exceptions=True)
        assert recorded is None
        state, approval, _ = await _judge(store, invocation_id)
        if isinstance(resumed, BaseException):
            assert isinstance(resumed, ConflictError), resumed
            assert (state, approval) == (State.FAILED, ApprovalState.EXPIRED)
        else:
            assert (state, approval) == (State.SUCCEEDED, ApprovalState.RESUMED)


async def test_two_resumes_at_once_one_wins(store: Store, other: Store,
                                           clock: FakeClock) -> None:
    for _ in range(ROUNDS):
        invocation_id, _, token = await _open(store, clock)
        answers = await asyncio.gather(store.resume_approval(token, output="yes"),
                                       other.resume_approval(token, error="no"),
                                       return_exceptions=True)
        refused = [a for a in answers if isinstance(a, BaseException)]
        assert len(refused) == 1 and isinstance(refused[0], ConflictError), answers
        state, approval, _ = await _judge(store, invocation_id)
        assert (state, approval) in ((State.SUCCEEDED, ApprovalState.RESUMED),
                                     (State.FAILED, ApprovalState.REJECTED))
