"""The store's decisions, shared by both implementations: what a transition writes, when a row
may be claimed, and the errors that explain a refusal. Pure functions over rows."""

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from chainlets.engine.models import StepRecord
from chainlets.errors import ConflictError, NotFoundError, RequestError
from chainlets.store.approval_rules import cancelled_waiting
from chainlets.store.models import (
    ACTIVE_STATES,
    ApprovalState,
    EventClaim,
    EventState,
    Lease,
    NewInvocation,
    OpenApproval,
    Page,
    State,
)
from chainlets.store.rows import (
    Row,
    check_limit,
    decode_cursor,
    encode_cursor,
    event_from_row,
    from_ts,
    step_values,
)
from chainlets.store.settings import Limits

T = TypeVar("T")
R = TypeVar("R", bound=Row)

OPEN = ApprovalState.OPEN.value
PENDING = EventState.PENDING.value
# An event still to be sent: claimable when due, and it holds back its invocation's later ones.
UNDELIVERED = (EventState.PENDING.value, EventState.RETRYING.value)
ACTIVE = frozenset(s.value for s in ACTIVE_STATES)


# Chains and pages.
def chain_row(chain_id: str, chain: Mapping[str, Any], now: float) -> dict[str, Any]:
    return {"id": chain_id, "handle": str(chain.get("handle") or ""),
            "spec": json.loads(json.dumps(chain)), "created_at": now, "deleted_at": None}


def page(rows: Sequence[Row], limit: int, cursor: str | None,
         build: Callable[[Row], T]) -> Page[T]:
    """Newest first, continuing strictly after `cursor`: what the SQL store's keyset does."""
    check_limit(limit)
    ordered = sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    if cursor is not None:
        after = decode_cursor(cursor)
        ordered = [r for r in ordered if (r["created_at"], r["id"]) < after]
    items = ordered[:limit]
    more = len(ordered) > limit
    return Page(items=[build(r) for r in items],
                next_cursor=encode_cursor(items[-1]["created_at"], items[-1]["id"])
                if more else None)


# Invocations.
def check_new_invocation(new: NewInvocation, limits: Limits) -> None:
    limits.check_input(new.input)
    problems = []
    duplicates = sorted({h for h in new.steps if new.steps.count(h) > 1})
    if duplicates:
        problems.append(f"steps: `{duplicates[0]}` is listed more than once")
    if new.reuse and new.rerun_of is None:
        problems.append("reuse: only a rerun (`rerun_of`) reuses step outputs")
    unknown = sorted(set(new.reuse) - set(new.steps))
    if unknown:
        problems.append(f"reuse: `{unknown[0]}` is not one of the chain's steps")
    if new.idempotency_key is not None and new.request_hash is None:
        problems.append("request_hash: required with an idempotency_key")
    if problems:
        raise RequestError("; ".join(problems), problems)


def check_same_request(new: NewInvocation, row: Row) -> None:
    if row["request_hash"] != new.request_hash:
        raise ConflictError(
            f"idempotency_key `{new.idempotency_key}` was already used for a different "
            f"request (invocation `{row['id']}`); send the same request or use a new key")


def invocation_row(new: NewInvocation, invocation_id: str, now: float, owner: str | None,
                   lease_s: float) -> dict[str, Any]:
    return {"id": invocation_id, "chain_id": new.chain_id, "state": State.RUNNING.value,
            "input": dict(new.input), "output": None, "status_message": None,
            "options": dict(new.options), "callback_url": new.callback_url,
            "idempotency_key": new.idempotency_key, "request_hash": new.request_hash,
            "rerun_of": new.rerun_of.invocation_id if new.rerun_of else None,
            "rerun_from_step": new.rerun_of.from_step if new.rerun_of else None,
            "created_at": now, "updated_at": now, "finished_at": None,
            "lease_owner": owner, "lease_attempt": 1 if owner else 0,
            "lease_expires_at": now + lease_s if owner else None, "wake_at": None,
            "signals": 0, "event_seq": 0}


def empty_step(invocation_id: str, handle: str, position: int, now: float) -> dict[str, Any]:
    return {"invocation_id": invocation_id, "handle": handle, "position": position,
            "state": State.WAITING.value, "output": None, "status_message": None,
            "attempts": [], "usage": None, "started_at": None, "finished_at": None,
            "updated_at": now, "approval_state": None, "token_hash": None,
            "approval_deadline": None, "approval": None, "details": None}


def initial_steps(new: NewInvocation, invocation_id: str, source: Sequence[Row],
                  now: float) -> list[dict[str, Any]]:
    """A waiting row per step, or for a reused step a copy of its committed source row."""
    reused = {r["handle"]: r for r in source}
    for handle in new.reuse:
        row = reused.get(handle)
        if row is None or row["state"] != State.SUCCEEDED.value:
            source_id = new.rerun_of.invocation_id if new.rerun_of else None
            raise RequestError(
                f"reuse: step `{handle}` of invocation `{source_id}` did not succeed, so "
                "there is no output to reuse; rerun from it or an earlier step")
    rows = []
    for position, handle in enumerate(new.steps):
        row = empty_step(invocation_id, handle, position, now)
        if handle in new.reuse:
            source_row = reused[handle]
            row.update({k: source_row[k] for k in ("state", "output", "status_message",
                                                   "attempts", "usage", "started_at",
                                                   "finished_at", "details")})
        rows.append(row)
    return rows


def lease_of(row: Row) -> Lease:
    expires = from_ts(row["lease_expires_at"])
    assert row["lease_owner"] is not None and expires is not None
    return Lease(invocation_id=row["id"], owner=row["lease_owner"],
                 attempt=row["lease_attempt"], expires_at=expires, signals=row["signals"])


def step_columns(step: StepRecord, approval: OpenApproval | None,
                 now: float) -> dict[str, Any]:
    values = step_values(step, now)
    if approval is not None:
        values.update(approval_state=OPEN, token_hash=approval.token_hash,
                      approval_deadline=approval.deadline.timestamp(),
                      approval={"prompt": approval.prompt, "choices": approval.choices,
                                "seal": approval.seal, "task_token": approval.task_token})
    return values


def invocation_update(state: State, output: str | None, status_message: str | None,
                      limits: Limits, now: float) -> dict[str, Any]:
    if state == State.WAITING:
        raise RequestError("state: an invocation waits for approvals through "
                                  "`suspend`, which also gives up its lease")
    limits.check_output(None, output)
    values: dict[str, Any] = {"state": state.value, "output": output,
                              "status_message": status_message, "updated_at": now}
    if state.finished:
        values.update(finished_at=now, lease_owner=None, lease_expires_at=None, wake_at=None)
    return values


def check_waiting_on(waiting_on: Collection[str]) -> None:
    if not waiting_on:
        raise RequestError("waiting_on: name the approval steps the invocation waits "
                                  "for; with none, it is finished or still running")


def suspended(wake_at: float) -> dict[str, Any]:
    return {"state": State.WAITING.value, "wake_at": wake_at, "lease_owner": None,
            "lease_expires_at": None}


def check_cancellable(row: Row) -> None:
    if row["state"] not in ACTIVE:
        raise ConflictError(f"invocation `{row['id']}` already ended `{row['state']}`; only "
                            "a waiting or running invocation can be cancelled")


def cancelled_invocation(message: str, now: float) -> dict[str, Any]:
    return {"state": State.CANCELLED.value, "status_message": message, "finished_at": now,
            "updated_at": now, "lease_owner": None, "lease_expires_at": None, "wake_at": None}


def cancelled_step(step: Row, message: str, now: float) -> dict[str, Any]:
    waited = step["approval_state"] == OPEN
    return {"state": State.CANCELLED.value, "finished_at": now, "updated_at": now,
            "status_message": cancelled_waiting(message) if waited else message,
            "approval_state": ApprovalState.CANCELLED.value
            if step["approval_state"] == OPEN else step["approval_state"]}


# Leases.
def claimable(row: Row, now: float) -> bool:
    free = row["lease_owner"] is None or row["lease_expires_at"] <= now
    due = row["state"] == State.RUNNING.value or (
        row["state"] == State.WAITING.value and row["wake_at"] is not None
        and row["wake_at"] <= now)
    return free and due


def claimed(row: Row, owner: str, now: float, lease_s: float) -> dict[str, Any]:
    return {"lease_owner": owner, "lease_attempt": row["lease_attempt"] + 1,
            "lease_expires_at": now + lease_s, "state": State.RUNNING.value, "wake_at": None,
            "updated_at": now}


# Approvals.
def resumed_step(invocation_id: str, step: Row, output: str | None, error: str | None,
                 limits: Limits, now: float) -> dict[str, Any]:
    if (output is None) == (error is None):
        raise RequestError("resume: give exactly one of `output` (the approved value) "
                                  "and `error` (why it was refused)")
    if step["approval_state"] != OPEN:
        used = step["approval_state"] in (ApprovalState.RESUMED, ApprovalState.REJECTED)
        raise ConflictError(f"step `{step['handle']}` of invocation `{invocation_id}`: the "
                            f"task token {'was already used' if used else 'can no longer be used'}"
                            f" (approval {step['approval_state']})")
    limits.check_output(step["handle"], output)
    ok = error is None
    return {"state": (State.SUCCEEDED if ok else State.FAILED).value, "output": output,
            "status_message": error, "finished_at": now, "updated_at": now,
            "approval_state": (ApprovalState.RESUMED if ok else ApprovalState.REJECTED).value}


def check_resumable(row: Row) -> None:
    if row["state"] not in ACTIVE:
        raise ConflictError(f"invocation `{row['id']}` already ended `{row['state']}`; its "
                            "approvals can no longer be resumed")


def woken(row: Row) -> dict[str, Any]:
    """A resume makes a waiting invocation claimable again (it holds no lease)."""
    if row["state"] == State.WAITING.value:
        return {"state": State.RUNNING.value, "wake_at": None}
    return {}


def timed_out_step(message: str, now: float) -> dict[str, Any]:
    return {"state": State.FAILED.value, "status_message": message, "finished_at": now,
            "updated_at": now, "approval_state": ApprovalState.TIMED_OUT.value}


# Outbox.
def event_due(event: Row, now: float) -> bool:
    free = event["claimed_by"] is None or event["claim_expires_at"] <= now
    return bool(free and event["next_attempt_at"] <= now)


def event_claimed(event: Row, owner: str, now: float, lease_s: float) -> dict[str, Any]:
    return {"claimed_by": owner, "claim_attempt": event["claim_attempt"] + 1,
            "claim_expires_at": now + lease_s}


def event_claim(event: Row) -> EventClaim:
    return EventClaim(event=event_from_row(event), owner=event["claimed_by"],
                      attempt=event["claim_attempt"])


def holds_event(event: Row, claim: EventClaim) -> bool:
    return bool(event["state"] in UNDELIVERED and event["claimed_by"] == claim.owner
                and event["claim_attempt"] == claim.attempt)


def delivered(event: Row, now: float) -> dict[str, Any]:
    return {"state": EventState.DELIVERED.value, "attempts": event["attempts"] + 1,
            "last_attempt_at": now, "delivered_at": now, "next_attempt_at": None,
            "claimed_by": None, "claim_expires_at": None}


def gone(error: str) -> dict[str, Any]:
    """No attempt goes to the event's URL any more (the receiver answered 410)."""
    return {"state": EventState.GONE.value, "last_error": error, "next_attempt_at": None,
            "claimed_by": None, "claim_expires_at": None}


def attempt_failed(event: Row, error: str, retry_at: datetime | None, disable_url: bool,
                   now: float) -> dict[str, Any]:
    state = EventState.GONE if disable_url else \
        EventState.GAVE_UP if retry_at is None else EventState.RETRYING
    return {"state": state.value, "attempts": event["attempts"] + 1, "last_attempt_at": now,
            "last_error": error, "next_attempt_at": None if retry_at is None or disable_url
            else retry_at.timestamp(), "claimed_by": None, "claim_expires_at": None}


def redeliverable(events: Sequence[R], invocation_id: str, event_id: str | None) -> list[R]:
    if event_id is None:
        return [e for e in events if e["url"] is not None]
    chosen = [e for e in events if e["id"] == event_id]
    if not chosen:
        raise NotFoundError(f"invocation `{invocation_id}` has no event `{event_id}`")
    if chosen[0]["url"] is None:
        raise RequestError(f"event `{event_id}`: the invocation has no callback_url "
                                  "to deliver it to")
    return chosen


def redelivered(now: float) -> dict[str, Any]:
    """Sent again from attempt 0, with a give-up period starting now (not at the event's
    creation, which may be long past)."""
    return {"state": PENDING, "attempts": 0, "next_attempt_at": now, "window_start": now,
            "last_error": None,
            "last_attempt_at": None,
            "delivered_at": None, "claimed_by": None, "claim_expires_at": None}


# Retention.
def purgeable(row: Row, cutoff: float) -> bool:
    return row["finished_at"] is not None and row["finished_at"] < cutoff
