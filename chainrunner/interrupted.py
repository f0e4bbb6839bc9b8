"""A run interrupted by Ctrl-C (SIGINT): the steps done so far, the rest `cancelled`."""

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from chainlets.engine.models import InvocationResult, RunState, StepRecord
from chainlets.engine.state import cancelled
from chainlets.language.compiler import CompiledChain
from chainlets.language.spec import JsonValue

__all__ = ["EXIT_INTERRUPTED", "Recorder", "partial_result"]

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
_WHY = "the run was interrupted (SIGINT) before the step finished"


class Recorder:
    """An observer that keeps every step's latest record, and passes each on to `then`."""

    def __init__(self, then: Callable[[StepRecord], None] | None = None) -> None:
        self.records: dict[str, StepRecord] = {}
        self.then = then

    def __call__(self, record: StepRecord) -> None:
        self.records[record.handle] = record
        if self.then is not None:
            self.then(record)


def partial_result(chain: CompiledChain, inputs: Mapping[str, JsonValue],
                   records: Mapping[str, StepRecord]) -> InvocationResult:
    """The result of `chain` interrupted with these `records`: every finished step as it
    ended, every other one (waiting, queued, or running when interrupted) `cancelled`."""
    now = datetime.now(UTC)
    steps = []
    for handle in chain.steps:
        record = records.get(handle) or StepRecord(handle=handle)
        if not record.state.finished or record.state == RunState.CANCELLED:
            record = cancelled(record, record.attempts, now, _WHY)
        steps.append(record)
    done = sum(1 for r in steps if r.state != RunState.CANCELLED)
    return InvocationResult(
        chain=chain.handle, input=dict(inputs), state=RunState.CANCELLED, steps=steps,
        statusMessage=f"interrupted (SIGINT): {done} of {len(steps)} steps finished, the rest "
                      "are cancelled")
