"""The service's operations over the store and the worker: what each `op` does and answers."""

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from chainlets.engine.approval import approval_steps, run_deadline_s
from chainlets.engine.models import RunOptions, RunState, StepRecord
from chainlets.errors import NotFoundError, RequestError
from chainlets.language.compiler import CompiledChain, compile_chain
from chainlets.language.plugins import PluginRegistry
from chainlets.language.spec import ChainSpec
from chainlets.service import models as ops
from chainlets.service import responses as replies
from chainlets.service.approvals import NO_SECRET
from chainlets.service.reruns import plan_reuse
from chainlets.service.settings import ServiceLimits
from chainlets.service.status import invocation_status, invocation_summary, sent_events
from chainlets.service.tokens import TaskTokens, hash_token
from chainlets.service.worker import Worker
from chainlets.service.writer import chain_finished, step_finished
from chainlets.store import (
    ApprovalState,
    EventState,
    NewInvocation,
    RerunOf,
    State,
    Store,
    StoredStep,
    chain_id_for,
)

__all__ = ["CANCELLED_MESSAGE", "Operations", "request_hash"]

CANCELLED_MESSAGE = "cancelled by request"
_UNDELIVERED = (EventState.GAVE_UP, EventState.GONE)


def _chain_json(chain: ChainSpec) -> dict[str, Any]:
    """The chain as stored: its fields as given (unset defaults left out), so the same
    definition always gets the same content id."""
    return chain.model_dump(mode="json", exclude_unset=True)


def request_hash(chain_id: str, request: ops.RunChain) -> str:
    """What makes two `run_chain` requests the same, for their idempotency key."""
    options = request.options.model_dump(mode="json") if request.options else None
    canonical = json.dumps({"chain_id": chain_id, "inputs": request.inputs,
                            "callback_url": request.callback_url, "options": options},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Operations:
    """Answers each operation; compiled chains are cached by id (stored chains never change)."""

    def __init__(self, store: Store, worker: Worker, plugins: PluginRegistry,
                 limits: ServiceLimits, *, wake_outbox: Callable[[], None] = lambda: None,
                 tokens: TaskTokens | None = None) -> None:
        self.store, self.worker, self.plugins, self.limits = store, worker, plugins, limits
        self.tokens = tokens
        self.wake_outbox = wake_outbox
        self._compiled: dict[str, CompiledChain] = {}

    async def load_chain(self, chain_id: str) -> CompiledChain:
        """The stored chain `chain_id`, compiled (NotFoundError when there is none)."""
        compiled = self._compiled.get(chain_id)
        if compiled is None:
            stored = await self.store.get_chain(chain_id)
            compiled = compile_chain(ChainSpec.model_validate(stored.chain), self.plugins)
            self._compiled[chain_id] = compiled
        return compiled

    async def _chain_handle(self, chain_id: str) -> str:
        compiled = self._compiled.get(chain_id)
        if compiled is not None:
            return compiled.handle
        return (await self.store.get_chain(chain_id)).handle

    async def _store_chain(self, chain: ChainSpec) -> tuple[str, CompiledChain]:
        """Validate `chain` fully, then store it (a no-op when stored already)."""
        compiled = compile_chain(chain, self.plugins)
        document = _chain_json(chain)
        chain_id = chain_id_for(document)
        if chain_id not in self._compiled:
            await self.store.create_chain(document)
            self._compiled[chain_id] = compiled
        return chain_id, self._compiled[chain_id]

    async def handle(self, request: ops.Operation) -> BaseModel:
        """The answer to `request`; raises the errors of chainlets.errors for the client's
        mistakes (RequestError 400, NotFoundError 404, ConflictError 409)."""
        match request:
            case ops.CreateChain():
                chain_id, _compiled = await self._store_chain(request.chain)
                return replies.ChainCreated(chain_id=chain_id)
            case ops.GetChain():
                stored = await self.store.get_chain(request.chain_id)
                return replies.StoredChain(chain_id=stored.chain_id, created_at=stored.created_at,
                                           chain=ChainSpec.model_validate(stored.chain))
            case ops.ListChains():
                chains = await self.store.list_chains(
                    limit=request.limit or self.limits.default_page_size, cursor=request.cursor)
                return replies.ChainPage(next_cursor=chains.next_cursor, chains=[
                    replies.ChainSummary(chain_id=c.chain_id, handle=c.handle,
                                         description=c.chain.get("description") or None,
                                         created_at=c.created_at) for c in chains.items])
            case ops.DeleteChain():
                await self.store.delete_chain(request.chain_id)
                self._compiled.pop(request.chain_id, None)
                return replies.ChainDeleted(chain_id=request.chain_id)
            case ops.RunChain():
                return await self.run_chain(request)
            case ops.RunStatus():
                invocation = await self.store.get_invocation(request.invocation_id)
                events = await self.store.list_events(invocation.invocation_id) \
                    if invocation.callback_url else []
                return invocation_status(invocation,
                                         await self._chain_handle(invocation.chain_id), events,
                                         self.tokens)
            case ops.Cancel():
                return await self.cancel(request.invocation_id)
            case ops.ListInvocations():
                return await self.list_invocations(request)
            case ops.Events():
                return await self.events(request)
            case ops.Redeliver():
                return await self.redeliver(request)
            case ops.Resume():
                return await self.resume(request)
            case ops.Rerun():
                return await self.rerun(request)

    async def run_chain(self, request: ops.RunChain) -> replies.InvocationRef:
        if request.chain is not None:
            chain_id, compiled = await self._store_chain(request.chain)
        else:
            assert request.chain_id is not None  # the model requires exactly one
            chain_id, compiled = request.chain_id, await self.load_chain(request.chain_id)
        inputs = compiled.resolve_inputs(request.inputs)  # InputsError names what is wrong
        self._check_approvals(compiled)
        new = NewInvocation(
            chain_id=chain_id, input=inputs, steps=list(compiled.steps),
            options=_stored_options(request.options or RunOptions(), compiled),
            callback_url=request.callback_url, idempotency_key=request.idempotency_key,
            request_hash=request_hash(chain_id, request) if request.idempotency_key else None)
        # Run here at once when this replica has room; else queued, unleased, for the first
        # replica's poller with room (the load balancer spreads requests; this, the work).
        owner = self.worker.owner if self.worker.has_room else None
        created = await self.store.create_invocation(new, owner=owner)
        if created.created and created.lease is not None:
            self.worker.start(created.lease, created.invocation, compiled)
        return replies.InvocationRef(invocation_id=created.invocation.invocation_id,
                                     state=created.invocation.state.value)

    async def resume(self, request: ops.Resume) -> replies.Resumed:
        """Answer a waiting approval step; the store settles it atomically against a timeout,
        a cancel or another resume (ConflictError: the token was used)."""
        token_hash = hash_token(request.task_token)
        invocation_id, step = await self.store.get_approval(token_hash)
        approval = step.approval
        if approval is None or not self._token_matches(request.task_token, invocation_id, step):
            raise NotFoundError("task_token: no step waits on this token")
        if request.output is not None and approval.state is ApprovalState.OPEN \
                and approval.choices is not None and request.output not in approval.choices:
            raise RequestError(
                f"output: {request.output!r} is not one of step `{step.handle}`'s choices "
                f"({', '.join(repr(c) for c in approval.choices)}); answer with one of them, "
                "or refuse with `error`")
        invocation = await self.store.get_invocation(invocation_id)
        ok = request.error is None
        events = [step_finished(StepRecord(
            handle=step.handle, state=RunState.SUCCEEDED if ok else RunState.FAILED,
            output=request.output, statusMessage=request.error))] \
            if invocation.callback_url else []
        resumed = await self.store.resume_approval(token_hash, output=request.output,
                                                   error=request.error, events=events)
        if events:
            self.wake_outbox()
        await self.worker.answered(invocation_id)
        return replies.Resumed(invocation_id=invocation_id, step=resumed.handle,
                               state=RunState(resumed.state.value))

    def _check_approvals(self, compiled: CompiledChain) -> None:
        waiting = approval_steps(compiled.steps.values())
        if waiting and self.tokens is None:
            raise RequestError(f"chain `{compiled.handle}`: step `{waiting[0]}` waits for "
                               f"approval, and {NO_SECRET}")

    def _token_matches(self, token: str, invocation_id: str, step: StoredStep) -> bool:
        """The token found by its hash, checked in constant time against the stored hash and
        the token its seal derives (or, in rows from before derivation, the kept token)."""
        approval = step.approval
        assert approval is not None
        if approval.seal is not None and self.tokens is not None and not self.tokens.matches(
                token, invocation_id, step.handle, approval.seal):
            return False
        if approval.task_token is not None:
            return hmac.compare_digest(approval.task_token.encode(), token.encode())
        return True

    async def rerun(self, request: ops.Rerun) -> replies.InvocationRef:
        """A new invocation running `from_step` and everything after it, the other steps'
        committed outputs copied from the source invocation."""
        source = await self.store.get_invocation(request.invocation_id)
        source_chain = await self.load_chain(source.chain_id)
        if request.chain is not None:
            chain_id, compiled = await self._store_chain(request.chain)
        else:
            chain_id, compiled = source.chain_id, source_chain
        reuse = plan_reuse(source, source_chain, compiled, request.from_step)
        self._check_approvals(compiled)
        inputs = compiled.resolve_inputs(source.input)
        new = NewInvocation(
            chain_id=chain_id, input=inputs, steps=list(compiled.steps),
            options=_stored_options(RunOptions.model_validate(source.options), compiled),
            rerun_of=RerunOf(invocation_id=source.invocation_id, from_step=request.from_step),
            reuse=reuse)
        created = await self.store.create_invocation(new, owner=self.worker.owner)
        if created.lease is not None:
            self.worker.start(created.lease, created.invocation, compiled)
        return replies.InvocationRef(invocation_id=created.invocation.invocation_id,
                                     state=created.invocation.state.value)

    async def cancel(self, invocation_id: str) -> replies.InvocationRef:
        invocation = await self.store.cancel_invocation(
            invocation_id, message=CANCELLED_MESSAGE,
            events=[chain_finished(RunState.CANCELLED, None, CANCELLED_MESSAGE)])
        await self.worker.cancel(invocation_id)
        if invocation.callback_url:
            self.wake_outbox()
        return replies.InvocationRef(invocation_id=invocation_id, state=invocation.state.value)

    async def list_invocations(self, request: ops.ListInvocations) -> replies.InvocationPage:
        page = await self.store.list_invocations(
            chain_id=request.chain_id,
            state=State(request.state.value) if request.state is not None else None,
            since=request.since, limit=request.limit or self.limits.default_page_size,
            cursor=request.cursor)
        return replies.InvocationPage(next_cursor=page.next_cursor, invocations=[
            invocation_summary(i, await self._chain_handle(i.chain_id)) for i in page.items])

    async def events(self, request: ops.Events) -> replies.EventPage:
        await self.store.get_invocation(request.invocation_id)  # 404 for an unknown id
        events = sent_events(await self.store.list_events(request.invocation_id), self.tokens)
        after = _seq_cursor(request.cursor)
        limit = request.limit or self.limits.default_page_size
        ordered = [e for n, e in enumerate(events, start=1) if n > after]
        page = ordered[:limit]
        more = len(ordered) > limit
        return replies.EventPage(events=page,
                                 next_cursor=str(after + limit) if more else None)

    async def redeliver(self, request: ops.Redeliver) -> replies.Redelivered:
        invocation = await self.store.get_invocation(request.invocation_id)
        if invocation.callback_url is None:
            raise RequestError(f"invocation_id: `{request.invocation_id}` was started without a "
                               "callback_url, so it has no events to deliver")
        if request.event_id is not None:
            chosen = [request.event_id]
        else:
            chosen = [e.event_id for e in await self.store.list_events(request.invocation_id)
                      if e.state in _UNDELIVERED]
        for event_id in chosen:
            await self.store.redeliver(request.invocation_id, event_id)
        if chosen:
            self.wake_outbox()
        return replies.Redelivered(invocation_id=request.invocation_id, event_ids=chosen)


def _stored_options(options: RunOptions, chain: CompiledChain) -> dict[str, Any]:
    """The options an invocation keeps: its `deadline_s` the effective one (the chain's own
    when smaller), so the store can tell when the run's deadline passes (a resume after it
    is refused, a waiting invocation wakes at it)."""
    options = options.model_copy(update={"deadline_s": run_deadline_s(options, chain)})
    return options.model_dump(mode="json", exclude_defaults=True)


def _seq_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not cursor.isdigit():
        raise RequestError(f"cursor: {cursor!r} is not a cursor this operation gave; pass "
                           "`next_cursor` of the previous page")
    return int(cursor)
