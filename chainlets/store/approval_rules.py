"""The store's decisions about approvals that end without an answer: when a resume is too
late, what an open approval becomes when its step ends otherwise, when a waiting invocation
wakes. Pure functions over rows, shared by both implementations."""

import math
from collections.abc import Collection

from chainlets.engine.models import RunOptions, RunState, StepRecord
from chainlets.errors import ConflictError
from chainlets.store.models import ApprovalState
from chainlets.store.rows import Row, from_ts

__all__ = ["cancelled_waiting", "check_in_time", "closed_by", "run_deadline", "wake_at"]


def run_deadline(row: Row) -> float:
    """When the invocation's run-wide deadline passes: its options' `deadline_s` after it was
    created, counted across restarts, takeovers and waits for approval; never (infinity) for
    a run without one (a chain with approval steps and no `deadline_s` of its own)."""
    deadline_s = RunOptions.model_validate(row["options"] or {}).deadline_s
    return math.inf if deadline_s is None else float(row["created_at"]) + deadline_s


def wake_at(row: Row, approval_deadlines: Collection[float]) -> float:
    """When a suspended invocation is claimable again unanswered: its earliest approval
    deadline, or the run's deadline if that comes first."""
    return min(*approval_deadlines, run_deadline(row))


def cancelled_waiting(message: str) -> str:
    """A cancelled approval step's message: its token no longer resumes it."""
    return f"{message} while it waited for approval; its task token no longer resumes it"


def check_in_time(row: Row, step: Row, now: float) -> None:
    """A resume at or after the approval's deadline or the run's loses to them, even before a
    worker has recorded the timeout: the store's clock decides which came first."""
    where = f"step `{step['handle']}` of invocation `{row['id']}`"
    if now >= step["approval_deadline"]:
        raise ConflictError(f"{where}: its approval timed out at "
                            f"{_iso(step['approval_deadline'])} (plugin_config.timeout_s); the "
                            "task token can no longer resume it")
    deadline = run_deadline(row)
    if now >= deadline:
        deadline_s = RunOptions.model_validate(row["options"] or {}).deadline_s or 0.0
        raise ConflictError(f"{where}: the run's deadline (deadline_s={deadline_s:g} s) passed "
                            f"at {_iso(deadline)} while it waited for approval; the task token "
                            "can no longer resume it")


def closed_by(step: StepRecord) -> str | None:
    """The state an approval still open takes when the run records its step ended without an
    answer: `expired` (the run's deadline passed), `cancelled`; None for any other record."""
    if step.state in (RunState.FAILED, RunState.SKIPPED):
        return ApprovalState.EXPIRED.value
    if step.state is RunState.CANCELLED:
        return ApprovalState.CANCELLED.value
    return None


def _iso(ts: float) -> str:
    moment = from_ts(ts)
    assert moment is not None
    return moment.isoformat(timespec="seconds")
