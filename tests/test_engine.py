"""The eager engine, observed through a fake generator at the Protocol seam."""

import asyncio
import itertools
import logging
from typing import Any

import aiohttp
import httpx
import pytest

from chainlets.engine.failures import Failure
from chainlets.engine.models import (
    AttemptRecord,
    ErrorKind,
    Generation,
    GenerationRequest,
    InvocationResult,
    RunOptions,
    RunState,
    StepRecord,
)
from chainlets.engine.scheduler import _Execution, run_chain
from chainlets.engine.state import check_transition
from chainlets.errors import (
    ChainDefinitionError,
    ConflictError,
    GenerationError,
    InputsError,
    TransientGenerationError,
)
from chainlets.language.compiler import CompiledChain, compile_chain
from chainlets.language.spec import parse_chain
from mocks.fake_generator import FakeGenerator

FAST = RunOptions(llm="mock", initial_backoff_s=0, max_backoff_s=0)


def chain(*steps: dict[str, Any], **extra: Any) -> CompiledChain:
    return compile_chain(parse_chain({"handle": "test", "steps": list(steps), **extra}))


def step(handle: str, prompt: str = "go", **extra: Any) -> dict[str, Any]:
    return {"handle": handle, "prompt": prompt, "plugin": "mock", **extra}


async def run(compiled: CompiledChain, fake: FakeGenerator, inputs: dict[str, str] | None = None,
              options: RunOptions = FAST, **kwargs: Any) -> InvocationResult:
    return await run_chain(compiled, inputs or {}, {"mock": fake}, options, **kwargs)


async def test_independent_steps_run_at_the_same_time() -> None:
    fake = FakeGenerator(latency_s=0.05)
    compiled = chain(step("root"), *(step(f"leaf-{i}", "{root}") for i in range(5)))
    result = await run(compiled, fake)
    assert result.state == RunState.SUCCEEDED
    assert fake.max_in_flight == 5


async def test_every_step_is_called_exactly_once_in_joins() -> None:
    fake = FakeGenerator(latency_s=0.01, replies={"b": "B", "c": "C"})
    compiled = chain(step("a"), step("b", "{a}"), step("c", "{a}"), step("d", "{b}+{c}"),
                     step("e", "{d}{a}{b}"))
    result = await run(compiled, fake)
    assert result.state == RunState.SUCCEEDED
    assert {s: fake.calls(s) for s in "abcde"} == dict.fromkeys("abcde", 1)
    assert [r.messages[-1].content for r in fake.requests if r.step == "d"] == ["B+C"]


async def test_a_step_starts_when_its_own_inputs_exist_not_when_a_level_finishes() -> None:
    """root → X (slow) ∥ Y1 → Y2 (fast) → join: Y2 runs while X is still running."""
    order: list[tuple[str, RunState]] = []

    def observe(record: StepRecord) -> None:
        order.append((record.handle, record.state))

    fake = FakeGenerator(replies={"x": lambda _: "x"}, latency_s=0.0)
    slow = asyncio.Event()

    async def gated(request: Any) -> Any:
        if request.step == "x":
            await slow.wait()
        return await FakeGenerator.run_remote(fake, request)

    class Gated:
        async def run_remote(self, request: Any) -> Any:
            result = await gated(request)
            if request.step == "y2":
                slow.set()
            return result

    compiled = chain(step("root"), step("x", "{root}"), step("y1", "{root}"),
                     step("y2", "{y1}"), step("join", "{x} {y2}"))
    result = await run_chain(compiled, {}, {"mock": Gated()}, FAST, observer=observe)
    assert result.state == RunState.SUCCEEDED
    assert order.index(("y2", RunState.SUCCEEDED)) < order.index(("x", RunState.SUCCEEDED))
    assert order.index(("join", RunState.RUNNING)) == order.index(("x", RunState.SUCCEEDED)) + 1
    join, x = result.step("join"), result.step("x")
    assert join.started_at is not None and x.finished_at is not None
    assert join.started_at >= x.finished_at


async def test_failure_propagates_to_the_end_and_independent_branches_keep_outputs() -> None:
    fake = FakeGenerator(latency_s=0.01, replies={"b": GenerationError("boom"), "d": "D"})
    compiled = chain(step("a"), step("b", "{a}"), step("c", "{b}"), step("e", "{c}"),
                     step("d", "{a}"))
    result = await run(compiled, fake)
    assert result.state == RunState.FAILED
    assert result.statusMessage == "step `b` failed: GenerationError: boom"
    assert result.output is None
    states = {r.handle: (r.state, r.statusMessage) for r in result.steps}
    assert states["b"] == (RunState.FAILED, "GenerationError: boom")
    assert states["c"] == (RunState.SKIPPED, "not run: depends on `b`, which failed")
    assert states["e"] == (RunState.SKIPPED, "not run: depends on `c`, which was skipped")
    assert states["d"] == (RunState.SUCCEEDED, None)
    assert result.step("d").output == "D"
    assert fake.calls("c") == fake.calls("e") == 0


async def test_transient_failures_are_retried_and_every_attempt_is_recorded() -> None:
    flaky: list[Any] = [TransientGenerationError("429"), TimeoutError(), "fine"]
    fake = FakeGenerator(replies={"a": flaky})
    result = await run(chain(step("a")), fake)
    record = result.step("a")
    assert record.state == RunState.SUCCEEDED and record.output == "fine"
    assert [(a.number, a.error) for a in record.attempts] == [
        (1, "TransientGenerationError: 429"), (2, "TimeoutError"), (3, None)]


async def test_lost_connections_to_a_generator_chainlet_are_retried() -> None:
    """Deployed, truss reaches dependency chainlets over aiohttp; a dropped connection while
    a chainlet restarts is worth another attempt."""
    fake = FakeGenerator(replies={"a": [aiohttp.ServerDisconnectedError(),
                                        ConnectionRefusedError(), "ok"]})
    result = await run(chain(step("a")), fake)
    assert result.step("a").output == "ok" and len(result.step("a").attempts) == 3


async def test_retries_stop_after_max_attempts() -> None:
    fake = FakeGenerator(replies={"a": TransientGenerationError("503")})
    options = FAST.model_copy(update={"max_attempts": 4})
    result = await run(chain(step("a")), fake, options=options)
    assert result.state == RunState.FAILED
    assert len(result.step("a").attempts) == 4 and fake.calls("a") == 4
    assert result.statusMessage == "step `a` failed: TransientGenerationError: 503"


async def test_permanent_failures_are_not_retried() -> None:
    fake = FakeGenerator(replies={"a": GenerationError("400 bad request")})
    result = await run(chain(step("a")), fake)
    assert fake.calls("a") == 1 and len(result.step("a").attempts) == 1


async def test_backoff_waits_between_attempts() -> None:
    fake = FakeGenerator(replies={"a": [TransientGenerationError("429"), "ok"]})
    options = RunOptions(llm="mock", initial_backoff_s=0.05, max_backoff_s=0.05)
    result = await run(chain(step("a")), fake, options=options)
    first, second = result.step("a").attempts
    assert (second.started_at - first.finished_at).total_seconds() >= 0.025


async def test_global_concurrency_limit_bounds_calls_in_flight() -> None:
    fake = FakeGenerator(latency_s=0.02)
    options = FAST.model_copy(update={"max_concurrency": 3})
    result = await run(chain(*(step(f"s{i}") for i in range(10))), fake, options=options)
    assert result.state == RunState.SUCCEEDED
    assert fake.max_in_flight == 3


async def test_resume_reruns_only_steps_that_did_not_succeed() -> None:
    compiled = chain(step("a"), step("b", "{a}"), step("c", "{b}"))
    first = await run(compiled, FakeGenerator(replies={"a": "A", "b": GenerationError("x")}))
    assert first.state == RunState.FAILED
    persisted = InvocationResult.model_validate_json(first.model_dump_json())
    fake = FakeGenerator(replies={"b": lambda r: r.messages[-1].content + "!"})
    second = await run(compiled, fake, previous=persisted)
    assert second.state == RunState.SUCCEEDED
    assert fake.calls("a") == 0 and fake.calls("b") == 1 and fake.calls("c") == 1
    assert second.step("b").output == "A!"
    assert second.step("a") == first.step("a")


async def test_observer_sees_each_transition_once() -> None:
    seen: list[tuple[str, str]] = []
    compiled = chain(step("a"), step("b", "{a}"))
    await run(compiled, FakeGenerator(),
              observer=lambda r: seen.append((r.handle, r.state.value)))
    assert seen == [("a", "running"), ("a", "succeeded"), ("b", "running"),
                    ("b", "succeeded")]


async def test_a_failing_observer_does_not_break_the_run(caplog: pytest.LogCaptureFixture) -> None:
    def broken(_: StepRecord) -> None:
        raise RuntimeError("observer bug")

    result = await run(chain(step("a")), FakeGenerator(), observer=broken)
    assert result.state == RunState.SUCCEEDED
    assert "step observer failed on step a" in caplog.text


async def test_messages_carry_system_prompt_history_and_overrides() -> None:
    fake = FakeGenerator(replies={"a": "OUT-A"})
    compiled = chain(
        step("a"),
        step("b", "{a} / {topic} / {tone}", system_prompt="You are {tone}.",
             messages=[{"role": "user", "content": "hi {topic}"},
                       {"role": "assistant", "content": "hello"}],
             input={"tone": "dry", "topic": "step-topic"}))
    await run(compiled, fake, inputs={"topic": "user-topic"})
    request = next(r for r in fake.requests if r.step == "b")
    assert [(m.role, m.content) for m in request.messages] == [
        ("system", "You are dry."), ("user", "hi step-topic"), ("assistant", "hello"),
        ("user", "OUT-A / step-topic / dry")]


async def test_output_is_the_named_step_or_the_last_one() -> None:
    fake = FakeGenerator(replies={"a": "A", "b": "B"})
    assert (await run(chain(step("a"), step("b")), fake)).output == "B"
    assert (await run(chain(step("a"), step("b"), output="a"), fake)).output == "A"


async def test_usage_and_timestamps_are_recorded() -> None:
    result = await run(chain(step("a")), FakeGenerator())
    record = result.step("a")
    assert record.usage is not None and record.usage.total_tokens == 2
    assert record.started_at is not None and record.finished_at is not None
    assert record.started_at <= record.finished_at


async def test_missing_inputs_fail_before_any_call() -> None:
    fake = FakeGenerator()
    with pytest.raises(InputsError, match="missing input `topic`"):
        await run(chain(step("a", "{topic}")), fake)
    assert fake.requests == []


async def test_a_plugin_without_a_generator_fails_before_any_call() -> None:
    compiled = chain({"handle": "a", "prompt": "x", "plugin": "gpt-3",
                      "plugin_config": {"max_words": 3}}, step("b"))
    fake = FakeGenerator()
    with pytest.raises(ChainDefinitionError, match=r"needs generator.*openai.*it has mock"):
        await run_chain(compiled, {}, {"mock": fake}, RunOptions(llm="openai"))
    assert fake.requests == []


async def test_llm_option_routes_model_plugins_to_the_selected_backend() -> None:
    mock, openai = FakeGenerator(default="m"), FakeGenerator(default="o")
    compiled = chain({"handle": "a", "prompt": "x", "plugin": "gpt-3",
                      "plugin_config": {"max_words": 3}}, step("b"))
    result = await run_chain(compiled, {}, {"mock": mock, "openai": openai},
                             RunOptions(llm="openai"))
    assert result.step("a").output == "o" and result.step("b").output == "m"
    assert mock.calls("a") == 0 and openai.calls("b") == 0


async def test_cancelling_a_run_cancels_its_steps() -> None:
    fake = FakeGenerator(latency_s=10)
    started = asyncio.Event()

    running: set[str] = set()

    def observe(record: StepRecord) -> None:
        running.add(record.handle)
        if running == {"a", "b"}:
            started.set()

    task = asyncio.create_task(run(chain(step("a"), step("b")), fake, observer=observe))
    await started.wait()
    await asyncio.sleep(0)  # let both step tasks reach the generator
    assert fake.in_flight == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake.in_flight == 0
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("step:")] == []


def step_tasks() -> list["asyncio.Task[Any]"]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("step:")]


async def test_a_fan_out_whose_source_fails_starts_none_of_its_dependents() -> None:
    fake = FakeGenerator(latency_s=0.01, replies={"a": GenerationError("boom")})
    compiled = chain(step("a"), *(step(f"b{i}", "{a}") for i in range(5)),
                     step("c", "{b0}{b1}"))
    result = await run(compiled, fake)
    assert result.state == RunState.FAILED
    assert {result.step(f"b{i}").statusMessage for i in range(5)} == \
        {"not run: depends on `a`, which failed"}
    assert result.step("c").state == RunState.SKIPPED
    assert [r.step for r in fake.requests] == ["a"]
    assert step_tasks() == []


async def test_a_step_cancelled_before_its_task_ran_is_recorded_cancelled() -> None:
    seen: list[tuple[str, RunState, ErrorKind | None]] = []
    fake = FakeGenerator()

    def observe(record: StepRecord) -> None:
        seen.append((record.handle, record.state, record.error_kind))
        if (record.handle, record.state) == ("a", RunState.SUCCEEDED):
            task.cancel()  # takes effect before the task `b` just got first runs

    task = asyncio.create_task(run(chain(step("a"), step("b", "{a}")), fake, observer=observe))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [("a", RunState.RUNNING, None), ("a", RunState.SUCCEEDED, None),
                    ("b", RunState.RUNNING, None), ("b", RunState.CANCELLED, ErrorKind.CANCELLED)]
    assert [r.step for r in fake.requests] == ["a"]
    assert step_tasks() == []


CANCELLED_MESSAGE = "cancelled: the run was cancelled before the step finished"


class _HangsOn:
    """Answers at once, except for one step, which never answers, and `failures`."""

    def __init__(self, hang: str) -> None:
        self.hang = hang
        self.started: list[str] = []
        self.hanging = asyncio.Event()
        self.failures: dict[str, Exception] = {}

    async def run_remote(self, request: GenerationRequest) -> Generation:
        self.started.append(request.step)
        if request.step in self.failures:
            raise self.failures[request.step]
        if request.step == self.hang:
            self.hanging.set()
            await asyncio.Event().wait()
        return Generation(text=request.step)


async def test_cancelling_a_sequence_records_the_step_that_was_running() -> None:
    seen: list[tuple[str, RunState, str | None]] = []
    generator = _HangsOn("b")
    compiled = chain(step("a"), step("b", "{a}"), step("c", "{b}"))
    task = asyncio.create_task(run_chain(
        compiled, {}, {"mock": generator}, FAST,
        observer=lambda r: seen.append((r.handle, r.state, r.statusMessage))))
    await generator.hanging.wait()
    assert generator.started == ["a", "b"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == [("a", RunState.RUNNING, None), ("a", RunState.SUCCEEDED, None),
                    ("b", RunState.RUNNING, None), ("b", RunState.CANCELLED, CANCELLED_MESSAGE)]
    assert step_tasks() == []


async def test_a_long_sequence_runs_each_step_once_after_the_previous_one() -> None:
    fake = FakeGenerator()
    compiled = chain(step("s0"), *(step(f"s{i}", f"{{s{i - 1}}}") for i in range(1, 300)))
    result = await run(compiled, fake)
    assert result.state == RunState.SUCCEEDED
    assert [r.step for r in fake.requests] == [f"s{i}" for i in range(300)]
    for before, after in itertools.pairwise(result.steps):
        assert before.finished_at is not None and after.started_at is not None
        assert after.started_at >= before.finished_at


async def test_steps_can_join_a_run_under_way() -> None:
    fake = FakeGenerator(latency_s=0.01, replies={"a": "A", "b": "B"})
    base = chain(step("a"), step("b", "{a}"))
    grown = chain(step("a"), step("b", "{a}"), step("c", "{a}+{b}"), step("d", "{a}!"))
    a_done = asyncio.Event()

    def observe(record: StepRecord) -> None:
        if record.handle == "a" and record.state == RunState.SUCCEEDED:
            a_done.set()

    ex = _Execution(base, {}, {"mock": fake}, FAST, observe)
    running = asyncio.create_task(ex.run({}))
    await asyncio.sleep(0)
    assert not a_done.is_set()
    ex.add_step(grown.steps["c"])  # waits for `a` (running) and `b` (waiting)
    await a_done.wait()
    ex.add_step(grown.steps["d"])  # `a` is done: starts at once
    with pytest.raises(ChainDefinitionError, match="step `c` is already part of this run"):
        ex.add_step(grown.steps["c"])
    result = await running
    assert result.state == RunState.SUCCEEDED
    assert [r.handle for r in result.steps] == ["a", "b", "c", "d"]
    assert {r.step: r.messages[-1].content for r in fake.requests} == \
        {"a": "go", "b": "A", "c": "A+B", "d": "A!"}


async def test_a_step_joining_a_run_must_depend_on_steps_of_the_run() -> None:
    ex = _Execution(chain(step("a")), {}, {"mock": FakeGenerator()}, FAST, None)
    stray = chain(step("x"), step("y", "{x}")).steps["y"]
    with pytest.raises(ChainDefinitionError, match="depends on x, not steps of this run"):
        ex.add_step(stray)


async def test_a_step_joining_after_its_dependency_failed_is_skipped() -> None:
    a_failed = asyncio.Event()
    seen: list[StepRecord] = []

    def observe(record: StepRecord) -> None:
        seen.append(record)
        if record.handle == "a" and record.state == RunState.FAILED:
            a_failed.set()

    generator = _HangsOn("b")  # keeps the run going
    generator.failures["a"] = GenerationError("boom")
    ex = _Execution(chain(step("a"), step("b")), {}, {"mock": generator}, FAST, observe)
    running = asyncio.create_task(ex.run({}))
    await a_failed.wait()
    late = chain(step("a"), step("c", "{a}")).steps["c"]
    ex.add_step(late)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert [(r.state, r.statusMessage) for r in seen if r.handle == "c"] == \
        [(RunState.SKIPPED, "not run: depends on `a`, which failed")]
    assert generator.started == ["a", "b"]
    with pytest.raises(ConflictError, match="cannot add step `c`: the run is over"):
        ex.add_step(late)


async def test_steps_waiting_for_a_slot_are_queued_and_hold_no_task() -> None:
    seen: list[tuple[str, RunState]] = []
    tasks_when_queued: list[str] = []
    generator = _HangsOn("none")

    def observe(record: StepRecord) -> None:
        seen.append((record.handle, record.state))
        if record.state == RunState.QUEUED:
            tasks_when_queued.extend(t.get_name() for t in step_tasks()
                                     if t.get_name() == f"step:{record.handle}")

    options = FAST.model_copy(update={"max_concurrency": 1})
    result = await run_chain(chain(step("a"), step("b"), step("c", "{a}")), {},
                             {"mock": generator}, options, observer=observe)
    assert result.state == RunState.SUCCEEDED
    assert seen == [("a", RunState.RUNNING), ("b", RunState.QUEUED),
                    ("a", RunState.SUCCEEDED), ("b", RunState.RUNNING), ("c", RunState.QUEUED),
                    ("b", RunState.SUCCEEDED), ("c", RunState.RUNNING),
                    ("c", RunState.SUCCEEDED)]
    assert tasks_when_queued == []
    b, a = result.step("b"), result.step("a")
    assert b.started_at is not None and a.finished_at is not None
    assert b.started_at >= a.finished_at  # its time counts from the slot, not from the queue


async def test_a_failed_step_frees_its_slot_for_a_queued_one() -> None:
    generator = _HangsOn("none")
    generator.failures["a"] = GenerationError("boom")
    options = FAST.model_copy(update={"max_concurrency": 1})
    result = await run_chain(chain(step("a"), step("b"), step("c", "{a}")), {},
                             {"mock": generator}, options)
    assert [(r.handle, r.state) for r in result.steps] == [
        ("a", RunState.FAILED), ("b", RunState.SUCCEEDED), ("c", RunState.SKIPPED)]
    assert generator.started == ["a", "b"]


async def test_a_step_joining_a_run_with_every_slot_taken_is_queued() -> None:
    seen: list[tuple[str, RunState]] = []
    generator = _HangsOn("a")
    options = FAST.model_copy(update={"max_concurrency": 1})
    ex = _Execution(chain(step("a")), {}, {"mock": generator}, options,
                    lambda r: seen.append((r.handle, r.state)))
    running = asyncio.create_task(ex.run({}))
    await generator.hanging.wait()
    ex.add_step(chain(step("x")).steps["x"])
    assert seen == [("a", RunState.RUNNING), ("x", RunState.QUEUED)]
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert generator.started == ["a"]
    assert step_tasks() == []


class _Bug(Exception):
    pass


@pytest.mark.parametrize(("error", "kind", "message", "calls"), [
    (GenerationError("400 bad request"), ErrorKind.MODEL, "GenerationError: 400 bad request", 1),
    (TransientGenerationError("503"), ErrorKind.MODEL, "TransientGenerationError: 503", 3),
    (TimeoutError(), ErrorKind.TIMEOUT, "TimeoutError", 3),
    (httpx.ReadTimeout("read timed out"), ErrorKind.TIMEOUT, "ReadTimeout: read timed out", 3),
    (ConnectionRefusedError("refused"), ErrorKind.CONNECTION, "ConnectionRefusedError: refused",
     3),
    (aiohttp.ServerDisconnectedError(), ErrorKind.CONNECTION,
     "ServerDisconnectedError: Server disconnected", 3),
    (ZeroDivisionError("division by zero"), ErrorKind.INTERNAL,
     "internal error in generator `mock`: ZeroDivisionError: division by zero", 1),
    (_Bug(), ErrorKind.INTERNAL, "internal error in generator `mock`: _Bug", 1),
], ids=["model", "transient", "timeout", "httpx-timeout", "refused", "disconnected",
        "zero-division", "empty-message"])
async def test_a_failed_step_says_what_kind_of_failure_ended_it(
        error: Exception, kind: ErrorKind, message: str, calls: int) -> None:
    fake = FakeGenerator(replies={"a": error})
    result = await run(chain(step("a"), step("b", "{a}")), fake)
    record = result.step("a")
    assert (record.state, record.error_kind, record.statusMessage) == \
        (RunState.FAILED, kind, message)
    assert [(a.error_kind, a.error) for a in record.attempts] == [(kind, message)] * calls
    assert result.statusMessage == f"step `a` failed: {message}"
    assert result.step("b").error_kind is None


async def test_a_bug_in_a_generator_is_logged_with_its_traceback(
        caplog: pytest.LogCaptureFixture) -> None:
    def divide(_: GenerationRequest) -> str:
        return str(1 / 0)

    result = await run(chain(step("a")), FakeGenerator(replies={"a": divide}))
    assert result.step("a").statusMessage == \
        "internal error in generator `mock`: ZeroDivisionError: division by zero"
    (logged,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged.getMessage() == \
        "step `a`: internal error in generator `mock`: ZeroDivisionError: division by zero"
    assert logged.exc_info is not None and logged.exc_info[0] is ZeroDivisionError
    assert "in divide" in caplog.text  # the traceback, down to the generator's own frame


async def test_a_generator_that_returns_no_generation_is_an_internal_error() -> None:
    class Wrong:
        async def run_remote(self, request: GenerationRequest) -> Any:
            return "text"

    result = await run_chain(chain(step("a")), {}, {"mock": Wrong()}, FAST)
    record = result.step("a")
    assert (record.error_kind, record.statusMessage) == (
        ErrorKind.INTERNAL, "internal error in generator `mock`: TypeError: run_remote returned "
        "str, not a Generation")


async def test_a_cancelled_step_says_so() -> None:
    generator = _HangsOn("a")
    seen: list[StepRecord] = []
    task = asyncio.create_task(run_chain(chain(step("a")), {}, {"mock": generator}, FAST,
                                         observer=seen.append))
    await generator.hanging.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(r.state, r.error_kind, r.statusMessage) for r in seen] == [
        (RunState.RUNNING, None, None),
        (RunState.CANCELLED, ErrorKind.CANCELLED, CANCELLED_MESSAGE)]


async def test_a_bug_in_the_engine_ends_the_run_with_it() -> None:
    class Broken(_Execution):
        def finish(self, handle: str, attempts: list[AttemptRecord],
                   outcome: Generation | Failure, message: str | None = None) -> None:
            raise RuntimeError("engine bug")

    ex = Broken(chain(step("a"), step("b")), {}, {"mock": FakeGenerator(latency_s=0.01)}, FAST,
                None)
    with pytest.raises(RuntimeError, match="engine bug"):
        await ex.run({})
    assert step_tasks() == []


def test_a_step_cannot_move_back_or_skip_running() -> None:
    done = StepRecord(handle="a", state=RunState.SUCCEEDED)
    with pytest.raises(ConflictError, match="step `a` cannot go from succeeded to running"):
        check_transition(done, StepRecord(handle="a", state=RunState.RUNNING))
    with pytest.raises(ConflictError, match="step `a` cannot go from waiting to succeeded"):
        check_transition(None, done)
