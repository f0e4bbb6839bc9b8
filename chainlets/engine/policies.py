"""Per-step policies at run time: a step's own retry and timeout over the run's, and `catch`.

A step without policies takes the run's retry policy and attempt timer as they are (the
scheduler checks two fields of its spec, nothing more). A step's `catch` is settled in the
scheduler's one place where a step ends (`_Execution.conclude`), through `Catches`:

- a fallback value: the failed step succeeds with it, its record's `caught` saying what failed;
- a catch step: the failed step stays `running` while its catch step runs with `{error}` and
  `{error_kind}`, then ends as the catch step did: succeeded with its output (and `caught`),
  or failed, naming both errors. A catch step whose step succeeded is skipped with the reason.
"""

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Protocol

from chainlets.engine.failures import Failure
from chainlets.engine.graph import StepGraph
from chainlets.engine.models import (
    AttemptRecord,
    CaughtError,
    Generation,
    RunOptions,
    RunState,
    StepRecord,
)
from chainlets.engine.retry import RetryPolicy
from chainlets.engine.state import CANCELLED, skipped, skipped_because, succeeded
from chainlets.engine.timeouts import AttemptTimer
from chainlets.language.compiler import CompiledChain, CompiledStep
from chainlets.language.flow import LoopFlow, MapFlow
from chainlets.language.messages import listing
from chainlets.language.policies import RetrySpec, catch_text, kind_matches
from chainlets.language.spec import StepSpec

__all__ = ["CatchHost", "Catches", "Settled", "StepPolicies"]

# How a step ends once its catch had its say: the outcome, the status message, what it caught.
Settled = tuple[Generation | Failure, str | None, CaughtError | None]


class StepPolicies:
    """The run's retry policy and attempt timer, and those of steps with their own."""

    __slots__ = ("_retries", "_timers", "default", "timer")

    def __init__(self, default: RetryPolicy, timer: AttemptTimer) -> None:
        self.default, self.timer = default, timer
        # By the RetrySpec's id, the spec kept alive with it: a map's items share their map's.
        self._retries: dict[int, tuple[RetrySpec, RetryPolicy]] = {}
        self._timers: dict[float, AttemptTimer] = {}

    def of(self, spec: StepSpec) -> tuple[RetryPolicy, AttemptTimer]:
        """The retry policy and attempt timer of a step with `retry` or `timeout_s`."""
        policy, timer = self.default, self.timer
        retry = spec.retry
        if retry is not None:
            known = self._retries.get(id(retry))
            if known is None:
                known = self._retries[id(retry)] = (retry, _retry_policy(retry, policy))
            policy = known[1]
        if spec.timeout_s is not None:
            timer = self._timers.get(spec.timeout_s) or self._timers.setdefault(
                spec.timeout_s, AttemptTimer(spec.timeout_s, "timeout_s"))
        return policy, timer


def _retry_policy(retry: RetrySpec, run: RetryPolicy) -> RetryPolicy:
    """`retry` over the run's policy: each field it sets replaces the run's."""
    return RetryPolicy(
        max_attempts=run.max_attempts if retry.max_attempts is None else retry.max_attempts,
        initial_backoff_s=run.initial_backoff_s if retry.initial_backoff_s is None
        else retry.initial_backoff_s,
        max_backoff_s=run.max_backoff_s if retry.max_backoff_s is None else retry.max_backoff_s,
        jitter=retry.jitter, on=frozenset(retry.on))


def step_timeout_s(spec: StepSpec, options: RunOptions) -> float:
    """One attempt's limit: the step's `timeout_s`, else the run's `step_timeout_s`."""
    return options.step_timeout_s if spec.timeout_s is None else spec.timeout_s


class CatchHost(Protocol):
    """What `Catches` needs of the run (`scheduler._Execution`)."""

    @property
    def graph(self) -> StepGraph: ...

    @property
    def ending(self) -> Failure: ...

    @property
    def records(self) -> Mapping[str, StepRecord]: ...

    def set(self, record: StepRecord) -> None: ...

    def start(self, ready: list[str], now: datetime) -> None: ...

    def skip_step(self, handle: str, reason: str) -> None: ...

    def tolerate(self, handles: Iterable[str]) -> None: ...

    def conclude(self, handle: str, attempts: list[AttemptRecord],
                 outcome: Generation | Failure, message: str | None = None) -> None: ...

    @property
    def commit(self) -> Callable[[StepRecord], Awaitable[None]] | None: ...

    @property
    def tasks(self) -> dict[str, "asyncio.Task[None]"]: ...

    @property
    def done(self) -> "asyncio.Future[None]": ...


class Catches:
    """The `catch` of every step of one run, and the catch steps running for a failed step."""

    def __init__(self, host: CatchHost, chain: CompiledChain) -> None:
        self.host = host
        self.caught_by = chain.catch_steps  # catch step → the step it catches
        self.catch_step = {caught: handler for handler, caught in chain.catch_steps.items()}
        # A catch step running → the step it catches, that step's attempts and failure.
        self.running: dict[str, tuple[str, list[AttemptRecord], CaughtError]] = {}
        self.errors: dict[str, dict[str, str]] = {}  # a catch step's `{error}`, `{error_kind}`
        self.resolving: dict[str, CaughtError | None] = {}  # steps its catch step ended

    def settle(self, step: CompiledStep, attempts: list[AttemptRecord],
               outcome: Generation | Failure, message: str | None,
               now: datetime) -> Settled | None:
        """How `step` ends given its `outcome`; None when its catch step starts instead."""
        handle, host = step.handle, self.host
        if handle in self.resolving:  # its catch step ended: it ends as that did
            return outcome, message, self.resolving.pop(handle)
        handler = self.catch_step.get(handle)
        if isinstance(outcome, Generation):
            if handler is not None:
                host.skip_step(handler, f"not run: step `{handle}` succeeded, so its catch "
                                        "step was not needed")
            return outcome, message, None
        catch = step.spec.catch
        if catch is None or outcome is CANCELLED or outcome is host.ending:
            return outcome, message, None
        if catch.errors is not None \
                and not kind_matches(catch.errors, outcome.kind, outcome.transient):
            if handler is not None:
                host.skip_step(handler, f"not run: step `{handle}` failed with a "
                                        f"`{outcome.kind}` error, which its catch does not "
                                        f"catch (it catches {listing(catch.errors)})")
            return outcome, message, None
        caught = CaughtError(error=outcome.message, error_kind=outcome.kind, step=catch.step)
        if isinstance(step.flow, MapFlow | LoopFlow):  # its failed items fail the run no more
            host.tolerate(_failed_members(step, host.records))
        if isinstance(step.flow, LoopFlow):  # its output is no list of iterations now
            for body in step.flow.body:
                host.skip_step(body.handle, f"not run: loop `{handle}` failed and its catch "
                                            "caught it, so its steps have no last output")
        if catch.step is None:
            return self._succeed(handle, attempts, Generation(text=catch_text(catch.output)),
                                 f"caught: {outcome.message}; the output is `catch.output`",
                                 caught, now)
        pending = host.graph.pending
        if pending.get(catch.step) != 1:  # not waiting for this step alone: it cannot run
            return outcome, message, None
        del pending[catch.step]
        self.running[catch.step] = (handle, attempts, caught)
        self.errors[catch.step] = {"error": outcome.message, "error_kind": outcome.kind.value}
        host.start([catch.step], now)
        return None

    def values(self, step: CompiledStep, outputs: Mapping[str, str]) -> dict[str, str]:
        """A catch step's values from its dependencies: the step it catches left its error."""
        values = {dep: outputs[dep] for dep in step.deps if dep in outputs}
        values.update(self.errors.pop(step.handle))
        return values

    def ended(self, record: StepRecord, outcome: Generation | Failure) -> None:
        """A step ended with `outcome`: if a failed step waited for it as its catch step, that
        one ends too, as it did."""
        entry = self.running.pop(record.handle, None)
        if entry is None:
            return
        handle, attempts, caught = entry
        message = None
        self.resolving[handle] = None
        if isinstance(outcome, Generation):
            message = f"caught: {caught.error}; the output is catch step `{record.handle}`'s"
            settled = self._succeed(handle, attempts, Generation(text=record.output or ""),
                                    message, caught, datetime.now(UTC))
            if settled is None:
                return
            outcome, message, self.resolving[handle] = settled
        elif outcome is not CANCELLED and outcome is not self.host.ending:
            outcome = Failure(caught.error_kind, f"{caught.error}; its catch step "
                                                 f"`{record.handle}` failed too: "
                                                 f"{record.statusMessage}")
        self.host.conclude(handle, attempts, outcome, message)

    def _succeed(self, handle: str, attempts: list[AttemptRecord], generation: Generation,
                 message: str, caught: CaughtError, now: datetime) -> Settled | None:
        """A caught step's success; with a commit hook, None: it is committed first (in a
        task of its own, like a model call's result), then concluded."""
        host = self.host
        if host.commit is None:
            return generation, message, caught
        record = succeeded(host.records[handle], generation, attempts, now, message, caught)
        host.tasks[handle] = asyncio.get_running_loop().create_task(
            self._commit(record, attempts, generation), name=f"step:{handle}")
        return None

    async def _commit(self, record: StepRecord, attempts: list[AttemptRecord],
                      generation: Generation) -> None:
        host = self.host
        assert host.commit is not None
        try:
            await host.commit(record)
        except Exception as exc:  # as a model call's commit: the run ends with it
            if not host.done.done():
                host.done.set_exception(exc)
            return
        del host.tasks[record.handle]
        self.resolving[record.handle] = record.caught
        host.conclude(record.handle, attempts, generation, record.statusMessage)

    def unneeded(self, ready: list[str], succeeded: Mapping[str, StepRecord]) -> list[str]:
        """`ready` less the catch steps of steps that succeeded in an earlier run (resumed),
        each recorded skipped, with what depends on it."""
        host, keep = self.host, []
        for handle in ready:
            caught = self.caught_by.get(handle)
            if caught is None or caught not in succeeded:
                keep.append(handle)
                continue
            host.set(skipped_because(handle, f"not run: step `{caught}` succeeded, so its "
                                             "catch step was not needed"))
            for child, cause in host.graph.block(handle):
                host.set(skipped(child, host.records[cause]))
        return keep


def _failed_members(step: CompiledStep, records: Mapping[str, StepRecord]) -> list[str]:
    """The failed items of a map, or failed iterations' steps of a loop (`name[3]`)."""
    names = [body.handle for body in step.flow.body] if isinstance(step.flow, LoopFlow) \
        else [step.handle]
    member = re.compile("(?:" + "|".join(re.escape(name) for name in names) + r")\[\d+\]")
    return [handle for handle, record in records.items()
            if record.state == RunState.FAILED and member.fullmatch(handle)]
