"""The worker: runs leased invocations with the engine inside the runner process, persisting
every step, renewing each lease, and claiming invocations no live worker holds."""

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from chainlets.engine.approval import ApprovalGate
from chainlets.engine.models import InvocationResult, RunOptions, RunState
from chainlets.engine.scheduler import StepCommit, StepObserver
from chainlets.errors import ChainrunnerError, LeaseLostError
from chainlets.language.compiler import CompiledChain
from chainlets.language.spec import JsonValue
from chainlets.service.approvals import InvocationApprovals
from chainlets.service.status import step_record
from chainlets.service.tokens import TaskTokens
from chainlets.service.writer import InvocationWriter
from chainlets.store import Invocation, Lease, State, Store

__all__ = ["Execute", "Worker", "WorkerSettings", "new_owner"]

log = logging.getLogger(__name__)


class Execute(Protocol):
    """What the worker needs of the runner: run a compiled chain (`ChainRunner.execute`)."""

    def __call__(self, chain: CompiledChain, inputs: dict[str, JsonValue], options: RunOptions, *,
                 observer: StepObserver, commit: StepCommit,
                 previous: InvocationResult | None,
                 approvals: ApprovalGate | None = None,
                 started_at: datetime | None = None) -> Awaitable[InvocationResult]: ...


ChainLoader = Callable[[str], Awaitable[CompiledChain]]


def new_owner() -> str:
    """A lease owner name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class WorkerSettings:
    """How the worker polls, renews and batches (each from the service's settings)."""

    poll_s: float = 1.0  # how often to look for invocations no live worker holds
    claim_batch: int = 10
    max_running: int = 10_000  # invocations this process runs at once before it stops claiming
    write_delay_s: float = 0.1  # a `running` state is written this long after it happens
    heartbeat_s: float = 3.0  # how often a lease is renewed: a third of CHAINRUNNER_LEASE_S


class Worker:
    """Runs invocations leased to `owner`: those `run_chain` created here (`start`) and those
    `claim` finds unheld (after a restart, or another replica's lease expired)."""

    def __init__(self, store: Store, execute: Execute, load_chain: ChainLoader, *,
                 owner: str | None = None, settings: WorkerSettings | None = None,
                 wake_outbox: Callable[[], None] = lambda: None,
                 tokens: TaskTokens | None = None) -> None:
        self.store, self.execute, self.load_chain = store, execute, load_chain
        self.tokens = tokens  # derive approval steps' task tokens
        self.owner = owner or new_owner()
        self.settings = settings or WorkerSettings()
        self.wake_outbox = wake_outbox
        self.running: dict[str, asyncio.Task[None]] = {}
        self.approvals: dict[str, InvocationApprovals] = {}  # of the invocations running here
        self._poller: asyncio.Task[None] | None = None

    @property
    def has_room(self) -> bool:
        """Whether this process runs fewer invocations than `max_running`: a new invocation
        is leased here only then, else left queued for whichever replica claims it first."""
        return len(self.running) < self.settings.max_running

    def start(self, lease: Lease, invocation: Invocation, chain: CompiledChain) -> None:
        """Run `invocation` (leased to this worker) in a task of its own."""
        task = asyncio.get_running_loop().create_task(
            self._run(lease, invocation, chain), name=f"invocation:{invocation.invocation_id}")
        self.running[invocation.invocation_id] = task
        task.add_done_callback(lambda _t: self.running.pop(invocation.invocation_id, None))

    async def cancel(self, invocation_id: str) -> None:
        """Stop running `invocation_id` here (its state was already written), cancelling its
        model calls; a no-op when it does not run here."""
        task = self.running.get(invocation_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def answered(self, invocation_id: str) -> None:
        """An approval of `invocation_id` was answered: its parked step goes on here, or the
        invocation (woken, unleased) is claimed now rather than at the next poll."""
        approvals = self.approvals.get(invocation_id)
        try:
            if approvals is not None:
                await approvals.refresh()
            else:
                await self.claim_once()
        except Exception as exc:  # the heartbeat or the next poll picks it up
            log.warning("invocation %s: taking up an answer failed: %s", invocation_id, exc)

    async def _run(self, lease: Lease, invocation: Invocation, chain: CompiledChain) -> None:
        writer = InvocationWriter(self.store, lease, callbacks=invocation.callback_url is not None,
                                  delay_s=self.settings.write_delay_s,
                                  wake_outbox=self.wake_outbox, unfinished=_unfinished(
                                      chain, invocation))
        beat = self._beat(lease)
        approvals = InvocationApprovals(writer, invocation, self.tokens)
        try:
            while True:
                self.approvals[lease.invocation_id] = approvals
                result = await self.execute(
                    chain, invocation.input, RunOptions.model_validate(invocation.options),
                    observer=writer.note, commit=writer.commit, previous=_previous(invocation),
                    approvals=approvals, started_at=invocation.created_at)
                if writer.lost is not None:
                    raise writer.lost
                # Steps still `running` when the run ends are approval steps parked, and the
                # maps and loops (steps of the chain with a flow) whose items wait on them.
                waiting = [r.handle for r in result.steps if r.state is RunState.RUNNING
                           and (r.handle not in chain.steps or chain.steps[r.handle].flow is None)]
                if not waiting:
                    await writer.finish(result)
                    return
                await writer.flush()
                beat.cancel()
                if await self.store.suspend(lease, waiting):
                    return  # no task, lease nor memory until an answer or a deadline
                # One was answered while the run ended: run again with its answer.
                beat = self._beat(lease)
                approvals.close()
                invocation = await self.store.get_invocation(lease.invocation_id)
                approvals = InvocationApprovals(writer, invocation, self.tokens)
        except LeaseLostError as exc:
            log.info("invocation %s: stopped, %s", invocation.invocation_id, exc)
        except ChainrunnerError as exc:  # the chain no longer runs (e.g. a generator is gone)
            await self._fail(lease, str(exc))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database error: the lease lapses, a worker takes it over
            log.exception("invocation %s: stopped by an error, left for another attempt",
                          invocation.invocation_id, exc_info=exc)
        finally:
            beat.cancel()
            approvals.close()
            if self.approvals.get(lease.invocation_id) is approvals:
                del self.approvals[lease.invocation_id]
            await writer.close()

    async def _fail(self, lease: Lease, message: str) -> None:
        with contextlib.suppress(LeaseLostError):
            await self.store.update_invocation(lease, state=State.FAILED,
                                               status_message=message)

    def _beat(self, lease: Lease) -> "_Beat":
        return _Beat(asyncio.get_running_loop(), self.settings.heartbeat_s,
                     lambda: self._heartbeat(lease))

    async def _heartbeat(self, lease: Lease) -> None:
        """Renew the lease now, then a few times per period; lost, the run stops (another
        worker has it, or it was cancelled)."""
        while True:
            try:
                renewed = await self.store.heartbeat(lease)
                if renewed.signals != lease.signals and (
                        approvals := self.approvals.get(lease.invocation_id)) is not None:
                    await approvals.refresh()  # answered through another replica
                lease = renewed
            except LeaseLostError:
                task = self.running.get(lease.invocation_id)
                if task is not None:
                    task.cancel()
                return
            except Exception as exc:  # transient: the next beat tries again
                log.warning("invocation %s: heartbeat failed: %s", lease.invocation_id, exc)
            await asyncio.sleep(self.settings.heartbeat_s)

    # Claiming invocations no live worker holds.
    def ensure_polling(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll(),
                                                                  name="chainrunner-worker")

    async def _poll(self) -> None:
        while True:
            try:
                # A full batch means more may be due (a dead replica's thousands): claim on
                # at once rather than `claim_batch` per `poll_s`.
                if await self.claim_once() == self.settings.claim_batch:
                    await asyncio.sleep(0)
                    continue
            except Exception as exc:  # the database may be down for a while: keep trying
                log.warning("worker %s: claiming failed: %s", self.owner, exc)
            await asyncio.sleep(self.settings.poll_s)

    async def claim_once(self) -> int:
        """Claim and start invocations no live worker holds; returns how many."""
        room = min(self.settings.claim_batch, self.settings.max_running - len(self.running))
        if room <= 0:
            return 0
        leases = await self.store.claim(self.owner, limit=room)
        for lease in leases:
            invocation = await self.store.get_invocation(lease.invocation_id)
            try:
                chain = await self.load_chain(invocation.chain_id)
            except ChainrunnerError as exc:
                await self._fail(lease, f"chain `{invocation.chain_id}` cannot run: {exc}")
                continue
            self.start(lease, invocation, chain)
        return len(leases)

    async def close(self) -> None:
        tasks = [t for t in (self._poller, *self.running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Beat:
    """An invocation's lease renewals: a timer until the first is due, then a task renewing
    every `every_s` (most invocations end before the first, and cost no task)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, every_s: float,
                 renew: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._loop, self._renew = loop, renew
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = loop.call_later(every_s, self._start)

    def _start(self) -> None:
        self._timer = None
        self._task = self._loop.create_task(self._renew())

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()


def _unfinished(chain: CompiledChain, invocation: Invocation) -> set[str]:
    """The chain's steps not final yet, whose last commit `finish` may carry; none for a chain
    with flow steps (their items and iterations are added at run time)."""
    if any(step.flow is not None for step in chain.steps.values()):
        return set()
    final = {s.handle for s in invocation.steps if s.state.finished}
    return {handle for handle in chain.steps if handle not in final}


def _previous(invocation: Invocation) -> InvocationResult | None:
    """The committed steps of a resumed invocation, which the engine does not run again."""
    done = [s for s in invocation.steps if s.state == State.SUCCEEDED]
    if not done:
        return None
    return InvocationResult(chain="", input=invocation.input,
                            steps=[step_record(s) for s in done])
