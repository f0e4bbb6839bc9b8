"""Approval steps in the service: task tokens, the `step.waiting` event, and the answers (a
person's `resume`, the deadline) handed to the engine's parked steps of one running invocation."""

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from chainlets.engine.approval import ApprovalError, ApprovalRequest
from chainlets.engine.models import RunState, StepRecord
from chainlets.errors import ConfigurationError
from chainlets.service.tokens import TOKEN_SECRET_ENV, TaskTokens, hash_token
from chainlets.service.webhooks import SECRET_ENV
from chainlets.service.writer import InvocationWriter, step_finished
from chainlets.store import ApprovalState, Invocation, NewEvent, OpenApproval, State, StoredStep

__all__ = ["NO_SECRET", "InvocationApprovals", "hash_token", "step_waiting",
           "timeout_message"]

log = logging.getLogger(__name__)

NO_SECRET = (f"human approval needs a secret to derive task tokens from (the database keeps "
             f"none): set {TOKEN_SECRET_ENV} or {SECRET_ENV} (a `whsec_…` secret; a truss "
             "secret when deployed)")


def step_waiting(handle: str, seal: str, text: str, choices: list[str] | None) -> NewEvent:
    """The `step.waiting` event: what the reviewer sees, and the seal its token is derived
    from when it is sent (`reveal_event`), so the outbox row holds no token either."""
    return NewEvent(type="step.waiting", step=handle, data={
        "state": RunState.WAITING.value, "output": None, "error": None, "task_token": None,
        "task_token_seal": seal, "text": text, "choices": choices})


def timeout_message(handle: str, timeout_s: float) -> str:
    return (f"approval timed out: nobody answered step `{handle}` within its timeout_s="
            f"{timeout_s:g} s (plugin_config.timeout_s)")


def settled_record(step: StoredStep) -> StepRecord:
    """A step's record as the store settled it (resumed, refused, timed out)."""
    ok = step.state is State.SUCCEEDED
    return StepRecord(handle=step.handle, state=RunState.SUCCEEDED if ok else RunState.FAILED,
                      output=step.output, statusMessage=None if ok else step.statusMessage,
                      started_at=step.started_at, finished_at=step.finished_at)


def _waiting(handle: str, since: datetime | None) -> StepRecord:
    return StepRecord(handle=handle, state=RunState.WAITING, started_at=since,
                      backend="human-approval")


class InvocationApprovals:
    """The engine's ApprovalGate for one run of one invocation under its lease.

    A step's approval is opened once per invocation (its token stored, its event sent); a run
    after a restart or a resume finds it in the store and parks on it again, or takes its
    answer. Answers learnt from the store were announced by whoever settled them, so the
    writer does not announce them twice.
    """

    def __init__(self, writer: InvocationWriter, invocation: Invocation,
                 tokens: TaskTokens | None) -> None:
        self.writer, self.store, self.lease, self.tokens = writer, writer.store, writer.lease, \
            tokens
        self.steps = {s.handle: s for s in invocation.steps}
        self.waiting: dict[str, asyncio.Future[str]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self, request: ApprovalRequest) -> "asyncio.Future[str]":
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.waiting[request.step] = future
        stored = self.steps.get(request.step)
        approval = stored.approval if stored is not None else None
        if stored is None or approval is None:
            deadline = datetime.now(UTC) + timedelta(seconds=request.timeout_s)
            await self._announce(request, deadline)
        elif approval.state is not ApprovalState.OPEN:
            self.writer.drop(request.step)  # the engine records the answer
            self.settle(stored)
            return future
        else:  # opened by an earlier run: it waits again
            deadline = approval.deadline
            await self.writer.park(_waiting(request.step, stored.started_at))
        delay = (deadline - datetime.now(UTC)).total_seconds()
        self._timers[request.step] = asyncio.get_running_loop().call_later(
            max(0.0, delay), lambda: self._spawn(self._expire(request)))
        return future

    async def _announce(self, request: ApprovalRequest, deadline: datetime) -> None:
        if self.tokens is None:  # run_chain refuses such chains; a replica set up otherwise
            raise ConfigurationError(NO_SECRET)
        token, seal = self.tokens.mint(self.lease.invocation_id, request.step)
        await self.writer.park(_waiting(request.step, datetime.now(UTC)), OpenApproval(
            token_hash=hash_token(token), seal=seal, prompt=request.text,
            choices=request.choices, deadline=deadline),
            step_waiting(request.step, seal, request.text, request.choices))

    def settle(self, step: StoredStep) -> None:
        """Hand a settled approval's answer to its parked step (a no-op when not parked)."""
        future = self.waiting.get(step.handle)
        if future is None or future.done():
            return
        self.writer.announced.add(step.handle)
        timer = self._timers.pop(step.handle, None)
        if timer is not None:
            timer.cancel()
        if step.state is State.SUCCEEDED:
            future.set_result(step.output or "")
        else:
            state = step.approval.state.value if step.approval is not None else "refused"
            future.set_exception(ApprovalError(step.statusMessage or state))

    async def refresh(self) -> None:
        """An approval of this invocation was answered: settle the parked steps it concerns."""
        if not any(not f.done() for f in self.waiting.values()):
            return
        invocation = await self.store.get_invocation(self.lease.invocation_id)
        for step in invocation.steps:
            if step.approval is not None and step.approval.state is not ApprovalState.OPEN:
                self.settle(step)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _expire(self, request: ApprovalRequest) -> None:
        """The deadline passed: fail the step, unless an answer came first (the store
        decides which, atomically)."""
        message = timeout_message(request.step, request.timeout_s)
        failed = StepRecord(handle=request.step, state=RunState.FAILED, statusMessage=message)
        events = [step_finished(failed)] if self.writer.callbacks else []
        try:
            expired = await self.store.expire_approval(self.lease, request.step,
                                                       message=message, events=events)
        except Exception as exc:  # lease lost or the store down: the next run decides
            log.warning("invocation %s: expiring step %s failed: %s",
                        self.lease.invocation_id, request.step, exc)
            return
        if not expired:
            await self.refresh()
            return
        if events:
            self.writer.wake_outbox()
        future = self.waiting.get(request.step)
        if future is not None and not future.done():
            self.writer.announced.add(request.step)
            future.set_exception(ApprovalError(message))

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        for future in self.waiting.values():
            with contextlib.suppress(asyncio.InvalidStateError):
                future.cancel()
