"""The eager engine: each step starts the moment its dependencies have succeeded, exactly once.

Step tasks share no mutable state: a task gets its input values and hands one outcome to
`record`, the one place that records results and starts newly ready steps (synchronously, so
no other task interleaves), so a join starts exactly once, when its last dependency succeeds.
The graph the scheduler walks is the execution's own (`steps`, `dependents`, `waiting_on`),
so steps can be added while a run is under way (`_Execution.add_step`; maps and loops build on
that).

What a step costs the critical path is kept to plain Python, each choice measured by
benchmarks/engine.py against hand-written asyncio:
- the task whose step just finished goes on with the first step it started, instead of
  creating a task and giving up an event-loop turn (a sequence runs in one task);
- while a step runs, tasks for the dependents that wait for it alone are created and wait at
  its gate, so a wide fan-out starts with no task creation (`prepare`);
- timestamps are `time.time()` floats; a step's pydantic record is built for the observer when
  there is one, otherwise while a dependent's model call is under way, or at the end.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from chainlets.engine.models import (
    Generation,
    GenerationRequest,
    InvocationResult,
    RunOptions,
    RunState,
    StepRecord,
)
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.engine.retry import Attempt, RetryPolicy, describe_error
from chainlets.engine.state import StepRun, build_result, not_run
from chainlets.errors import ChainDefinitionError, ConflictError
from chainlets.language.compiler import CompiledChain, CompiledStep
from chainlets.language.plugins import LLM_BACKEND

__all__ = ["StepObserver", "run_chain"]

log = logging.getLogger(__name__)

# Called synchronously with a step's record each time the step changes state; it must not
# block. Progress displays, persistence and callbacks hang off it.
StepObserver = Callable[[StepRecord], None]


# Records of finished steps are built in batches of at least this many (`_Execution.launch`).
_BUILD_BATCH = 32

# A step whose success can start at least this many dependents prepares their tasks while it
# runs (`_Execution.prepare`).
_PREPARE_AT = 2


_GateFuture = asyncio.Future[dict[str, Mapping[str, str]]]


def _generator_key(step: CompiledStep, options: RunOptions) -> str:
    """Which of the runner's generators serves `step`: the chosen LLM backend for model
    plugins, else the plugin's own generator."""
    generator = step.plugin.generator
    return options.llm if generator == LLM_BACKEND else generator


class _Gate:
    """Where the prepared tasks of a running step's dependents wait: opened with each one's
    input values when the step succeeds, cancelled when it does not."""

    __slots__ = ("future", "held", "values")

    def __init__(self, future: _GateFuture) -> None:
        self.future = future
        self.held: list[tuple[str, asyncio.Task[None]]] = []
        self.values: dict[str, Mapping[str, str]] = {}  # of the dependents launched


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
    # The compiled chain's tuples, shared; a step added during the run turns its dependencies'
    # entries into lists of their own (`add_step`).
    dependents: dict[str, Sequence[str]] = field(default_factory=dict)
    waiting_on: dict[str, int] = field(default_factory=dict)
    runs: dict[str, StepRun] = field(default_factory=dict)
    records: dict[str, StepRecord] = field(default_factory=dict)  # of finished steps
    unbuilt: list[str] = field(default_factory=list)  # finished, record not built or queued
    outputs: dict[str, str] = field(default_factory=dict)
    tasks: dict[str, "asyncio.Task[None]"] = field(default_factory=dict)  # of running steps
    # Fan-out: while a step runs, tasks for the dependents it alone holds back are created and
    # wait at its gate (`prepare`), so that its success starts them all without creating tasks.
    prepared: dict[str, "tuple[_Gate, asyncio.Task[None]]"] = field(default_factory=dict)
    gates: dict[str, _Gate] = field(default_factory=dict)  # of running steps, by handle
    closed: list["asyncio.Task[None]"] = field(default_factory=list)  # ended at a gate
    first_failure: str | None = None
    semaphore: asyncio.Semaphore | None = None

    @classmethod
    def new(cls, chain: CompiledChain, inputs: Mapping[str, str],
            generators: Mapping[str, GeneratorProtocol], options: RunOptions,
            observer: StepObserver | None) -> "_Execution":
        loop = asyncio.get_running_loop()
        return cls(chain=chain, inputs=inputs, generators=generators, options=options,
                   observer=observer, loop=loop, done=loop.create_future(),
                   policy=RetryPolicy(options.max_attempts, options.initial_backoff_s,
                                      options.max_backoff_s),
                   semaphore=None if options.max_concurrency is None
                   else asyncio.Semaphore(options.max_concurrency))

    async def run(self, prior: Mapping[str, StepRecord]) -> InvocationResult:
        """Start the chain, keeping `prior`'s succeeded steps, and return its result once no
        step is running; cancelled, it cancels every step first."""
        self.start(prior)
        self.maybe_finish()
        try:
            await self.done
        finally:
            pending = [*self.tasks.values(), *(task for _gate, task in self.prepared.values()),
                       *self.closed]
            for task in pending:
                task.cancel()
            if pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(*pending, return_exceptions=True)
        return self.finalize()

    def start(self, prior: Mapping[str, StepRecord]) -> None:
        """Take the chain's steps, keeping `prior`'s succeeded ones, and start those ready.

        The graph comes from the compiled chain as is: rebuilding it per run cost ~5 µs a step
        before the first model call (benchmarks/engine.py).
        """
        chain = self.chain
        self.steps = dict(chain.steps)
        self.dependents = dict(chain.dependents)
        for handle, record in prior.items():
            self.runs[handle] = StepRun.from_record(record)
            self.records[handle] = record
            self.outputs[handle] = record.output or ""
        outputs = self.outputs
        for handle, step in self.steps.items():
            if handle not in prior:
                self.runs[handle] = StepRun(handle)
                self.waiting_on[handle] = sum(d not in outputs for d in step.deps) \
                    if prior else len(step.deps)
        for handle in [h for h, count in self.waiting_on.items() if count == 0]:
            self.launch(handle)

    def add_step(self, step: CompiledStep) -> None:
        """Add `step` to the run under way: it starts once every dependency has succeeded,
        and is skipped if one of them failed or was skipped.

        Its dependencies must be steps of the run (maps and loops add steps this way).
        """
        handle = step.handle
        if self.done.done():
            raise ConflictError(f"cannot add step `{handle}`: the run is over")
        if handle in self.steps:
            raise ChainDefinitionError(f"step `{handle}` is already part of this run")
        unknown = sorted(step.deps - self.steps.keys())
        if unknown:
            raise ChainDefinitionError(
                f"step `{handle}` depends on {', '.join(unknown)}, not steps of this run")
        self.steps[handle] = step
        self.dependents[handle] = []
        for dep in step.deps:
            children = self.dependents[dep]
            if not isinstance(children, list):
                self.dependents[dep] = children = list(children)
            children.append(handle)
        run = self.runs[handle] = StepRun(handle)
        blocked = sorted(d for d in step.deps
                         if self.runs[d].state in (RunState.FAILED, RunState.SKIPPED))
        if blocked:
            cause = blocked[0]
            run.state, run.message = RunState.SKIPPED, not_run(cause, self.runs[cause].state)
            self.notify(run)
            return
        self.waiting_on[handle] = sum(d not in self.outputs for d in step.deps)
        if self.waiting_on[handle] == 0:
            self.launch(handle)

    def notify(self, run: StepRun) -> None:
        if self.observer is None:
            return  # records are built off the critical path (`launch`) or by `finalize`
        record = run.to_record()
        if run.state.finished:
            self.records[run.handle] = record
        try:
            self.observer(record)
        except Exception:  # an observer bug must not corrupt the run; logged, not hidden
            log.exception("step observer failed on step %s", run.handle)

    def launch(self, handle: str, task: "asyncio.Task[None] | None" = None,
               ) -> Mapping[str, str]:
        """Start `handle` in a task of its own, in its prepared task, or, given `task` (the
        one whose step just finished), in that task next; returns the step's input values."""
        step = self.steps[handle]
        run = self.runs[handle]
        del self.waiting_on[handle]
        run.state, run.started = RunState.RUNNING, time.time()
        outputs = self.outputs
        values = dict(self.inputs)
        for dep in step.deps:
            values[dep] = outputs[dep]
        if step.literals:
            values.update(step.literals)
        if task is not None:
            self.tasks[handle] = task
            task.set_name(f"step:{handle}")
        elif handle in self.prepared:  # its task waits at the gate `record` opens next
            gate, self.tasks[handle] = self.prepared.pop(handle)
            gate.values[handle] = values
        else:
            self.tasks[handle] = self.loop.create_task(self.execute(step, values),
                                                       name=f"step:{handle}")
        if len(self.dependents[handle]) >= _PREPARE_AT:
            self.loop.call_soon(self.prepare, handle)
        if self.observer is not None:
            self.notify(run)
        elif len(self.unbuilt) >= _BUILD_BATCH:
            # Validate finished steps' records while this step's model call is under way
            # (queued behind its start) rather than all at the end, on the critical path; in
            # batches, as each build queued costs an event-loop turn.
            self.loop.call_soon(self.build_records, self.unbuilt)
            self.unbuilt = []
        return values

    def prepare(self, holder: str) -> None:
        """Create, while `holder` runs, the tasks of the dependents that wait for it alone.

        Queued behind `holder`'s own start, this runs while its model call is under way, so a
        wide fan-out's task creation is off the critical path, as in hand-written asyncio that
        creates every task up front (benchmarks/engine.py).
        """
        if holder not in self.tasks or self.done.done():
            return  # already over: its dependents start, or not, the ordinary way
        gate = _Gate(self.loop.create_future())
        for child in self.dependents[holder]:
            if self.waiting_on.get(child) == 1 and child not in self.prepared:
                task = self.loop.create_task(self.execute(self.steps[child], gate.future),
                                             name=f"step:{child}")
                self.prepared[child] = gate, task
                gate.held.append((child, task))
        if gate.held:
            self.gates[holder] = gate

    def close_gate(self, holder: str) -> None:
        """Open `holder`'s gate for the dependents its end launched; the rest end there."""
        gate = self.gates.pop(holder, None)
        if gate is None:
            return
        if gate.values:
            gate.future.set_result(gate.values)
        else:
            gate.future.cancel()
        for child, task in gate.held:
            if child not in gate.values:  # not started: `skip_dependents` records why
                del self.prepared[child]
                self.closed.append(task)

    def build_records(self, handles: Iterable[str]) -> None:
        for handle in handles:
            if handle not in self.records:
                self.records[handle] = self.runs[handle].to_record()

    def generator_for(self, step: CompiledStep) -> GeneratorProtocol:
        return self.generators[_generator_key(step, self.options)]

    async def execute(self, step: CompiledStep, values: "Mapping[str, str] | _GateFuture",
                      ) -> None:
        """A step's task: values in, one outcome handed to `record` (no other shared state);
        then, if `record` hands it a step its outcome started, that step.

        A prepared step's task gets its values from its gate, and ends there if it does not
        start. Recording from inside the task rather than from a done-callback, and going on
        with a step the outcome started rather than creating a task for it, each save an
        event-loop turn per step: most of what a chain of short steps pays (benchmarks/).
        """
        while True:
            handle = step.handle
            attempts: list[Attempt] = []
            try:
                if isinstance(values, asyncio.Future):
                    values = (await values)[handle]  # a gate opens for all it holds
                request = GenerationRequest.model_validate({
                    "step": handle, "plugin": step.spec.plugin, "params": step.params,
                    "messages": step.render_messages(values)})
                call = self.generator_for(step).run_remote
                if self.semaphore is None:
                    generation = await self.policy.call(call, request, attempts)
                else:
                    async with self.semaphore:
                        generation = await self.policy.call(call, request, attempts)
            except asyncio.CancelledError:
                if handle in self.tasks:  # else a gate closed on a step that never started
                    self.record(handle, attempts, None)
                raise
            except Exception as exc:  # recorded on the step and propagated to the chain's state
                following = self.record(handle, attempts, describe_error(exc))
            else:
                following = self.record(handle, attempts, generation)
            if following is None:
                return
            step, values = following

    def record(self, handle: str, attempts: list[Attempt], outcome: Generation | str | None,
               ) -> "tuple[CompiledStep, Mapping[str, str]] | None":
        """The one place a step's outcome (its generation, an error message, or None when it
        was cancelled) is recorded and newly ready steps are started.

        Called by the step's own task, which is about to end: the first step the outcome
        starts that has no task waiting for it is returned for that task to run next.
        """
        task = self.tasks.pop(handle)
        run = self.runs[handle]
        run.finished = time.time()
        run.attempts = attempts
        if outcome is None:
            run.state, run.message = RunState.FAILED, "cancelled"
            self.notify(run)
            self.close_gate(handle)
            self.maybe_finish()
            return None
        following: tuple[CompiledStep, Mapping[str, str]] | None = None
        if self.observer is None:
            self.unbuilt.append(handle)
        if isinstance(outcome, str):
            run.state, run.message = RunState.FAILED, outcome
            self.first_failure = self.first_failure or handle
            self.notify(run)
            self.skip_dependents(handle)
        else:
            run.state, run.output, run.usage = RunState.SUCCEEDED, outcome.text, outcome.usage
            self.outputs[handle] = outcome.text
            self.notify(run)
            waiting_on = self.waiting_on
            for child in self.dependents[handle]:
                if child in waiting_on:
                    waiting_on[child] -= 1
                    if waiting_on[child] == 0:
                        if following is None and child not in self.prepared:
                            following = self.steps[child], self.launch(child, task)
                        else:
                            self.launch(child)
        if handle in self.gates:
            self.close_gate(handle)
        self.maybe_finish()
        return following

    def skip_dependents(self, failed: str) -> None:
        stack = [(child, failed) for child in self.dependents[failed]]
        while stack:
            handle, cause = stack.pop()
            if handle not in self.waiting_on:
                continue
            del self.waiting_on[handle]
            run = self.runs[handle]
            run.state = RunState.SKIPPED
            run.message = not_run(cause, self.runs[cause].state)
            self.notify(run)
            stack.extend((child, handle) for child in self.dependents[handle])

    def maybe_finish(self) -> None:
        if not self.tasks and not self.done.done():
            self.done.set_result(None)

    def finalize(self) -> InvocationResult:
        """The result, reusing the records already built; the rest are validated with it."""
        return build_result(self.chain.handle, self.inputs, [self.runs[h] for h in self.steps],
                            self.records, self.outputs.get(self.chain.output_handle),
                            self.first_failure)


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
    missing = sorted({_generator_key(step, options) for step in chain.steps.values()}
                     - generators.keys())
    if missing:
        raise ChainDefinitionError(
            f"chain `{chain.handle}` needs generator(s) {', '.join(missing)}, which this runner "
            f"does not have (it has {', '.join(sorted(generators))})")

    prior = {r.handle: r for r in previous.steps if r.state == RunState.SUCCEEDED} \
        if previous is not None else {}
    ex = _Execution.new(chain, values, generators, options, observer)
    result = await ex.run(prior)
    # The run's scratch state (a few objects per step) is freed on the loop's next turn, after
    # the caller has its result: tearing it down here cost ~2 µs a step of result latency.
    ex.loop.call_soon(_release, ex)
    return result


def _release(_execution: _Execution) -> None:
    """Drops the last reference to a finished execution (see `run_chain`)."""
