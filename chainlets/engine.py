"""The eager engine: each step starts the moment its dependencies have succeeded, exactly once.

Step tasks share no mutable state: a task gets its input values and hands one outcome to
`record`, the one place that records results and starts newly ready steps (synchronously, so
no other task interleaves), so a join starts exactly once, when its last dependency succeeds.
The graph the scheduler walks is the execution's own (`steps`, `dependents`, `waiting_on`),
so steps can be added while a run is under way (maps and loops build on that).

Per-step bookkeeping is plain Python on the hot path; a step's pydantic record is built for the
observer when there is one, otherwise while a dependent's model call is under way (or at the
end, for the last steps): benchmarks/engine.py measures the difference.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chainlets.compiler import CompiledChain, CompiledStep
from chainlets.errors import ChainDefinitionError
from chainlets.models import (
    Generation,
    GenerationRequest,
    InvocationResult,
    RunOptions,
    RunState,
    StepRecord,
    Usage,
)
from chainlets.plugins import LLM_BACKEND
from chainlets.protocols import GeneratorProtocol
from chainlets.retry import Attempt, RetryPolicy, describe_error

__all__ = ["StepObserver", "render_messages", "run_chain"]

log = logging.getLogger(__name__)

# Called synchronously with a step's record each time the step changes state; it must not
# block. Progress displays, persistence and callbacks hang off it.
StepObserver = Callable[[StepRecord], None]


def render_messages(step: CompiledStep, values: Mapping[str, str]) -> list[dict[str, str]]:
    """The step's chat messages, rendered: system prompt, earlier messages, then the prompt."""
    messages = []
    if step.system is not None:
        messages.append({"role": "system", "content": step.system.render(values)})
    messages.extend({"role": role, "content": t.render(values)} for role, t in step.history)
    messages.append({"role": "user", "content": step.prompt.render(values)})
    return messages


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a step task hands back; the engine alone turns it into record changes."""

    attempts: list[Attempt]
    generation: Generation | None = None
    error: str | None = None


class _StepRun:
    """A step's live state during a run."""

    __slots__ = ("attempts", "finished", "handle", "message", "output", "started", "state",
                 "usage")

    def __init__(self, handle: str) -> None:
        self.handle = handle
        self.state = RunState.WAITING
        self.message: str | None = None
        self.output: str | None = None
        self.started: datetime | None = None
        self.finished: datetime | None = None
        self.attempts: list[Attempt] = []
        self.usage: Usage | None = None

    @classmethod
    def from_record(cls, record: StepRecord) -> "_StepRun":
        run = cls(record.handle)
        run.state, run.message, run.output = record.state, record.statusMessage, record.output
        run.started, run.finished = record.started_at, record.finished_at
        run.attempts = [Attempt(a.number, a.started_at, a.finished_at, a.error)
                        for a in record.attempts]
        run.usage = record.usage
        return run

    def as_dict(self) -> dict[str, Any]:
        """The StepRecord's fields, for one validation of many records at once."""
        return {"handle": self.handle, "state": self.state, "statusMessage": self.message,
                "output": self.output, "started_at": self.started, "finished_at": self.finished,
                "attempts": [a._asdict() for a in self.attempts], "usage": self.usage}

    def to_record(self) -> StepRecord:
        return StepRecord.model_validate(self.as_dict())


@dataclass
class _Execution:
    chain: CompiledChain
    inputs: Mapping[str, str]
    generators: Mapping[str, GeneratorProtocol]
    options: RunOptions
    observer: StepObserver | None
    policy: RetryPolicy
    loop: asyncio.AbstractEventLoop
    done: "asyncio.Future[None]"
    steps: dict[str, CompiledStep] = field(default_factory=dict)
    dependents: dict[str, list[str]] = field(default_factory=dict)
    waiting_on: dict[str, int] = field(default_factory=dict)
    runs: dict[str, _StepRun] = field(default_factory=dict)
    records: dict[str, StepRecord] = field(default_factory=dict)  # of finished steps
    outputs: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, "asyncio.Task[None]"] = field(default_factory=dict)
    first_failure: str | None = None
    semaphore: asyncio.Semaphore | None = None
    started: bool = False

    def add_step(self, step: CompiledStep, prior: StepRecord | None = None) -> None:
        """Schedule `step`: it starts as soon as every dependency has succeeded."""
        handle = step.handle
        self.steps[handle] = step
        self.dependents.setdefault(handle, [])
        for dep in step.deps:
            self.dependents.setdefault(dep, []).append(handle)
        if prior is not None:
            self.runs[handle] = _StepRun.from_record(prior)
            self.records[handle] = prior
            self.outputs[handle] = prior.output or ""
            return
        self.runs[handle] = _StepRun(handle)
        self.waiting_on[handle] = sum(d not in self.outputs for d in step.deps) \
            if self.started else -1  # counted by start_ready once every initial step is in
        if self.started and self.waiting_on[handle] == 0:
            self.launch(handle)

    def start_ready(self) -> None:
        self.started = True
        for handle in self.waiting_on:
            self.waiting_on[handle] = sum(d not in self.outputs for d in self.steps[handle].deps)
        for handle, count in list(self.waiting_on.items()):
            if count == 0:
                self.launch(handle)

    def notify(self, run: _StepRun) -> None:
        if self.observer is None:
            return  # records are built off the critical path (`launch`) or by `finalize`
        record = run.to_record()
        if run.state.finished:
            self.records[run.handle] = record
        try:
            self.observer(record)
        except Exception:  # an observer bug must not corrupt the run; logged, not hidden
            log.exception("step observer failed on step %s", run.handle)

    def launch(self, handle: str) -> None:
        step = self.steps[handle]
        run = self.runs[handle]
        del self.waiting_on[handle]
        run.state, run.started = RunState.RUNNING, datetime.now(UTC)
        outputs = self.outputs
        values = {**self.inputs, **{d: outputs[d] for d in step.deps}, **step.literals}
        self.tasks[handle] = self.loop.create_task(self.execute(step, values),
                                                   name=f"step:{handle}")
        if self.observer is not None:
            self.notify(run)
        elif step.deps:
            # Validate the dependencies' records while this step's model call is under way
            # (queued behind the task's start), instead of all at the end on the critical path.
            self.loop.call_soon(self.build_records, step.deps)

    def build_records(self, handles: Iterable[str]) -> None:
        for handle in handles:
            if handle not in self.records:
                self.records[handle] = self.runs[handle].to_record()

    def generator_for(self, step: CompiledStep) -> GeneratorProtocol:
        key = self.options.llm if step.plugin.generator == LLM_BACKEND else step.plugin.generator
        return self.generators[key]

    async def execute(self, step: CompiledStep, values: Mapping[str, str]) -> None:
        """The step's task: values in, one outcome handed to `record` (no other shared state).

        Recording from inside the task rather than from a done-callback saves an event-loop
        turn per step, which is most of what a chain of short steps pays (benchmarks/).
        """
        attempts: list[Attempt] = []
        try:
            request = GenerationRequest.model_validate({
                "step": step.handle, "plugin": step.spec.plugin, "params": step.params,
                "messages": render_messages(step, values)})
            call = self.generator_for(step).run_remote
            if self.semaphore is None:
                generation = await self.policy.call(call, request, attempts)
            else:
                async with self.semaphore:
                    generation = await self.policy.call(call, request, attempts)
        except asyncio.CancelledError:
            self.record(step.handle, None)
            raise
        except Exception as exc:  # recorded on the step and propagated to the chain's state
            self.record(step.handle, _Outcome(attempts, error=describe_error(exc)))
        else:
            self.record(step.handle, _Outcome(attempts, generation=generation))

    def record(self, handle: str, outcome: _Outcome | None) -> None:
        """The one place a step's result is recorded and newly ready steps are started."""
        del self.tasks[handle]
        run = self.runs[handle]
        run.finished = datetime.now(UTC)
        if outcome is None:
            run.state, run.message = RunState.FAILED, "cancelled"
            self.notify(run)
            return self.maybe_finish()
        run.attempts = outcome.attempts
        generation = outcome.generation
        if generation is None:
            run.state, run.message = RunState.FAILED, outcome.error
            self.first_failure = self.first_failure or handle
            self.notify(run)
            self.skip_dependents(handle)
        else:
            run.state, run.output, run.usage = RunState.SUCCEEDED, generation.text, \
                generation.usage
            self.outputs[handle] = generation.text
            self.notify(run)
            waiting_on = self.waiting_on
            for child in self.dependents[handle]:
                if child in waiting_on:
                    waiting_on[child] -= 1
                    if waiting_on[child] == 0:
                        self.launch(child)
        self.maybe_finish()

    def skip_dependents(self, failed: str) -> None:
        stack = [(child, failed) for child in self.dependents[failed]]
        while stack:
            handle, cause = stack.pop()
            if handle not in self.waiting_on:
                continue
            del self.waiting_on[handle]
            run = self.runs[handle]
            run.state = RunState.SKIPPED
            run.message = (f"not run: depends on `{cause}`, which "
                           f"{'failed' if cause == failed else 'was skipped'}")
            self.notify(run)
            stack.extend((child, handle) for child in self.dependents[handle])

    def maybe_finish(self) -> None:
        if not self.tasks and not self.done.done():
            self.done.set_result(None)

    def finalize(self) -> InvocationResult:
        """The result, validated in one pass: one call for every record is far cheaper than a
        model per step on the hot path (benchmarks/engine.py)."""
        runs = [self.runs[h] for h in self.steps]
        failed = [r for r in runs if r.state == RunState.FAILED]
        state, message, output = RunState.SUCCEEDED, None, \
            self.outputs.get(self.chain.output_handle)
        if failed:
            first = self.runs[self.first_failure] if self.first_failure else failed[0]
            others = f" ({len(failed) - 1} more step(s) failed)" if len(failed) > 1 else ""
            state, output = RunState.FAILED, None
            message = f"step `{first.handle}` failed: {first.message}{others}"
        return InvocationResult.model_validate({
            "chain": self.chain.handle, "input": self.inputs, "output": output,
            "state": state, "statusMessage": message,
            "steps": [self.records.get(r.handle) or r.as_dict() for r in runs]})


async def run_chain(chain: CompiledChain, inputs: Mapping[str, str],
                    generators: Mapping[str, GeneratorProtocol],
                    options: RunOptions | None = None, *,
                    observer: StepObserver | None = None,
                    previous: InvocationResult | None = None) -> InvocationResult:
    """Run `chain` to the end and return its result; never raises for a failing step.

    With `previous` (a persisted result of the same chain), steps that succeeded keep their
    records and outputs and are not called again; the rest run.
    """
    options = options or RunOptions()
    values = chain.resolve_inputs(inputs)
    missing = sorted({step.plugin.generator if step.plugin.generator != LLM_BACKEND
                      else options.llm for step in chain.steps.values()} - generators.keys())
    if missing:
        raise ChainDefinitionError(
            f"chain `{chain.handle}` needs generator(s) {', '.join(missing)}, which this runner "
            f"does not have (it has {', '.join(sorted(generators))})")

    prior = {r.handle: r for r in previous.steps if r.state == RunState.SUCCEEDED} \
        if previous is not None else {}
    loop = asyncio.get_running_loop()
    ex = _Execution(chain=chain, inputs=values, generators=generators, options=options,
                    observer=observer, loop=loop, done=loop.create_future(),
                    policy=RetryPolicy(options.max_attempts, options.initial_backoff_s,
                                       options.max_backoff_s))
    if options.max_concurrency is not None:
        ex.semaphore = asyncio.Semaphore(options.max_concurrency)
    for handle, step in chain.steps.items():  # definition order: dependencies may come later
        ex.add_step(step, prior.get(handle))
    ex.start_ready()
    ex.maybe_finish()
    try:
        await ex.done
    finally:
        for task in list(ex.tasks.values()):
            task.cancel()
        if ex.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*ex.tasks.values(), return_exceptions=True)
    return ex.finalize()
