"""The eager engine: each step starts the moment its dependencies have succeeded, exactly once.

Step tasks share no mutable state: a task gets its input values and hands one outcome to
`_Execution.finish`, the one place that records a step's end and starts the steps it frees
(synchronously, so no other task interleaves), so a join starts exactly once, when its last
dependency succeeds. Every change of a step's state goes through `_Execution.set`, which
checks it, keeps the step's new record and shows it to the observer.

`StepGraph` (graph.py) knows which steps wait for which, and is the execution's own, so steps
can be added while a run is under way (`add_step`; maps and loops build on that); `Slots`
(slots.py) holds the steps queued under `max_concurrency`, with no task; state.py makes each
record. A step that runs has a task of its own, created when it starts.

Kept plain on purpose, measured by benchmarks/engine.py against hand-written asyncio: each step
makes two small records (no pydantic validation on the hot path) and creates its task when it
starts. Three tricks of the previous engine (a finished step's task going on with the step it
freed, a fan-out's tasks created ahead at a gate, the run's state freed a loop turn late) no
longer showed in any shape (each within ±0.4% over 60-300 interleaved runs), so they went.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime

from chainlets.engine.approval import (
    ApprovalGate,
    approval_request,
    refuse_without_gate,
    run_deadline_s,
)
from chainlets.engine.backends import BackendGate
from chainlets.engine.code import CodeRunnerProtocol, FunctionRunner, chain_functions, run_code
from chainlets.engine.failures import Failure, describe_failure
from chainlets.engine.flow import OnFinish, run_flow
from chainlets.engine.graph import StepGraph
from chainlets.engine.models import (
    AttemptRecord,
    CaughtError,
    ErrorKind,
    Generation,
    GenerationRequest,
    InvocationResult,
    RunOptions,
    RunState,
    StepRecord,
)
from chainlets.engine.policies import Catches, StepPolicies
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.engine.repair import structured_reply
from chainlets.engine.retry import RetryPolicy
from chainlets.engine.slots import Slots
from chainlets.engine.state import (
    CANCELLED,
    build_result,
    cancelled,
    check_transition,
    deadline_failure,
    failed,
    past_deadline,
    queued,
    running,
    skipped,
    skipped_because,
    succeeded,
    unanswered_failure,
)
from chainlets.engine.timeouts import AttemptTimer
from chainlets.engine.tools import run_tools
from chainlets.errors import ChainDefinitionError, ConflictError
from chainlets.language.compiler import CompiledChain, CompiledStep, input_text
from chainlets.language.flow import MapFlow
from chainlets.language.messages import listing
from chainlets.language.plugins import APPROVAL, CODE, LLM_BACKEND
from chainlets.language.spec import JsonValue

__all__ = ["StepCommit", "StepObserver", "run_chain"]

log = logging.getLogger(__name__)

# Called synchronously with a step's new record each time the step changes state; it must not
# block. Progress displays, persistence and callbacks hang off it.
StepObserver = Callable[[StepRecord], None]

# Awaited with a step's succeeded record before any step depending on it starts: a durable
# store commits the result here, so a resumed run never calls that step's model again. It
# must not raise for a step's sake; an exception ends the run with it (the caller's to handle).
StepCommit = Callable[[StepRecord], Awaitable[None]]


def _generator_key(step: CompiledStep, options: RunOptions) -> str:
    """Which of the runner's generators serves `step`: the chosen LLM backend for model
    plugins (unset: `openai`; a runner sets its deployment's), else the plugin's own."""
    generator = step.plugin.generator
    return (options.llm or "openai") if generator == LLM_BACKEND else generator


class _Execution:
    """One run of a chain: its graph, every step's latest record, and the tasks running."""

    def __init__(self, chain: CompiledChain, inputs: Mapping[str, JsonValue],
                 generators: Mapping[str, GeneratorProtocol], options: RunOptions,
                 observer: StepObserver | None, commit: StepCommit | None = None,
                 approvals: ApprovalGate | None = None,
                 code: CodeRunnerProtocol | None = None) -> None:
        self.chain, self.given, self.generators = chain, inputs, generators
        self._code = code
        self.inputs = {name: input_text(value) for name, value in inputs.items()}
        self.options, self.observer, self.commit = options, observer, commit
        self.approvals = approvals
        self.parked: set[str] = set()  # approval steps waiting for a person (tasks idle)
        # Flow steps (maps, loops) awaiting their items, with the future their items' ends
        # settle: idle until it is done.
        self.awaiting: dict[str, asyncio.Future[None]] = {}
        self.replaying = 0  # kept steps whose replay is scheduled: the run goes on for them
        self.policy = RetryPolicy(options.max_attempts, options.initial_backoff_s,
                                  options.max_backoff_s)
        self.loop = asyncio.get_running_loop()
        self.timer = AttemptTimer(options.step_timeout_s)
        self.policies = StepPolicies(self.policy, self.timer)  # of steps with their own
        self.catches = Catches(self, chain) if chain.catching else None
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.graph = StepGraph(chain, succeeded=())
        self.records: dict[str, StepRecord] = {}  # a step without one is waiting
        self.outputs: dict[str, str] = {}  # of the steps that succeeded
        self.tasks: dict[str, asyncio.Task[None]] = {}  # of the running steps
        self.slots = None if options.max_concurrency is None else Slots(options.max_concurrency)
        self.first_failure: str | None = None
        self.on_finish: dict[str, OnFinish] = {}  # a flow step's controller, told of an end
        self.tolerated: set[str] = set()  # failed map items their map allowed
        self.gates: dict[str, BackendGate] = {}  # per backend, made on its first call
        # How a step still running when the run ends is recorded: cancelled, unless the
        # deadline ended it.
        self.ending: Failure = CANCELLED

    async def run(self, prior: Mapping[str, StepRecord],
                  started_at: datetime | None = None) -> InvocationResult:
        """Start the chain, keeping `prior`'s succeeded steps, and return its result once no
        step is running; cancelled, it cancels every step first. The deadline counts from
        `started_at` (a resumed invocation's start); a run begun past it starts nothing."""
        if prior:
            self.records.update(prior)
            self.outputs.update((handle, r.output or "") for handle, r in prior.items())
            self.graph = StepGraph(self.chain, succeeded=prior)
        deadline = run_deadline_s(self.options, self.chain)
        left = deadline if deadline is None or started_at is None else \
            deadline - (datetime.now(UTC) - started_at).total_seconds()
        if left is None or left > 0:
            ready = self.graph.ready()
            if self.catches is not None and prior:
                ready = self.catches.unneeded(ready, prior)
            self.start(ready, datetime.now(UTC))
            self.maybe_finish()
        else:
            assert deadline is not None
            self.ending = deadline_failure(deadline)
            self.done.set_result(None)
        scope = asyncio.timeout(None if left is None else max(left, 0.0))
        try:
            try:
                async with scope:
                    await self.done
            except TimeoutError:
                if not scope.expired() or deadline is None:
                    raise
                self.ending = deadline_failure(deadline)
        finally:
            pending = list(self.tasks.values())
            for task in pending:
                task.cancel()
            if pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.gather(*pending, return_exceptions=True)
            for handle in list(self.tasks):  # cancelled before it ran a line: never recorded
                self.finish(handle, [], self.ending)
        result = build_result(self.chain.handle, self.given, self.graph.steps, self.records,
                              self.outputs.get(self.chain.output_handle), self.first_failure,
                              self.tolerated)
        if self.ending is CANCELLED or deadline is None:
            return result
        return self.expire(result, deadline)

    def expire(self, result: InvocationResult, deadline_s: float) -> InvocationResult:
        """The deadline passed: every step not finished fails (an approval step parked too:
        its answer can no longer come), and the run says which."""
        now = datetime.now(UTC)
        unanswered = unanswered_failure(deadline_s)
        for handle, step in self.graph.steps.items():
            record = self.records.get(handle) or StepRecord(handle=handle)
            if not record.state.finished:
                self.set(failed(record, unanswered, [], now)
                         if step.plugin.generator == APPROVAL
                         else past_deadline(record, [], now, deadline_s))
        result = build_result(self.chain.handle, self.given, self.graph.steps, self.records,
                              None, self.first_failure, self.tolerated)
        unfinished = [r.handle for r in result.steps
                      if r.statusMessage in (self.ending.message, unanswered.message)]
        result.statusMessage = (f"the run's deadline (deadline_s={deadline_s:g} s) passed: "
                                f"{len(unfinished)} unfinished step(s) failed: "
                                f"{listing(unfinished, limit=10)}")
        return result

    @property
    def code(self) -> CodeRunnerProtocol:
        """Code steps and tools call functions through it; without one, in this process
        (made on first use: most chains have no code step)."""
        if self._code is None:
            self._code = FunctionRunner(chain_functions(self.chain))
        return self._code

    def gate(self, backend: str) -> BackendGate:
        gate = self.gates.get(backend)
        if gate is None:
            gate = self.gates[backend] = BackendGate(backend, self.options.max_backend_calls)
        return gate

    @property
    def over(self) -> bool:
        """Whether the run is ending (done, cancelled or past its deadline): add no steps."""
        return self.done.done()

    def add_step(self, step: CompiledStep, on_finish: OnFinish | None = None) -> None:
        """Add `step` to the run under way: it starts once every dependency has succeeded,
        and is skipped if one of them failed or was skipped. `on_finish` is called with its
        last record when it ends having run.

        Its dependencies must be steps of the run (maps and loops add steps this way).
        """
        if self.done.done():
            raise ConflictError(f"cannot add step `{step.handle}`: the run is over")
        blocked = sorted(d for d in step.deps if (r := self.records.get(d)) is not None
                         and r.state in (RunState.FAILED, RunState.SKIPPED))
        if on_finish is not None:
            self.on_finish[step.handle] = on_finish
        if self.graph.add(step, self.outputs, blocked=bool(blocked)):
            self.start([step.handle], datetime.now(UTC))
        elif blocked:
            self.set(skipped(step.handle, self.records[blocked[0]]))

    def tolerate(self, handles: Iterable[str]) -> None:
        """These failed steps (a map's items within its `tolerate`) do not fail the run."""
        self.tolerated.update(handles)

    def skip_step(self, handle: str, reason: str) -> None:
        """Skip a waiting step for `reason` (a choice did not take its branch), and every step
        behind it; a step no longer waiting is left as it is."""
        if self.graph.pending.pop(handle, None) is None:
            return
        self.set(skipped_because(handle, reason))
        for child, cause in self.graph.block(handle):
            self.set(skipped(child, self.records[cause]))

    def set(self, record: StepRecord) -> None:
        """The one place a step's state changes: checked, kept, shown to the observer."""
        records = self.records
        check_transition(records.get(record.handle), record)
        records[record.handle] = record
        if self.observer is not None:
            try:
                self.observer(record)
            except Exception:  # an observer bug must not corrupt the run; logged, not hidden
                log.exception("step observer failed on step %s", record.handle)

    def start(self, ready: list[str], now: datetime) -> None:
        """Start the `ready` steps at `now`, each in a task of its own, or queue those no slot
        is free for."""
        waiting: list[str] = []
        steps = self.graph.steps
        kept = [handle for handle in ready if handle in self.outputs]
        if kept:  # a map's item or a loop's iteration an earlier run finished: not called again
            ready = [handle for handle in ready if handle not in self.outputs]
            self.replaying += len(kept)
            for handle in kept:
                self.loop.call_soon(self.replay, handle)
        if self.slots is not None:
            # A flow step takes no slot: its items and iterations do, as they run.
            flows = [handle for handle in ready if steps[handle].flow is not None]
            ready, waiting = self.slots.admit([h for h in ready if steps[h].flow is None])
            ready += flows
        for handle in ready:
            step = steps[handle]
            if step.flow is None:
                self.set(running(handle, now, _generator_key(step, self.options),
                                 step.params.model))
            else:
                self.set(running(handle, now))
            values = dict(self.inputs)
            try:
                for dep in step.deps:
                    values[dep] = self.outputs[dep]
            except KeyError:  # a catch step: the step it catches left its error instead
                assert self.catches is not None
                values.update(self.catches.values(step, self.outputs))
            if step.literals:
                values.update(step.literals)
            work = self.execute(step, values) if step.flow is None else self.control(step, values)
            self.tasks[handle] = self.loop.create_task(work, name=f"step:{handle}")
        for handle in waiting:
            self.set(queued(handle))

    def replay(self, handle: str) -> None:
        """A step added during a resumed run that succeeded in the earlier one: its record and
        output stand, its controller hears of it, and what it frees starts."""
        self.replaying -= 1
        if self.done.done():
            return
        told = self.on_finish.pop(handle, None)
        if told is not None:
            told(self.records[handle])
        self.start(self.graph.succeed(handle), datetime.now(UTC))
        self.maybe_finish()

    async def execute(self, step: CompiledStep, values: Mapping[str, str]) -> None:
        """A step's task: values in, one outcome handed to `finish` (no other shared state)."""
        handle = step.handle
        key = _generator_key(step, self.options)
        attempts: list[AttemptRecord] = []
        try:
            if key == APPROVAL:
                generation = await self.approve(step, values)
            elif key == CODE:  # engine/code.py
                generation = await run_code(self, step, values, attempts)
            elif step.tools:  # engine/tools.py: the model → tools → model loop
                generation = self.served(step, await run_tools(
                    self, step, self.request(step, values), attempts, key, self.generators[key]))
            else:  # the call awaited here, not in a helper coroutine: one frame less in flight
                request = self.request(step, values)
                del values  # rendered: not held while the call is in flight (~120 B a step)
                policy, timer = (self.policy, self.timer) \
                    if step.spec.retry is None and step.spec.timeout_s is None \
                    else self.policies.of(step.spec)
                if step.structured is None:
                    generation = self.served(step, await policy.call(
                        self.generators[key].run_remote, request, attempts, key,
                        gate=self.gate(key), timer=timer))
                else:  # re-prompted until it meets its schema, started over on `schema`
                    generation = await structured_reply(step, request, attempts, policy,
                                                        self.caller(step, key, attempts))
        except asyncio.CancelledError:
            if handle in self.parked:  # the run ends while it waits: it stays waiting
                del self.tasks[handle]
                raise
            self.settle(handle, attempts, self.ending)
            raise
        except Exception as exc:  # recorded on the step and propagated to the chain's state
            # With attempts, the call raised it; else the engine, preparing the call.
            failure = describe_failure(exc, f"generator `{key}`" if attempts else "the engine")
            if failure.kind is ErrorKind.INTERNAL:
                log.error("step `%s`: %s", handle, failure.message, exc_info=exc)
            self.settle(handle, attempts, failure)
        else:
            if self.commit is not None:
                await self.after_call(handle, attempts, generation)
            else:
                self.settle(handle, attempts, generation)

    def request(self, step: CompiledStep, values: Mapping[str, str]) -> GenerationRequest:
        """The step's model call, rendered."""
        return GenerationRequest.model_validate({
            "step": step.handle, "plugin": step.plugin.name, "params": step.params,
            "messages": step.render_messages(values),
            "timeout_s": self.options.step_timeout_s if step.spec.timeout_s is None
            else step.spec.timeout_s,
            "capabilities": step.served, "output_schema": step.spec.output_schema})

    def caller(self, step: CompiledStep, key: str,
               attempts: list[AttemptRecord]) -> Callable[[GenerationRequest],
                                                          Awaitable[Generation]]:
        """A further call of the step (a repair), under its retry policy like its first."""
        policy, timer = self.policies.of(step.spec)

        async def call(request: GenerationRequest) -> Generation:
            return self.served(step, await policy.call(
                self.generators[key].run_remote, request, attempts, key, gate=self.gate(key),
                timer=timer))

        return call

    @staticmethod
    def served(step: CompiledStep, generation: Generation) -> Generation:
        """The generator's reply, checked, with the capabilities as validation decided them
        where it did not say."""
        if not isinstance(generation, Generation):  # in process, nothing checked it
            raise TypeError(f"run_remote returned {type(generation).__name__}, "
                            "not a Generation")
        if generation.capabilities is None and step.served:
            generation = generation.model_copy(update={"capabilities": dict(step.served)})
        return generation

    async def after_call(self, handle: str, attempts: list[AttemptRecord],
                         generation: Generation) -> None:
        """The commit hook, awaited with the step's success before its dependents start."""
        assert self.commit is not None
        try:
            await self.commit(succeeded(self.records[handle], generation, attempts,
                                        datetime.now(UTC)))
        except Exception as exc:  # e.g. the store lost the lease: the run ends
            if not self.done.done():
                self.done.set_exception(exc)
            return
        self.settle(handle, attempts, generation)

    async def approve(self, step: CompiledStep, values: Mapping[str, str]) -> Generation:
        """An approval step: the gate's answer, parked (no model call) until it comes."""
        assert self.approvals is not None  # run_chain refuses approval steps without a gate
        text = step.render_messages(values)[-1]["content"]
        answer = await self.approvals.open(approval_request(step, text))
        if not answer.done():
            self.parked.add(step.handle)
            self.maybe_finish()
            try:
                await answer  # cancelled here (the run ends), the step stays parked
                if self.done.done():  # answered as the run ended: the next run takes it
                    await self.loop.create_future()
            except Exception:
                self.parked.discard(step.handle)
                raise
            self.parked.discard(step.handle)
        return Generation(text=answer.result(), model="human")

    async def control(self, step: CompiledStep, values: Mapping[str, str]) -> None:
        """A flow step's task (engine/flow.py): its controller's outcome handed to `finish`."""
        try:
            outcome, message = await run_flow(self, step, values)
        except asyncio.CancelledError:
            if step.handle in self.awaiting and self.suspended:  # its items wait for a person
                del self.awaiting[step.handle]
                del self.tasks[step.handle]
                raise
            self.settle(step.handle, [], self.ending)
            raise
        except Exception as exc:  # a bug in a controller: the step fails, the run goes on
            failure = describe_failure(exc, f"the {type(step.flow).__name__} controller")
            log.error("step `%s`: %s", step.handle, failure.message, exc_info=exc)
            self.settle(step.handle, [], failure)
        else:
            if self.commit is not None and isinstance(outcome, Generation):
                # Committed like a model call's result: a resumed run keeps a finished map,
                # choice or loop (and a loop's last outputs) instead of replaying it.
                try:
                    await self.commit(succeeded(self.records[step.handle], outcome, [],
                                                datetime.now(UTC), message))
                except Exception as exc:  # e.g. the store lost the lease: the run ends
                    if not self.done.done():
                        self.done.set_exception(exc)
                    return
            self.settle(step.handle, [], outcome, message)

    def settle(self, handle: str, attempts: list[AttemptRecord],
               outcome: Generation | Failure, message: str | None = None) -> None:
        """`finish`, where a bug of the engine's own ends the run with it instead of hanging."""
        try:
            self.finish(handle, attempts, outcome, message)
        except Exception as exc:
            if not self.done.done():
                self.done.set_exception(exc)

    def finish(self, handle: str, attempts: list[AttemptRecord],
               outcome: Generation | Failure, message: str | None = None) -> None:
        """A step's task ended: its slot is free, and `conclude` records how it ended."""
        del self.tasks[handle]
        if self.slots is not None and self.graph.steps[handle].flow is None:
            self.slots.release()
        self.conclude(handle, attempts, outcome, message)

    def conclude(self, handle: str, attempts: list[AttemptRecord],
                 outcome: Generation | Failure, message: str | None = None) -> None:
        """The one place a step's end is recorded and the steps it frees are started; a flow
        step's controller hears of its items' and iterations' ends here, and its `catch`
        (engine/policies.py) may turn a failure into an output."""
        current = self.records[handle]
        now = datetime.now(UTC)  # also when the steps it frees start
        caught: CaughtError | None = None
        if self.catches is not None:
            settled = self.catches.settle(self.graph.steps[handle], attempts, outcome, message,
                                          now)
            if settled is None:  # its catch step runs, or its caught output is committed,
                return  # first: it ends after
            outcome, message, caught = settled
        told = self.on_finish.pop(handle, None)
        if isinstance(outcome, Generation):
            self.set(succeeded(current, outcome, attempts, now, message, caught))
            self.outputs[handle] = outcome.text
            if told is not None:
                told(self.records[handle])
            self.start(self.graph.succeed(handle), now)
        elif outcome is CANCELLED:  # a run being cancelled starts and skips nothing more
            self.set(cancelled(current, attempts, now))
        else:
            self.set(failed(current, outcome, attempts, now))
            if told is not None:
                told(self.records[handle])
            if outcome is not self.ending:  # nor does one past its deadline
                self.first_failure = self.first_failure or handle
                for child, cause in self.graph.block(handle):
                    self.set(skipped(child, self.records[cause]))
                self.start([], now)  # a queued step may take the slot
        if self.catches is not None:
            self.catches.ended(self.records[handle], outcome)
        self.maybe_finish()

    async def await_items(self, handle: str, done: "asyncio.Future[None]") -> None:
        """A flow step's controller waits for its items (or an iteration's steps) to end; while
        only parked steps remain among them, it holds the run no more than they do."""
        self.awaiting[handle] = done
        self.maybe_finish()
        await done  # cancelled as the run ends suspended: `control` sees it still awaiting
        del self.awaiting[handle]

    @property
    def suspended(self) -> bool:
        """Whether the run ended because only parked steps (and what awaits them) remained."""
        return self.done.done() and not self.done.cancelled() and self.done.exception() is None

    def maybe_finish(self) -> None:
        """The run is over when no step can make progress: none runs but parked ones and flow
        steps awaiting items, and no kept step is about to be replayed."""
        running = len(self.tasks) - len(self.parked)
        if running > len(self.awaiting) or self.replaying or self.done.done():
            return  # the common case, decided without a loop: some step is running
        # A controller whose items just ended is about to go on: not idle.
        if running == sum(1 for done in self.awaiting.values() if not done.done()):
            self.done.set_result(None)


async def run_chain(chain: CompiledChain, inputs: Mapping[str, JsonValue],
                    generators: Mapping[str, GeneratorProtocol],
                    options: RunOptions | None = None, *,
                    observer: StepObserver | None = None,
                    previous: InvocationResult | None = None,
                    commit: StepCommit | None = None,
                    approvals: ApprovalGate | None = None,
                    code: CodeRunnerProtocol | None = None,
                    started_at: datetime | None = None) -> InvocationResult:
    """Run `chain` to the end and return its result; never raises for a failing step.

    Code steps and tools call their functions through `code` (the code runner chainlet);
    without it, in this process.

    With `commit`, each step's success is awaited through it before its dependents start.

    With `previous` (a persisted result of the same chain), steps that succeeded keep their
    records and outputs and are not called again; the rest run.

    Approval steps go to `approvals`; without it a chain with one is refused
    (ChainDefinitionError). When the run ends with approval steps parked, their records stay
    `running` in the result: the gate knows which they are.

    `options.deadline_s` counts from `started_at` when given (a resumed invocation's first
    start, so waits and restarts count), else from now.
    """
    options = options or RunOptions()
    values = chain.resolve_inputs(inputs)
    if approvals is None:
        refuse_without_gate(chain)
    missing = sorted({_generator_key(step, options) for step in chain.model_calls()}
                     - generators.keys() - {APPROVAL, CODE})
    unknown_maps = sorted(name for name in options.map_concurrency
                          if name not in chain.steps
                          or not isinstance(chain.steps[name].flow, MapFlow))
    if unknown_maps:
        maps = [h for h, s in chain.steps.items() if isinstance(s.flow, MapFlow)]
        raise ChainDefinitionError(
            f"RunOptions.map_concurrency names {', '.join(f'`{n}`' for n in unknown_maps)}, "
            f"not a map step of chain `{chain.handle}` (its maps: "
            f"{', '.join(f'`{h}`' for h in maps) or 'none'})")
    if missing:
        raise ChainDefinitionError(
            f"chain `{chain.handle}` needs generator(s) {', '.join(missing)}, which this runner "
            f"does not have (it has {', '.join(sorted(generators))})")

    prior = {r.handle: r for r in previous.steps if r.state == RunState.SUCCEEDED} \
        if previous is not None else {}
    return await _Execution(chain, values, generators, options, observer, commit,
                            approvals, code).run(prior, started_at)
