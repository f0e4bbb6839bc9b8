"""Per-step retry, timeout_s and catch, and the chain's deadline_s, run by the engine through
a fake generator at the Protocol seam."""

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from chainlets.engine.models import (
    CaughtError,
    ErrorKind,
    Generation,
    GenerationRequest,
    InvocationResult,
    RunOptions,
    RunState,
)
from chainlets.engine.policies import StepPolicies
from chainlets.engine.retry import RetryPolicy
from chainlets.engine.scheduler import run_chain
from chainlets.engine.timeouts import AttemptTimer
from chainlets.errors import GenerationError, TransientGenerationError
from chainlets.language.compiler import CompiledChain, compile_chain
from chainlets.language.policies import ERROR_KINDS
from mocks.fake_generator import FakeGenerator
from tests.test_code_steps import code_step
from tests.test_code_steps import run as run_code_chain

FAST = RunOptions(llm="mock", initial_backoff_s=0, max_backoff_s=0)
NO_WAIT = {"initial_backoff_s": 0, "max_backoff_s": 0}


def chain(*steps: dict[str, Any], **extra: Any) -> CompiledChain:
    return compile_chain({"handle": "test", "steps": list(steps), **extra})


def step(handle: str, prompt: str = "go", **extra: Any) -> dict[str, Any]:
    return {"handle": handle, "prompt": prompt, "plugin": "mock", **extra}


async def run(compiled: CompiledChain, fake: Any, options: RunOptions = FAST,
              **kwargs: Any) -> InvocationResult:
    return await run_chain(compiled, {}, {"mock": fake}, options, **kwargs)


@dataclass
class HungBackend:
    """Never answers its first `hangs` calls (as a backend that accepted the request and went
    quiet); records each call cancelled while it hung, then answers `ok`."""

    hangs: int = 1
    requests: list[GenerationRequest] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)

    async def run_remote(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        number = len(self.requests)
        if number <= self.hangs:
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:
                self.cancelled.append(number)
                raise
        return Generation(text="ok")


def test_every_error_kind_a_policy_names_is_an_engine_error_kind() -> None:
    assert set(ERROR_KINDS) == {kind.value for kind in ErrorKind} - {"cancelled"}
    assert ErrorKind("schema") is ErrorKind.SCHEMA


async def test_retry_on_model_retries_failures_the_run_would_not() -> None:
    fake = FakeGenerator(replies={"a": [GenerationError("no"), GenerationError("no"), "A"],
                                  "b": [GenerationError("no"), "B"]})
    result = await run(chain(step("a", retry={"on": ["model"], **NO_WAIT}), step("b")), fake)

    a, b = result.step("a"), result.step("b")
    assert (a.state, a.output, len(a.attempts)) == (RunState.SUCCEEDED, "A", 3)
    assert [x.error_kind for x in a.attempts] == [ErrorKind.MODEL, ErrorKind.MODEL, None]
    assert a.attempts[0].error == "GenerationError: no"
    assert (b.state, len(b.attempts)) == (RunState.FAILED, 1)  # the run's default: transient


async def test_retry_on_timeout_alone_does_not_retry_a_rate_limit() -> None:
    fake = FakeGenerator(replies={"a": [TransientGenerationError("429"), "A"]})
    result = await run(chain(step("a", retry={"on": ["timeout"]})), fake)
    assert (result.step("a").state, len(result.step("a").attempts)) == (RunState.FAILED, 1)
    assert result.step("a").error_kind is ErrorKind.MODEL


@pytest.mark.parametrize(("retry", "attempts"), [({"max_attempts": 5}, 5),
                                                 ({"max_attempts": 1}, 1), ({}, 3)],
                         ids=["more", "none", "the-run's"])
async def test_the_step_max_attempts_overrides_the_run(retry: dict[str, Any],
                                                       attempts: int) -> None:
    fake = FakeGenerator(default=TransientGenerationError("busy"))
    result = await run(chain(step("a", retry={**retry, **NO_WAIT})), fake)
    assert fake.calls("a") == len(result.step("a").attempts) == attempts


def test_backoff_doubles_up_to_its_cap_and_jitter_stays_within_half_the_first() -> None:
    exact = RetryPolicy(max_attempts=6, initial_backoff_s=0.1, max_backoff_s=0.5, jitter=False)
    assert [exact.backoff_s(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    jittered = RetryPolicy(max_attempts=6, initial_backoff_s=0.1, max_backoff_s=0.5)
    for failed in range(1, 6):
        delays = [jittered.backoff_s(failed) for _ in range(200)]
        low = min(0.1 * 2 ** (failed - 1), 0.5)
        assert all(low <= d <= min(low + 0.05, 0.5) for d in delays)


async def test_a_step_retry_overrides_only_the_fields_it_sets() -> None:
    run_policy = RetryPolicy(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=8)
    policies = StepPolicies(run_policy, AttemptTimer(120))
    compiled = chain(step("a", retry={"max_backoff_s": 2, "jitter": False, "on": ["timeout"]},
                          timeout_s=3), step("b", timeout_s=3))
    policy, timer = policies.of(compiled.steps["a"].spec)
    assert policy == RetryPolicy(max_attempts=3, initial_backoff_s=0.5, max_backoff_s=2,
                                 jitter=False, on=frozenset({"timeout"}))
    assert (timer.timeout_s, timer.name) == (3, "timeout_s")
    assert policies.of(compiled.steps["b"].spec) == (run_policy, timer)  # one timer per limit


async def test_timeout_s_cancels_the_hung_call_and_retry_on_timeout_tries_again() -> None:
    backend = HungBackend(hangs=1)
    compiled = chain(step("a", timeout_s=0.05, retry={"on": ["timeout"], **NO_WAIT}))
    result = await run(compiled, backend)

    record = result.step("a")
    assert (record.state, record.output) == (RunState.SUCCEEDED, "ok")
    assert backend.cancelled == [1]  # the hung call was cancelled, not left running
    first = record.attempts[0]
    assert first.error_kind is ErrorKind.TIMEOUT
    assert first.error == ("StepTimeoutError: generator `mock` gave no answer within "
                           "timeout_s=0.05 s; the attempt was abandoned")
    assert [r.timeout_s for r in backend.requests] == [0.05, 0.05]  # handed to the backend


async def test_a_timeout_is_not_retried_when_retry_on_leaves_it_out() -> None:
    backend = HungBackend(hangs=5)
    result = await run(chain(step("a", timeout_s=0.02, retry={"on": ["model"]})), backend)
    assert (result.step("a").state, len(result.step("a").attempts)) == (RunState.FAILED, 1)
    assert result.step("a").error_kind is ErrorKind.TIMEOUT and backend.cancelled == [1]


async def test_steps_without_timeout_s_keep_the_run_step_timeout() -> None:
    backend = HungBackend(hangs=0)
    await run(chain(step("a"), step("b", timeout_s=2)), backend,
              RunOptions(llm="mock", step_timeout_s=7))
    assert {r.step: r.timeout_s for r in backend.requests} == {"a": 7, "b": 2}


@pytest.mark.parametrize(("output", "text"), [("sorry", "sorry"),
                                              ({"ok": False}, '{"ok": false}')],
                         ids=["text", "json"])
async def test_catch_output_becomes_the_step_output_and_the_chain_goes_on(
        output: Any, text: str) -> None:
    fake = FakeGenerator(replies={"a": GenerationError("refused"),
                                  "b": lambda r: f"saw {r.messages[-1].content}"})
    result = await run(chain(step("a", catch={"output": output}), step("b", "{a}")), fake)

    a = result.step("a")
    assert result.state == RunState.SUCCEEDED and result.output == f"saw {text}"
    assert (a.state, a.output, a.error_kind) == (RunState.SUCCEEDED, text, None)
    assert a.caught == CaughtError(error="GenerationError: refused",
                                   error_kind=ErrorKind.MODEL)
    assert a.statusMessage == "caught: GenerationError: refused; the output is `catch.output`"
    assert [x.error_kind for x in a.attempts] == [ErrorKind.MODEL]


async def test_a_catch_step_runs_on_failure_with_the_error_and_gives_its_output() -> None:
    fake = FakeGenerator(replies={
        "a": TransientGenerationError("HTTP 503"), "src": "S",
        "fix": lambda r: f"fixed<{r.messages[-1].content}>",
        "b": lambda r: f"b<{r.messages[-1].content}>"})
    compiled = chain(step("src"),
                     step("a", "{src}", retry={"max_attempts": 2, **NO_WAIT},
                          catch={"step": "fix"}),
                     step("fix", "{src}: {error_kind}: {error}"),
                     step("b", "{a}"))
    result = await run(compiled, fake)

    a, fix = result.step("a"), result.step("fix")
    error = "TransientGenerationError: HTTP 503"
    assert fix.state == RunState.SUCCEEDED and fix.output == f"fixed<S: model: {error}>"
    assert (a.state, a.output) == (RunState.SUCCEEDED, fix.output)
    assert a.caught == CaughtError(error=error, error_kind=ErrorKind.MODEL, step="fix")
    assert len(a.attempts) == 2 and a.finished_at is not None and fix.finished_at is not None
    assert a.finished_at >= fix.finished_at  # it ended when its catch step did
    assert result.output == f"b<{fix.output}>" and result.state == RunState.SUCCEEDED
    assert fake.calls("fix") == 1


@pytest.mark.parametrize("catch", [{"output": "fallback"}, {"step": "fix"}],
                         ids=["value", "step"])
async def test_a_caught_step_is_committed_before_its_dependents_start(
        catch: dict[str, str]) -> None:
    committed: list[str] = []
    fake = FakeGenerator(replies={"a": GenerationError("no"),
                                  "b": lambda r: f"b after {committed}"})

    async def commit(record: Any) -> None:
        await asyncio.sleep(0)
        committed.append(record.handle if record.caught is None else f"{record.handle}!")

    fix = [step("fix", "{error}")] if "step" in catch else []
    compiled = chain(step("a", catch=catch), *fix, step("b", "{a}"))
    result = await run(compiled, fake, commit=commit)
    assert result.state == RunState.SUCCEEDED
    assert result.output == ("b after ['a!']" if "output" in catch else "b after ['fix', 'a!']")


async def test_a_catch_step_is_skipped_when_its_step_succeeds() -> None:
    fake = FakeGenerator()
    compiled = chain(step("a", catch={"step": "fix"}), step("fix", "{error}"),
                     step("after-fix", "{fix}"), step("b", "{a}"))
    result = await run(compiled, fake)
    assert result.state == RunState.SUCCEEDED and result.step("a").caught is None
    assert result.step("fix").state == RunState.SKIPPED
    assert result.step("fix").statusMessage == ("not run: step `a` succeeded, so its catch step "
                                                "was not needed")
    assert result.step("after-fix").state == RunState.SKIPPED
    assert fake.calls("fix") == 0 and result.step("b").state == RunState.SUCCEEDED


async def test_catch_errors_catches_only_the_kinds_it_names() -> None:
    fake = FakeGenerator(replies={"a": GenerationError("refused")})
    compiled = chain(step("a", catch={"step": "fix", "errors": ["timeout", "transient"]}),
                     step("fix", "{error}"), step("b", "{a}"))
    result = await run(compiled, fake)
    assert result.state == RunState.FAILED and result.step("a").state == RunState.FAILED
    assert result.step("fix").statusMessage == (
        "not run: step `a` failed with a `model` error, which its catch does not catch (it "
        "catches `timeout`, `transient`)")
    assert result.step("b").state == RunState.SKIPPED and fake.calls("fix") == 0


async def test_catch_errors_transient_catches_a_rate_limit() -> None:
    fake = FakeGenerator(replies={"a": TransientGenerationError("429")})
    compiled = chain(step("a", retry={"max_attempts": 1},
                          catch={"output": "later", "errors": ["transient"]}))
    assert (await run(compiled, fake)).step("a").output == "later"


async def test_a_failing_catch_step_fails_its_step_naming_both_errors() -> None:
    fake = FakeGenerator(replies={"a": GenerationError("first"), "fix": GenerationError("2nd")})
    compiled = chain(step("a", catch={"step": "fix"}), step("fix", "{error}"), step("b", "{a}"))
    result = await run(compiled, fake)
    assert result.state == RunState.FAILED
    assert result.step("a").statusMessage == ("GenerationError: first; its catch step `fix` "
                                              "failed too: GenerationError: 2nd")
    assert result.step("b").state == RunState.SKIPPED


async def test_map_items_take_the_map_retry_and_the_map_catches_as_a_whole() -> None:
    replies: dict[str, Any] = {"m[0]": [GenerationError("x"), "zero"], "m[1]": "one"}
    fake = FakeGenerator(replies=replies)
    compiled = chain(step("m", "{item}", map={"over": "xs"}, retry={"on": ["model"], **NO_WAIT}),
                     inputs=[{"name": "xs", "default": ["a", "b"]}])
    result = await run(compiled, fake)
    assert result.step("m").output == '["zero", "one"]'
    assert [len(result.step(f"m[{i}]").attempts) for i in (0, 1)] == [2, 1]

    failing = FakeGenerator(replies={"m[1]": GenerationError("no")})
    compiled = chain(step("m", "{item}", map={"over": "xs"}, catch={"output": []}),
                     inputs=[{"name": "xs", "default": ["a", "b"]}])
    result = await run(compiled, failing)
    assert result.step("m[1]").state == RunState.FAILED and result.step("m[1]").caught is None
    assert result.step("m").output == "[]" and result.step("m").caught is not None
    assert result.state == RunState.SUCCEEDED


async def test_a_loop_body_step_with_catch_output_keeps_the_loop_going() -> None:
    fake = FakeGenerator(replies={"draft[0]": GenerationError("no"),
                                  "draft[1]": GenerationError("no")})
    compiled = chain({"handle": "l", "loop": {"max_iterations": 2, "steps": [
        step("draft", catch={"output": "fallback"}), step("edit", "{draft}")]}})
    result = await run(compiled, fake)
    assert result.state == RunState.SUCCEEDED
    assert json.loads(result.step("l").output or "") == [{"draft": "fallback", "edit": "ok"}] * 2


async def test_a_caught_loop_succeeds_and_its_failed_iteration_fails_the_run_no_more() -> None:
    fake = FakeGenerator(replies={"draft[1]": GenerationError("no")})
    compiled = chain({"handle": "l", "catch": {"output": "gave up"}, "loop": {
        "max_iterations": 3, "steps": [step("draft"), step("edit", "{draft}")]}})
    result = await run(compiled, fake)
    assert (result.state, result.output) == (RunState.SUCCEEDED, "gave up")
    assert result.step("draft[1]").state == RunState.FAILED
    assert result.step("edit[1]").state == RunState.SKIPPED
    assert result.step("edit").statusMessage == ("not run: loop `l` failed and its catch caught "
                                                 "it, so its steps have no last output")


async def test_the_chain_deadline_ends_the_run_when_smaller_than_the_run_option() -> None:
    result = await run(chain(step("a"), deadline_s=0.05), HungBackend(hangs=1))
    assert result.state == RunState.FAILED
    assert result.statusMessage == ("the run's deadline (deadline_s=0.05 s) passed: 1 "
                                    "unfinished step(s) failed: `a`")


async def test_the_run_deadline_wins_when_smaller_than_the_chain_one() -> None:
    result = await run(chain(step("a"), deadline_s=100), HungBackend(hangs=1),
                       RunOptions(llm="mock", deadline_s=0.05))
    assert result.statusMessage is not None and "deadline_s=0.05 s" in result.statusMessage


async def test_a_resumed_run_skips_the_catch_step_of_a_step_that_succeeded() -> None:
    compiled = chain(step("a", catch={"step": "fix"}), step("fix", "{error}"),
                     step("b", "{a}"))
    first = await run(compiled, FakeGenerator(replies={"b": GenerationError("no")}))
    persisted = InvocationResult.model_validate_json(first.model_dump_json())
    fake = FakeGenerator()
    second = await run(compiled, fake, previous=persisted)
    assert second.state == RunState.SUCCEEDED
    assert fake.calls("fix") == 0 and fake.calls("a") == 0 and fake.calls("b") == 1
    assert second.step("fix").state == RunState.SKIPPED


async def test_a_caught_step_keeps_its_catch_across_a_resumed_run() -> None:
    compiled = chain(step("a", catch={"step": "fix"}), step("fix", "{error}"),
                     step("b", "{a}"))
    first = await run(compiled, FakeGenerator(replies={"a": GenerationError("x"),
                                                       "b": GenerationError("no")}))
    assert first.step("a").caught is not None and first.step("fix").state == RunState.SUCCEEDED
    persisted = InvocationResult.model_validate_json(first.model_dump_json())
    assert persisted.step("a").caught == first.step("a").caught
    fake = FakeGenerator()
    second = await run(compiled, fake, previous=persisted)
    assert second.state == RunState.SUCCEEDED and fake.calls("b") == 1
    assert fake.calls("a") == fake.calls("fix") == 0


async def test_a_step_out_of_repairs_is_caught_as_a_schema_failure() -> None:
    schema = {"type": "object", "required": ["n"]}
    compiled = chain(step("j", output_schema=schema, max_repairs=1,
                          catch={"output": {"n": 0}, "errors": ["schema"]}),
                     step("k", output_schema=schema, max_repairs=0,
                          catch={"output": "x", "errors": ["timeout"]}),
                     step("out", "{j.n}"))
    result = await run(compiled, FakeGenerator(replies={"j": "not json", "k": "nope"}))
    j, k = result.step("j"), result.step("k")
    assert (j.state, j.output, len(j.attempts)) == (RunState.SUCCEEDED, '{"n": 0}', 2)
    assert j.caught is not None and j.caught.error_kind is ErrorKind.SCHEMA
    assert (k.state, k.error_kind) == (RunState.FAILED, ErrorKind.SCHEMA)
    assert result.step("out").output == "ok" and result.state == RunState.FAILED  # by `k`


async def test_repairs_run_under_the_step_timeout() -> None:
    backend = HungBackend(hangs=0)
    await run(chain(step("j", output_schema={"type": "object"}, max_repairs=1, timeout_s=4)),
              backend)
    assert [r.timeout_s for r in backend.requests] == [4, 4]  # the call, then its repair


async def test_a_code_step_takes_its_own_timeout_retry_and_catch() -> None:
    result = await run_code_chain(
        {**code_step("stuck", "hang_async"), "timeout_s": 0.05,
         "retry": {"max_attempts": 2, "on": ["timeout"], **NO_WAIT},
         "catch": {"output": {"late": True}}},
        {**code_step("boom", "fail", reason="no"), "retry": {"max_attempts": 3, "on": ["model"],
                                                              **NO_WAIT}},
        options=RunOptions(llm="mock", max_attempts=1, step_timeout_s=60))
    stuck, boom = result.step("stuck"), result.step("boom")
    assert [a.error_kind for a in stuck.attempts] == [ErrorKind.TIMEOUT] * 2
    assert stuck.attempts[0].error is not None and "timeout_s=0.05 s" in stuck.attempts[0].error
    assert (stuck.state, stuck.output) == (RunState.SUCCEEDED, '{"late": true}')
    assert stuck.caught is not None and stuck.caught.error_kind is ErrorKind.TIMEOUT
    assert len(boom.attempts) == 3 and boom.state == RunState.FAILED  # retried on `model`


@dataclass
class ByStep:
    """`a` fails, `slow-*` never answer, anything else answers `fixed`."""

    async def run_remote(self, request: GenerationRequest) -> Generation:
        if request.step == "a":
            raise GenerationError("backend said no")
        if request.step.startswith("slow"):
            await asyncio.get_running_loop().create_future()
        return Generation(text="fixed")


async def test_a_step_whose_catch_step_never_got_a_slot_ends_as_the_run_did() -> None:
    compiled = chain(step("a", catch={"step": "fix"}), step("fix", "{error}"),
                     step("slow-1"), step("slow-2"), deadline_s=0.2)
    result = await run(compiled, ByStep(), RunOptions(llm="mock", max_concurrency=2))
    states = {record.handle: record.state for record in result.steps}
    assert states["fix"] not in (RunState.SUCCEEDED, RunState.RUNNING)
    assert states["a"] == RunState.FAILED
    assert result.step("a").statusMessage is not None
    assert "deadline" in (result.step("a").statusMessage or "")
