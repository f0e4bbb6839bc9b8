"""The eager engine: each step starts the moment its dependencies have succeeded, exactly once."""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from chainlets.compiler import CompiledChain, CompiledStep
from chainlets.errors import ChainDefinitionError
from chainlets.models import (
    AttemptRecord,
    Generation,
    GenerationRequest,
    InvocationResult,
    RunOptions,
    RunState,
    StepRecord,
)
from chainlets.plugins import LLM_BACKEND
from chainlets.protocols import GeneratorProtocol
from chainlets.retry import RetryPolicy, describe_error
from chainlets.spec import ChatMessage

__all__ = ["StepObserver", "render_messages", "run_chain"]

log = logging.getLogger(__name__)

# Called synchronously on every step transition with the whole (live) result and the step that
# changed; it must not block. Persistence and callbacks hang off it.
StepObserver = Callable[[InvocationResult, StepRecord], None]


def render_messages(step: CompiledStep, values: Mapping[str, str]) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    if step.system is not None:
        messages.append(ChatMessage(role="system", content=step.system.render(values)))
    messages.extend(ChatMessage(role=role, content=t.render(values)) for role, t in step.history)
    messages.append(ChatMessage(role="user", content=step.prompt.render(values)))
    return messages


@dataclass(frozen=True, slots=True)
class _Outcome:
    """What a step task hands back; the engine alone turns it into record changes."""

    attempts: list[AttemptRecord]
    generation: Generation | None = None
    error: str | None = None


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Execution:
    chain: CompiledChain
    inputs: Mapping[str, str]
    generators: Mapping[str, GeneratorProtocol]
    options: RunOptions
    observer: StepObserver | None
    result: InvocationResult
    records: dict[str, StepRecord] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    remaining: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, "asyncio.Task[_Outcome]"] = field(default_factory=dict)
    first_failure: str | None = None
    done: "asyncio.Future[None] | None" = None
    semaphore: asyncio.Semaphore | None = None
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    def notify(self, record: StepRecord) -> None:
        if self.observer is None:
            return
        try:
            self.observer(self.result, record)
        except Exception:  # an observer bug must not corrupt the run; it is logged, not hidden
            log.exception("step observer failed on step %s", record.handle)

    def generator_for(self, step: CompiledStep) -> GeneratorProtocol:
        key = self.options.llm if step.plugin.generator == LLM_BACKEND else step.plugin.generator
        return self.generators[key]

    def launch(self, handle: str) -> None:
        step = self.chain.steps[handle]
        record = self.records[handle]
        record.state, record.started_at = RunState.RUNNING, _now()
        record.status_message, record.attempts = None, []
        values = {**self.inputs, **{d: self.outputs[d] for d in step.deps}, **step.literals}
        task = asyncio.create_task(self.execute(step, values), name=f"step:{handle}")
        self.tasks[handle] = task
        task.add_done_callback(partial(self.on_done, handle))
        self.notify(record)

    async def execute(self, step: CompiledStep, values: Mapping[str, str]) -> _Outcome:
        attempts: list[AttemptRecord] = []
        generator = self.generator_for(step)
        try:
            request = GenerationRequest(step=step.handle, plugin=step.spec.plugin,
                                        messages=render_messages(step, values),
                                        params=step.params)
            if self.semaphore is None:
                generation = await self.policy.call(
                    partial(generator.run_remote, request), attempts)
            else:
                async with self.semaphore:
                    generation = await self.policy.call(
                        partial(generator.run_remote, request), attempts)
        except Exception as exc:  # recorded on the step and propagated to the chain's state
            return _Outcome(attempts=attempts, error=describe_error(exc))
        return _Outcome(attempts=attempts, generation=generation)

    def on_done(self, handle: str, task: "asyncio.Task[_Outcome]") -> None:
        del self.tasks[handle]
        record = self.records[handle]
        record.finished_at = _now()
        if task.cancelled():
            record.state, record.status_message = RunState.FAILED, "cancelled"
            self.notify(record)
            return self.maybe_finish()
        outcome = task.result()
        record.attempts = outcome.attempts
        if outcome.generation is None:
            record.state, record.status_message = RunState.FAILED, outcome.error
            self.first_failure = self.first_failure or handle
            self.notify(record)
            self.skip_dependents(handle)
        else:
            record.state, record.output = RunState.SUCCEEDED, outcome.generation.text
            record.usage = outcome.generation.usage
            self.outputs[handle] = outcome.generation.text
            self.notify(record)
            for child in self.chain.dependents[handle]:
                self.remaining[child] -= 1
                if self.remaining[child] == 0 and self.records[child].state == RunState.WAITING:
                    self.launch(child)
        self.maybe_finish()

    def skip_dependents(self, failed: str) -> None:
        stack = [(child, failed) for child in self.chain.dependents[failed]]
        while stack:
            handle, cause = stack.pop()
            record = self.records[handle]
            if record.state != RunState.WAITING:
                continue
            record.state = RunState.SKIPPED
            record.status_message = (f"not run: depends on `{cause}`, which "
                                     f"{'failed' if cause == failed else 'was skipped'}")
            self.notify(record)
            stack.extend((child, handle) for child in self.chain.dependents[handle])

    def maybe_finish(self) -> None:
        if not self.tasks and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def finalize(self) -> InvocationResult:
        result = self.result
        failed = [r for r in result.steps if r.state == RunState.FAILED]
        if failed:
            first = self.records[self.first_failure] if self.first_failure else failed[0]
            others = f" ({len(failed) - 1} more step(s) failed)" if len(failed) > 1 else ""
            result.state = RunState.FAILED
            result.status_message = f"step `{first.handle}` failed: {first.status_message}{others}"
            result.output = None
        else:
            result.state = RunState.SUCCEEDED
            result.status_message = None
            result.output = self.outputs.get(self.chain.output_handle)
        return result


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

    prior = {r.handle: r for r in previous.steps} if previous is not None else {}
    records = {}
    for handle in chain.steps:
        old = prior.get(handle)
        records[handle] = old.model_copy(deep=True) if old is not None \
            and old.state == RunState.SUCCEEDED else StepRecord(handle=handle)
    result = InvocationResult(chain=chain.handle, input=values, state=RunState.RUNNING,
                              steps=list(records.values()))
    ex = _Execution(chain=chain, inputs=values, generators=generators, options=options,
                    observer=observer, result=result, records=records,
                    policy=RetryPolicy(options.max_attempts, options.initial_backoff_s,
                                       options.max_backoff_s))
    if options.max_concurrency is not None:
        ex.semaphore = asyncio.Semaphore(options.max_concurrency)
    ex.outputs = {h: r.output or "" for h, r in records.items() if r.state == RunState.SUCCEEDED}
    ex.remaining = {h: sum(d not in ex.outputs for d in step.deps)
                    for h, step in chain.steps.items()}
    ex.done = asyncio.get_running_loop().create_future()
    for handle in chain.steps:
        if handle not in ex.outputs and ex.remaining[handle] == 0:
            ex.launch(handle)
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
