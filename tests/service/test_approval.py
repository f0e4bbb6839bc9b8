"""Human approval in process: a step parks its branch until `resume` (or its deadline), the
invocation then holds no task, and the answer flows on like any step's output."""

import asyncio
from pathlib import Path

import pytest

from chainlets.engine.models import RunState
from chainlets.engine.scheduler import run_chain
from chainlets.errors import ChainDefinitionError, ConflictError, NotFoundError, RequestError
from chainlets.language.compiler import compile_chain
from chainlets.language.spec import load_chain
from chainlets.service.responses import InvocationStatus
from tests.service.test_operations import FAST, Harness

APPROVE = {"handle": "approve", "plugin": "human-approval", "prompt": "Greenlight {pitch}?",
           "plugin_config": {"timeout_s": 60, "choices": ["greenlight", "pass"]}}
CHAIN = {"handle": "pitch-review", "inputs": [{"name": "topic"}], "steps": [
    {"handle": "pitch", "plugin": "mock", "prompt": "Pitch a film about {topic}"},
    {"handle": "side", "plugin": "mock", "prompt": "A poster for {topic}"},
    APPROVE,
    {"handle": "final", "plugin": "mock", "prompt": "Decision: {approve} for {pitch}"}],
    "output": "final"}


async def waiting(harness: Harness, invocation_id: str) -> InvocationStatus:
    for _ in range(500):
        status = await harness.op("run_status", invocation_id=invocation_id)
        assert isinstance(status, InvocationStatus)
        if status.state == RunState.WAITING:
            return status
        await asyncio.sleep(0.01)
    raise AssertionError(f"{invocation_id} never waited: {status.state} {status.statusMessage} "
                         f"{[(s.handle, s.state, s.statusMessage) for s in status.steps]}")


async def test_an_approval_parks_its_branch_and_resume_continues_with_the_answer(
        harness: Harness) -> None:
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"}, options=FAST)
    status = await waiting(harness, ref.invocation_id)
    assert status.step("side").state == RunState.SUCCEEDED  # the other branch went on
    assert status.step("approve").state == RunState.WAITING
    assert status.step("final").state == RunState.WAITING
    [pending] = status.approvals
    assert pending.step == "approve" and pending.text == "Greenlight <pitch>?"
    assert pending.choices == ["greenlight", "pass"] and len(pending.task_token) >= 40
    worker = harness.runtime.worker
    assert worker is not None and ref.invocation_id not in worker.running  # no task waits
    with pytest.raises(RequestError, match="'maybe' is not one of step `approve`'s choices"):
        await harness.op("resume", task_token=pending.task_token, output="maybe")
    with pytest.raises(NotFoundError, match="task_token"):
        await harness.op("resume", task_token=pending.task_token + "x", output="pass")
    resumed = await harness.op("resume", task_token=pending.task_token, output="greenlight")
    assert (resumed.step, resumed.state) == ("approve", RunState.SUCCEEDED)
    final = await harness.final(ref.invocation_id)
    assert final.state == RunState.SUCCEEDED and final.approvals == []
    assert final.step("approve").output == "greenlight"
    [request] = [r for r in harness.fake.requests if r.step == "final"]
    assert request.messages[-1].content == "Decision: greenlight for <pitch>"
    assert harness.fake.calls("approve") == 0 and harness.fake.calls("pitch") == 1
    with pytest.raises(ConflictError, match="already used"):
        await harness.op("resume", task_token=pending.task_token, output="pass")


async def test_resume_with_an_error_fails_the_step_and_the_failure_propagates(
        harness: Harness) -> None:
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"}, options=FAST)
    [pending] = (await waiting(harness, ref.invocation_id)).approvals
    await harness.op("resume", task_token=pending.task_token, error="not this one")
    final = await harness.final(ref.invocation_id)
    assert final.state == RunState.FAILED
    assert final.step("approve").state == RunState.FAILED
    assert "not this one" in (final.step("approve").statusMessage or "")
    assert final.step("final").state == RunState.SKIPPED
    assert harness.fake.calls("final") == 0


async def test_an_answer_while_other_branches_run_continues_in_the_same_run(
        harness: Harness) -> None:
    harness.gate.held.add("side")
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"}, options=FAST)
    await asyncio.wait_for(harness.gate.holding.wait(), 5)
    for _ in range(500):
        status = await harness.op("run_status", invocation_id=ref.invocation_id)
        if status.approvals:
            break
        await asyncio.sleep(0.01)
    assert status.state == RunState.RUNNING  # `side` still runs
    await harness.op("resume", task_token=status.approvals[0].task_token, output="pass")
    for _ in range(500):
        if harness.fake.calls("final"):
            break
        await asyncio.sleep(0.01)
    assert harness.fake.calls("final") == 1  # before `side` was released
    harness.gate.release.set()
    assert (await harness.final(ref.invocation_id)).output == "<final>"


async def test_a_timeout_fails_the_step_saying_so(harness: Harness) -> None:
    chain = {**CHAIN, "steps": [*CHAIN["steps"][:2],
                                {**APPROVE, "plugin_config": {"timeout_s": 1}},
                                CHAIN["steps"][3]]}
    ref = await harness.op("run_chain", chain=chain, inputs={"topic": "tea"}, options=FAST)
    [pending] = (await waiting(harness, ref.invocation_id)).approvals
    final = await harness.final(ref.invocation_id)
    assert final.state == RunState.FAILED
    assert "approval timed out" in (final.step("approve").statusMessage or "")
    assert "timeout_s=1 s" in (final.statusMessage or "")
    with pytest.raises(ConflictError, match="timed_out"):
        await harness.op("resume", task_token=pending.task_token, output="pass")


async def test_cancel_wins_over_a_later_resume(harness: Harness) -> None:
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"}, options=FAST)
    [pending] = (await waiting(harness, ref.invocation_id)).approvals
    await harness.op("cancel", invocation_id=ref.invocation_id)
    with pytest.raises(ConflictError):
        await harness.op("resume", task_token=pending.task_token, output="pass")
    status = await harness.op("run_status", invocation_id=ref.invocation_id)
    assert status.state == RunState.CANCELLED and status.approvals == []


async def test_the_step_waiting_callback_carries_the_token_and_text(harness: Harness) -> None:
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"}, options=FAST,
                           callback_url="https://hooks.example/cr")
    [pending] = (await waiting(harness, ref.invocation_id)).approvals
    await harness.op("resume", task_token=pending.task_token, output="greenlight")
    await harness.final(ref.invocation_id)
    bodies = await harness.delivered(6)
    [event] = [b for b in bodies if b["type"] == "step.waiting"]
    assert (event["step"], event["task_token"], event["text"]) == (
        "approve", pending.task_token, "Greenlight <pitch>?")
    assert event["choices"] == ["greenlight", "pass"]
    finished = [b["step"] for b in bodies if b["type"] == "step.finished"]
    assert sorted(finished) == ["approve", "final", "pitch", "side"]  # each announced once


async def test_without_the_service_an_approval_step_is_refused_before_any_call() -> None:
    compiled = compile_chain(CHAIN)
    with pytest.raises(ChainDefinitionError, match="step `approve` waits for human approval"):
        await run_chain(compiled, {"topic": "tea"}, {})


@pytest.mark.parametrize(("config", "problem"), [
    ({}, "requires `plugin_config.timeout_s`"),
    ({"timeout_s": 10**9}, "CHAINRUNNER_MAX_APPROVAL_S"),
    ({"timeout_s": 5, "choices": ["a", "a"]}, "choices repeat"),
    ({"timeout_s": 5, "colour": "red"}, "has no option `colour`"),
], ids=["no-timeout", "over-limit", "repeated-choice", "unknown-option"])
def test_the_plugin_config_is_validated_statically(config: dict[str, object],
                                                  problem: str) -> None:
    chain = {**CHAIN, "steps": [*CHAIN["steps"][:2],
                                {**APPROVE, "plugin_config": config}, CHAIN["steps"][3]]}
    with pytest.raises(ChainDefinitionError, match="step `approve`") as excinfo:
        compile_chain(chain)
    assert problem in str(excinfo.value)


MOVIE_PITCH = load_chain(Path(__file__).resolve().parents[2] / "chains" / "specs"
                         / "movie-pitch.json").model_dump(mode="json", exclude_unset=True)


async def test_an_approval_inside_a_loop_waits_each_iteration_and_pass_loops_back(
        harness: Harness) -> None:
    ref = await harness.op("run_chain", chain=MOVIE_PITCH, inputs={"genre": "noir"},
                           options={**FAST, "llm": "mock"})
    [first] = (await waiting(harness, ref.invocation_id)).approvals
    assert first.step == "producer[0]" and "idea-2: <idea-2[0]>" in first.text
    assert first.choices == ["idea-1", "idea-2", "idea-3", "pass"]
    await harness.op("resume", task_token=first.task_token, output="pass")
    for _ in range(500):  # the loop goes back: three new ideas, then the producer again
        status = await waiting(harness, ref.invocation_id)
        if status.approvals and status.approvals[0].step == "producer[1]":
            break
        await asyncio.sleep(0.01)
    [second] = status.approvals
    assert second.step == "producer[1]" and "idea-2: <idea-2[1]>" in second.text
    assert status.step("producer[0]").output == "pass"
    assert status.step("one-page-pitch").state == RunState.WAITING
    [request] = [r for r in harness.fake.requests if r.step == "idea-1[1]"]
    assert '"producer": "pass"' in request.messages[-1].content  # it sees the passed round
    with pytest.raises(ConflictError, match="already used"):
        await harness.op("resume", task_token=first.task_token, output="idea-1")
    await harness.op("resume", task_token=second.task_token, output="idea-2")
    final = await harness.final(ref.invocation_id)
    assert final.state == RunState.SUCCEEDED, final.statusMessage
    assert final.step("producer").output == "idea-2" and final.output == "<one-page-pitch>"
    assert (final.step("pitching").statusMessage or "").startswith(
        "`until` held after 2 iteration(s)")
    [pitch] = [r for r in harness.fake.requests if r.step == "one-page-pitch"]
    assert "idea-2: <idea-2[1]>" in pitch.messages[-1].content
    assert "The producer answered `idea-2`" in pitch.messages[-1].content
    for handle in ("idea-1[0]", "idea-2[0]", "idea-3[0]", "idea-1[1]"):  # none called twice
        assert harness.fake.calls(handle) == 1
    assert harness.fake.calls("one-page-pitch") == 1
