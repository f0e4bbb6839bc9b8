"""What the store keeps, in the service's answers: status (Steamship's shape), listings, events."""

from chainlets.engine.models import RunState, StepRecord
from chainlets.service.events import DeliveryState, DeliveryStatus, EventRecord, EventSummary
from chainlets.service.responses import (
    InvocationStatus,
    InvocationSummary,
    PendingApproval,
    RerunOf,
)
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


def event_record(event: Event) -> EventRecord:
    return EventRecord.model_validate({**event.body(), "delivery": _delivery(event)})


def invocation_status(invocation: Invocation, chain_handle: str,
                      events: list[Event]) -> InvocationStatus:
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
        callback_url=invocation.callback_url, approvals=pending_approvals(invocation),
        events=[event_summary(e) for e in _sent(events)])


def pending_approvals(invocation: Invocation) -> list[PendingApproval]:
    """The steps waiting for a person, with what they see and the token to answer with."""
    return [PendingApproval(step=s.handle, task_token=s.approval.task_token,
                            text=s.approval.prompt, choices=s.approval.choices,
                            expires_at=s.approval.deadline)
            for s in invocation.steps
            if s.approval is not None and s.approval.state is ApprovalState.OPEN
            and s.approval.task_token is not None]


def invocation_summary(invocation: Invocation, chain_handle: str) -> InvocationSummary:
    rerun = invocation.rerun_of
    return InvocationSummary(
        invocation_id=invocation.invocation_id, chain_id=invocation.chain_id,
        chain=chain_handle, state=RunState(invocation.state.value),
        created_at=invocation.created_at, finished_at=invocation.finished_at,
        rerun_of=RerunOf(invocation_id=rerun.invocation_id, from_step=rerun.from_step)
        if rerun is not None else None)


def sent_events(events: list[Event]) -> list[EventRecord]:
    return [event_record(e) for e in _sent(events)]
