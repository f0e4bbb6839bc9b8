"""What the store keeps, in the service's answers: status (Steamship's shape), listings, events."""

from chainlets.engine.models import RunState, StepRecord
from chainlets.errors import ConfigurationError
from chainlets.service.events import DeliveryState, DeliveryStatus, EventRecord, EventSummary
from chainlets.service.responses import (
    InvocationStatus,
    InvocationSummary,
    PendingApproval,
    RerunOf,
)
from chainlets.service.tokens import TOKEN_SECRET_ENV, TaskTokens, reveal_event
from chainlets.service.webhooks import SECRET_ENV
from chainlets.store import ApprovalState, Event, EventState, Invocation, StoredStep

__all__ = ["event_record", "event_summary", "invocation_status", "invocation_summary",
           "step_record"]


def step_record(step: StoredStep) -> StepRecord:
    return StepRecord(handle=step.handle, state=RunState(step.state.value),
                      statusMessage=step.statusMessage, output=step.output,
                      attempts=step.attempts, started_at=step.started_at,
                      finished_at=step.finished_at, usage=step.usage,
                      error_kind=step.error_kind, backend=step.backend, model=step.model,
                      capabilities=step.capabilities, caught=step.caught)


def _delivery(event: Event) -> DeliveryStatus:
    return DeliveryStatus(state=DeliveryState(event.state.value), attempts=event.attempts,
                          last_attempt_at=event.last_attempt_at,
                          next_attempt_at=event.next_attempt_at, detail=event.last_error)


def _sent(events: list[Event]) -> list[Event]:
    return [e for e in events if e.state is not EventState.RECORDED]


def event_summary(event: Event) -> EventSummary:
    return EventSummary.model_validate({"id": event.event_id, "type": event.type,
                                        "step": event.step, "delivery": _delivery(event)})


def event_record(event: Event, tokens: TaskTokens | None) -> EventRecord:
    return EventRecord.model_validate({**reveal_event(event.body(), tokens),
                                       "delivery": _delivery(event)})


def invocation_status(invocation: Invocation, chain_handle: str, events: list[Event],
                      tokens: TaskTokens | None) -> InvocationStatus:
    """`run_status`'s answer: every step of the chain, `waiting` until it starts."""
    started = [s.started_at for s in invocation.steps if s.started_at is not None]
    rerun = invocation.rerun_of
    return InvocationStatus(
        chain=chain_handle, input=invocation.input, output=invocation.output,
        state=RunState(invocation.state.value), statusMessage=invocation.statusMessage,
        steps=[step_record(s) for s in invocation.steps],
        invocation_id=invocation.invocation_id, chain_id=invocation.chain_id,
        created_at=invocation.created_at, started_at=min(started) if started else None,
        finished_at=invocation.finished_at,
        rerun_of=RerunOf(invocation_id=rerun.invocation_id, from_step=rerun.from_step)
        if rerun is not None else None,
        callback_url=invocation.callback_url, approvals=pending_approvals(invocation, tokens),
        events=[event_summary(e) for e in _sent(events)])


def pending_approvals(invocation: Invocation,
                      tokens: TaskTokens | None) -> list[PendingApproval]:
    """The steps waiting for a person, with what they see and the token to answer with
    (derived again from its seal; rows from before tokens were derived kept it)."""
    pending = []
    for s in invocation.steps:
        approval = s.approval
        if approval is None or approval.state is not ApprovalState.OPEN:
            continue
        token = approval.task_token
        if token is None and approval.seal is not None:
            if tokens is None:
                raise ConfigurationError(f"step `{s.handle}`: its task token is derived from "
                                         f"{TOKEN_SECRET_ENV} or {SECRET_ENV}, and this "
                                         "replica has neither; set the one the others have")
            token = tokens.reveal(invocation.invocation_id, s.handle, approval.seal)
        if token is not None:
            pending.append(PendingApproval(step=s.handle, task_token=token,
                                           text=approval.prompt, choices=approval.choices,
                                           expires_at=approval.deadline))
    return pending


def invocation_summary(invocation: Invocation, chain_handle: str) -> InvocationSummary:
    rerun = invocation.rerun_of
    return InvocationSummary(
        invocation_id=invocation.invocation_id, chain_id=invocation.chain_id,
        chain=chain_handle, state=RunState(invocation.state.value),
        created_at=invocation.created_at, finished_at=invocation.finished_at,
        rerun_of=RerunOf(invocation_id=rerun.invocation_id, from_step=rerun.from_step)
        if rerun is not None else None)


def sent_events(events: list[Event], tokens: TaskTokens | None) -> list[EventRecord]:
    return [event_record(e, tokens) for e in _sent(events)]
