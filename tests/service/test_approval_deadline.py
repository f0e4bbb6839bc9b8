"""The run's deadline and cancel reach an approval step that waits: the step ends saying why,
and its task token no longer resumes it (409), whether the invocation was suspended (no task)
or still running other branches."""

import pytest

from chainlets.engine.models import RunState
from chainlets.errors import ConflictError
from tests.service.test_approval import CHAIN, waiting
from tests.service.test_operations import FAST, Harness

UNANSWERED = ("DeadlineExceeded: the run's deadline (deadline_s=0.5 s) passed before anyone "
              "answered the step's approval; its task token no longer resumes it")


async def test_the_deadline_passing_while_it_waits_suspended_ends_the_approval(
        harness: Harness) -> None:
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"},
                           options={**FAST, "deadline_s": 0.5})
    [pending] = (await waiting(harness, ref.invocation_id)).approvals
    worker = harness.runtime.worker
    assert worker is not None and ref.invocation_id not in worker.running
    final = await harness.final(ref.invocation_id)  # woken at the deadline, by the poller
    assert final.state == RunState.FAILED and final.approvals == []
    assert final.statusMessage == ("the run's deadline (deadline_s=0.5 s) passed: 2 unfinished "
                                   "step(s) failed: `approve`, `final`")
    assert final.step("approve").statusMessage == UNANSWERED
    assert final.step("side").state == RunState.SUCCEEDED  # committed before: kept
    with pytest.raises(ConflictError, match=r"step `approve` of invocation `.*`: the task "
                                            r"token can no longer be used \(approval "
                                            r"expired\)"):
        await harness.op("resume", task_token=pending.task_token, output="greenlight")
    assert harness.fake.calls("final") == 0


async def test_the_deadline_passing_while_other_branches_run_ends_the_parked_approval(
        harness: Harness) -> None:
    harness.gate.held.add("side")  # `side` runs past the deadline, so the run is live
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"},
                           options={**FAST, "deadline_s": 0.5})
    final = await harness.final(ref.invocation_id)
    assert final.state == RunState.FAILED
    assert final.step("approve").statusMessage == UNANSWERED
    assert "DeadlineExceeded" in (final.step("side").statusMessage or "")
    assert harness.gate.cancelled == {"side"}
    invocation = await harness.store.get_invocation(ref.invocation_id)
    [approve] = [s for s in invocation.steps if s.handle == "approve"]
    assert approve.approval is not None and approve.approval.state.value == "expired"


async def test_cancel_while_it_waits_ends_the_approval_saying_so(harness: Harness) -> None:
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"}, options=FAST)
    [pending] = (await waiting(harness, ref.invocation_id)).approvals
    await harness.op("cancel", invocation_id=ref.invocation_id)
    status = await harness.op("run_status", invocation_id=ref.invocation_id)
    assert status.step("approve").state == RunState.CANCELLED
    assert status.step("approve").statusMessage == (
        "cancelled by request while it waited for approval; its task token no longer "
        "resumes it")
    with pytest.raises(ConflictError, match=r"can no longer be used \(approval cancelled\)"):
        await harness.op("resume", task_token=pending.task_token, output="pass")


async def test_the_chains_own_deadline_ends_a_waiting_approval_too(harness: Harness) -> None:
    ref = await harness.op("run_chain", chain={**CHAIN, "deadline_s": 0.5},
                           inputs={"topic": "tea"}, options=FAST)
    [pending] = (await waiting(harness, ref.invocation_id)).approvals
    final = await harness.final(ref.invocation_id)
    assert final.state == RunState.FAILED
    assert final.step("approve").statusMessage == UNANSWERED
    with pytest.raises(ConflictError, match="can no longer be used"):
        await harness.op("resume", task_token=pending.task_token, output="greenlight")
    stored = await harness.store.get_invocation(ref.invocation_id)
    assert stored.options == {"deadline_s": 0.5, **FAST}  # the store knows the run's deadline
