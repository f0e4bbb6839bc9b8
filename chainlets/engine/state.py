"""A step's live state during a run, and the typed records and result built from it.

The engine keeps plain Python on its hot path (`StepRun`, timestamps as `time.time()` floats);
pydantic records are built from it when someone needs them: the observer, a batch while later
steps run, or the result at the end (benchmarks/engine.py measures the difference).
"""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from chainlets.engine.models import InvocationResult, RunState, StepRecord, Usage
from chainlets.engine.retry import Attempt

__all__ = ["StepRun", "build_result", "not_run"]


def not_run(cause: str, state: RunState) -> str:
    """Why a step was skipped: `cause`, one of its dependencies, failed or was skipped."""
    return f"not run: depends on `{cause}`, which " \
        f"{'failed' if state == RunState.FAILED else 'was skipped'}"


def _timestamp(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def _datetime(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


class StepRun:
    """A step's live state during a run."""

    __slots__ = ("attempts", "finished", "handle", "message", "output", "started", "state",
                 "usage")

    def __init__(self, handle: str) -> None:
        self.handle = handle
        self.state = RunState.WAITING
        self.message: str | None = None
        self.output: str | None = None
        self.started: float | None = None  # POSIX timestamps, as Attempt's
        self.finished: float | None = None
        self.attempts: list[Attempt] = []
        self.usage: Usage | None = None

    @classmethod
    def from_record(cls, record: StepRecord) -> "StepRun":
        run = cls(record.handle)
        run.state, run.message, run.output = record.state, record.statusMessage, record.output
        run.started, run.finished = _timestamp(record.started_at), _timestamp(record.finished_at)
        run.attempts = [Attempt(a.number, a.started_at.timestamp(), a.finished_at.timestamp(),
                                a.error) for a in record.attempts]
        run.usage = record.usage
        return run

    def as_dict(self) -> dict[str, Any]:
        """The StepRecord's fields, for one validation of many records at once."""
        return {"handle": self.handle, "state": self.state, "statusMessage": self.message,
                "output": self.output, "started_at": _datetime(self.started),
                "finished_at": _datetime(self.finished),
                "attempts": [{"number": a.number, "started_at": _datetime(a.started_at),
                              "finished_at": _datetime(a.finished_at), "error": a.error}
                             for a in self.attempts],
                "usage": self.usage}

    def to_record(self) -> StepRecord:
        return StepRecord.model_validate(self.as_dict())


def build_result(chain: str, inputs: Mapping[str, str], runs: list[StepRun],
                 records: Mapping[str, StepRecord], output: str | None,
                 first_failure: str | None) -> InvocationResult:
    """The run's result from its steps' states (in definition order), reusing `records`
    already built: the chain failed if a step did, naming `first_failure` (the first to fail
    in time) and counting the others."""
    failed = [r for r in runs if r.state == RunState.FAILED]
    state, message = RunState.SUCCEEDED, None
    if failed:
        first = next((r for r in failed if r.handle == first_failure), failed[0])
        others = f" ({len(failed) - 1} more step(s) failed)" if len(failed) > 1 else ""
        state, output = RunState.FAILED, None
        message = f"step `{first.handle}` failed: {first.message}{others}"
    return InvocationResult.model_validate({
        "chain": chain, "input": inputs, "output": output, "state": state,
        "statusMessage": message,
        "steps": [records.get(r.handle) or r.as_dict() for r in runs]})
