"""One invocation's writes while it runs: each result committed before dependents start, other
transitions coalesced, each with the outbox events announcing it, in order."""

import asyncio
import logging
from collections.abc import Callable, Collection

from chainlets.engine.models import InvocationResult, RunState, StepRecord
from chainlets.errors import LeaseLostError
from chainlets.store import Lease, NewEvent, OpenApproval, State, Store

__all__ = ["InvocationWriter", "chain_finished", "step_finished"]

log = logging.getLogger(__name__)


def step_finished(record: StepRecord) -> NewEvent:
    """The `step.finished` event of a step that reached a final state."""
    failed = record.state in (RunState.FAILED, RunState.SKIPPED, RunState.CANCELLED)
    return NewEvent(type="step.finished", step=record.handle, data={
        "state": record.state.value, "output": record.output,
        "error": record.statusMessage if failed else None})


def chain_finished(state: RunState, output: str | None, error: str | None) -> NewEvent:
    """The `chain.finished` event of an invocation that reached a final state."""
    return NewEvent(type="chain.finished", data={"state": state.value, "output": output,
                                                 "error": error})


class InvocationWriter:
    """Persists one invocation's step transitions under its lease.

    A succeeded step goes through `commit` (awaited by the engine before dependents start).
    Every other transition (`running`, `failed`, `skipped`) is only noted: the latest per step
    is written `delay_s` later, unless a later write of the same step supersedes it first (so
    a step that finishes within `delay_s` costs one write, not two). Writes for an invocation
    never overlap, so a later state is never overwritten by an earlier one. Events go in the
    same transaction as their state change, only when the invocation has a callback URL.

    The last of `unfinished` (the chain's steps not yet final) to succeed has no dependent
    left to start: its commit is held and written with the invocation's end, in one
    transaction (`finish`). A crash in between loses only that uncommitted result, which the
    resumed run computes again, as after a crash during any step.
    """

    def __init__(self, store: Store, lease: Lease, *, callbacks: bool, delay_s: float = 0.1,
                 wake_outbox: Callable[[], None] = lambda: None,
                 unfinished: Collection[str] = ()) -> None:
        self.store, self.lease, self.callbacks, self.delay_s = store, lease, callbacks, delay_s
        self.wake_outbox = wake_outbox
        self._chain_steps = frozenset(unfinished)
        self._unfinished = set(unfinished)
        # Steps whose end was announced by whoever settled them (an approval's resume or
        # timeout): their records are written without a second `step.finished`.
        self.announced: set[str] = set()
        self._pending: dict[str, StepRecord] = {}
        self._lock = asyncio.Lock()
        self._flush: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self.lost: LeaseLostError | None = None

    def _events(self, event: NewEvent) -> list[NewEvent]:
        return [event] if self.callbacks else []

    def note(self, record: StepRecord) -> None:
        """The engine's observer: remember the step's latest state for the next write."""
        if record.state.finished:
            self._unfinished.discard(record.handle)
        if record.state == RunState.SUCCEEDED:
            return  # `commit` writes it
        self._pending[record.handle] = record
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.delay_s, self._spawn_flush)

    def _spawn_flush(self) -> None:
        self._flush = None
        task = asyncio.get_running_loop().create_task(self._write_pending())
        self._flushing.add(task)
        task.add_done_callback(self._flush_done)

    def _flush_done(self, task: asyncio.Task[None]) -> None:
        self._flushing.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            if isinstance(exc, LeaseLostError):
                self.lost = exc
            else:  # a later write (the next commit, or `finish`) retries the same records
                log.warning("invocation %s: writing step states failed: %s",
                            self.lease.invocation_id, exc)

    async def _write_pending(self) -> None:
        async with self._lock:
            while self._pending:
                handle, record = next(iter(self._pending.items()))
                events = [step_finished(record)] if self.callbacks and record.state.finished \
                    and handle not in self.announced else []
                await self.store.record_step(self.lease, record, events=events)
                if self._pending.get(handle) is record:
                    del self._pending[handle]
                if events:
                    self.wake_outbox()

    async def commit(self, record: StepRecord) -> None:
        """Write a succeeded step's record (and its event) now, in one transaction; the chain's
        last step's is held for `finish`."""
        self._unfinished.discard(record.handle)
        if not self._unfinished and record.handle in self._chain_steps:
            self._pending[record.handle] = record  # no timer: `finish` comes next
            return
        self._pending.pop(record.handle, None)
        events = [step_finished(record)] \
            if self.callbacks and record.handle not in self.announced else []
        async with self._lock:
            await self.store.record_step(self.lease, record, events=events)
        if events:
            self.wake_outbox()

    async def park(self, record: StepRecord, approval: OpenApproval | None = None,
                   event: NewEvent | None = None) -> None:
        """Write an approval step's `waiting` record now, superseding its noted `running` one
        (with its approval and `step.waiting` event when it opens)."""
        self._pending.pop(record.handle, None)
        events = self._events(event) if event is not None else []
        async with self._lock:
            await self.store.record_step(self.lease, record, events=events, approval=approval)
        if events:
            self.wake_outbox()

    def drop(self, handle: str) -> None:
        """Forget the step's noted record: a later one supersedes it."""
        self._pending.pop(handle, None)

    async def flush(self) -> None:
        """Write what is pending now."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        await self._write_pending()

    async def finish(self, result: InvocationResult) -> None:
        """Write what is pending and the invocation's final state (ending its lease) in one
        transaction."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        error = result.statusMessage if result.state != RunState.SUCCEEDED else None
        async with self._lock:
            records = list(self._pending.values())
            events = [step_finished(r) for r in records
                      if r.state.finished and r.handle not in self.announced] \
                if self.callbacks else []
            await self.store.update_invocation(
                self.lease, state=State(result.state.value), output=result.output,
                status_message=result.statusMessage, steps=records,
                events=[*events, *self._events(chain_finished(result.state, result.output,
                                                               error))])
            self._pending.clear()
        if self.callbacks:
            self.wake_outbox()

    async def close(self) -> None:
        """Drop what is pending (the run was cancelled or lost its lease)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        self._pending.clear()
        for task in list(self._flushing):
            task.cancel()
        await asyncio.gather(*self._flushing, return_exceptions=True)
