"""A step's states and the transitions between them, and the run's result built from them.

Each transition makes the step's next record (records are values: an observer or a store may
keep one); the engine checks every move against `NEXT_STATES`, so a new state (a step paused
for approval, say) is one entry here and the functions that make it.
"""

from collections.abc import Container, Iterable, Mapping
from datetime import datetime

from chainlets.engine.failures import Failure
from chainlets.engine.models import (
    AttemptRecord,
    CaughtError,
    ErrorKind,
    Generation,
    InvocationResult,
    RunState,
    StepRecord,
)
from chainlets.errors import ConflictError
from chainlets.language.spec import JsonValue

__all__ = ["CANCELLED", "NEXT_STATES", "build_result", "cancelled", "check_transition",
           "deadline_failure", "failed", "past_deadline", "queued", "running", "skipped",
           "skipped_because", "succeeded", "unanswered_failure"]

_ENDED = frozenset({RunState.FAILED, RunState.CANCELLED})  # by the deadline, or cancelled
NEXT_STATES: Mapping[RunState, frozenset[RunState]] = {
    RunState.WAITING: frozenset({RunState.QUEUED, RunState.RUNNING, RunState.SKIPPED}) | _ENDED,
    RunState.QUEUED: frozenset({RunState.RUNNING}) | _ENDED,
    RunState.RUNNING: frozenset({RunState.SUCCEEDED}) | _ENDED,
    RunState.SUCCEEDED: frozenset(),
    RunState.FAILED: frozenset(),
    RunState.SKIPPED: frozenset(),
    RunState.CANCELLED: frozenset(),
}

CANCELLED = Failure(ErrorKind.CANCELLED, "cancelled")


def check_transition(current: StepRecord | None, new: StepRecord) -> None:
    """Raises ConflictError unless a step may go from `current` (None: waiting) to `new`."""
    state = RunState.WAITING if current is None else current.state
    if new.state not in NEXT_STATES[state]:
        raise ConflictError(f"step `{new.handle}` cannot go from {state} to {new.state}")


def queued(handle: str) -> StepRecord:
    """Ready, waiting for a slot under `max_concurrency`."""
    return StepRecord(handle=handle, state=RunState.QUEUED)


def running(handle: str, now: datetime, backend: str | None = None,
            model: str | None = None) -> StepRecord:
    """Its call under way, to `backend` asking for `model` (None: the backend's default)."""
    return StepRecord(handle=handle, state=RunState.RUNNING, started_at=now, backend=backend,
                      model=model)


def succeeded(current: StepRecord, generation: Generation, attempts: list[AttemptRecord],
              now: datetime, message: str | None = None,
              caught: CaughtError | None = None) -> StepRecord:
    """`message`: how a flow step ended (the branch a choice took, a loop's iterations), or
    what its `catch` caught (`caught`)."""
    return StepRecord(handle=current.handle, state=RunState.SUCCEEDED, output=generation.text,
                      statusMessage=message,
                      attempts=attempts, started_at=current.started_at, finished_at=now,
                      usage=generation.usage, backend=current.backend,
                      model=generation.model or current.model,
                      capabilities=generation.capabilities, caught=caught)


def failed(current: StepRecord, failure: Failure, attempts: list[AttemptRecord],
           now: datetime) -> StepRecord:
    return StepRecord(handle=current.handle, state=RunState.FAILED, statusMessage=failure.message,
                      error_kind=failure.kind, attempts=attempts, started_at=current.started_at,
                      finished_at=now, backend=current.backend, model=current.model)


def cancelled(current: StepRecord, attempts: list[AttemptRecord], now: datetime,
              why: str = "the run was cancelled before the step finished") -> StepRecord:
    """Interrupted: running (its attempts so far kept), or not started yet."""
    return StepRecord(handle=current.handle, state=RunState.CANCELLED,
                      statusMessage=f"cancelled: {why}", error_kind=ErrorKind.CANCELLED,
                      attempts=attempts, started_at=current.started_at,
                      finished_at=now if current.started_at else None,
                      backend=current.backend, model=current.model)


def past_deadline(current: StepRecord, attempts: list[AttemptRecord], now: datetime,
                  deadline_s: float) -> StepRecord:
    """Failed because the run's deadline passed before the step finished (or started)."""
    return failed(current, deadline_failure(deadline_s), attempts, now)


def deadline_failure(deadline_s: float) -> Failure:
    return Failure(ErrorKind.TIMEOUT, f"DeadlineExceeded: the run's deadline (deadline_s="
                                      f"{deadline_s:g} s) passed before the step finished")


def unanswered_failure(deadline_s: float) -> Failure:
    """An approval step's end when the run's deadline passed first: its token is void."""
    return Failure(ErrorKind.TIMEOUT, f"DeadlineExceeded: the run's deadline (deadline_s="
                                      f"{deadline_s:g} s) passed before anyone answered the "
                                      "step's approval; its task token no longer resumes it")


def skipped(handle: str, cause: StepRecord) -> StepRecord:
    """Not run: `cause`, one of its dependencies, failed or was skipped."""
    why = "failed" if cause.state == RunState.FAILED else "was skipped"
    return StepRecord(handle=handle, state=RunState.SKIPPED,
                      statusMessage=f"not run: depends on `{cause.handle}`, which {why}")


def skipped_because(handle: str, reason: str) -> StepRecord:
    """Not run, for `reason` (a choice took another branch)."""
    return StepRecord(handle=handle, state=RunState.SKIPPED, statusMessage=reason)


def build_result(chain: str, inputs: Mapping[str, JsonValue], handles: Iterable[str],
                 records: Mapping[str, StepRecord], output: str | None,
                 first_failure: str | None,
                 tolerated: Container[str] = frozenset()) -> InvocationResult:
    """The run's result from its steps' records (in `handles`' order; a step without one is
    waiting): the chain failed if a step did (other than the map items in `tolerated`),
    naming `first_failure` (the first to fail in time) and counting the others."""
    steps = [records.get(h) or StepRecord(handle=h) for h in handles]
    failed_steps = [r for r in steps if r.state == RunState.FAILED and r.handle not in tolerated]
    state, message = RunState.SUCCEEDED, None
    if failed_steps:
        first = next((r for r in failed_steps if r.handle == first_failure), failed_steps[0])
        others = f" ({len(failed_steps) - 1} more step(s) failed)" \
            if len(failed_steps) > 1 else ""
        state, output = RunState.FAILED, None
        message = f"step `{first.handle}` failed: {first.statusMessage}{others}"
    return InvocationResult(chain=chain, input=dict(inputs), output=output, state=state,
                            statusMessage=message, steps=steps)
