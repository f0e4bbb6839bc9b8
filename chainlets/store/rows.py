"""Rows as both stores keep them (column name → value) and the models built from them.

The in-memory store holds exactly the rows the SQL store writes, so both share this one
translation, the cursors and the id and clock seams.
"""

import base64
import binascii
import hashlib
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from chainlets.engine.models import AttemptRecord, StepRecord
from chainlets.errors import RequestError
from chainlets.store.models import (
    Approval,
    ApprovalState,
    Event,
    EventState,
    Invocation,
    NewEvent,
    RerunOf,
    State,
    StoredChain,
    StoredStep,
)

__all__ = [
    "MAX_PAGE",
    "Clock",
    "IdFactory",
    "Row",
    "chain_from_row",
    "chain_id_for",
    "check_limit",
    "decode_cursor",
    "encode_cursor",
    "event_from_row",
    "event_rows",
    "from_ts",
    "invocation_from_row",
    "new_id",
    "step_from_row",
    "step_values",
    "system_clock",
    "to_ts",
]

Row = Mapping[Any, Any]  # a dict here, an SQLAlchemy RowMapping there
# Seconds since the epoch, as `time.time()`; tests pass a clock they move by hand.
Clock = Callable[[], float]
# A new unique id with the given prefix (`inv`, `evt`).
IdFactory = Callable[[str], str]

MAX_PAGE = 500


def system_clock() -> float:
    return time.time()


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def to_ts(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()


def from_ts(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def chain_id_for(chain: Mapping[str, Any]) -> str:
    """The chain's id: a digest of its canonical JSON, so an edited chain gets a new id."""
    canonical = json.dumps(chain, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "chn_" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise RequestError(f"limit: {limit} is out of range; use 1 to {MAX_PAGE}")
    return limit


def encode_cursor(created_at: float, row_id: str) -> str:
    raw = json.dumps([created_at, row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """The (created_at, id) a page ended at; listings continue strictly after it."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, row_id = json.loads(raw)
        if isinstance(created_at, int | float) and isinstance(row_id, str):
            return float(created_at), row_id
    except (binascii.Error, ValueError, TypeError):
        pass
    raise RequestError(f"cursor: {cursor!r} is not a cursor this service returned; "
                              "pass `next_cursor` from the previous page unchanged")


def chain_from_row(row: Row) -> StoredChain:
    return StoredChain(chain_id=row["id"], handle=row["handle"], chain=row["spec"],
                       created_at=_at(row["created_at"]))


def invocation_from_row(row: Row, steps: Sequence[Row] = ()) -> Invocation:
    rerun = RerunOf(invocation_id=row["rerun_of"], from_step=row["rerun_from_step"]) \
        if row["rerun_of"] is not None else None
    return Invocation(
        invocation_id=row["id"], chain_id=row["chain_id"], state=State(row["state"]),
        input=row["input"], output=row["output"], statusMessage=row["status_message"],
        options=row["options"] or {}, callback_url=row["callback_url"],
        idempotency_key=row["idempotency_key"], rerun_of=rerun,
        created_at=_at(row["created_at"]), updated_at=_at(row["updated_at"]),
        finished_at=from_ts(row["finished_at"]),
        steps=[step_from_row(s) for s in sorted(steps, key=lambda s: int(s["position"]))])


def step_from_row(row: Row) -> StoredStep:
    approval = None
    if row["approval_state"] is not None:
        details = row["approval"] or {}
        approval = Approval(state=ApprovalState(row["approval_state"]),
                            prompt=details.get("prompt", ""), choices=details.get("choices"),
                            deadline=_at(row["approval_deadline"]),
                            seal=details.get("seal"), task_token=details.get("task_token"))
    details = row.get("details") or {}
    return StoredStep(
        handle=row["handle"], position=row["position"], state=State(row["state"]),
        statusMessage=row["status_message"], output=row["output"],
        attempts=[{"number": a["number"], "started_at": _at(a["started_at"]),
                   "finished_at": _at(a["finished_at"]), "error": a["error"],
                   "error_kind": a.get("error_kind"),
                   "round": a.get("round"), "tool_calls": a.get("tool_calls")}
                  for a in row["attempts"] or ()],
        started_at=from_ts(row["started_at"]), finished_at=from_ts(row["finished_at"]),
        usage=row["usage"], approval=approval, **details)


def _attempt(attempt: AttemptRecord) -> dict[str, Any]:
    """An attempt as its step's `attempts` column holds it; a tool loop's round and calls
    only where it has them (rows written before function calling have neither)."""
    row: dict[str, Any] = {"number": attempt.number,
                           "started_at": attempt.started_at.timestamp(),
                           "finished_at": attempt.finished_at.timestamp(),
                           "error": attempt.error}
    if attempt.error_kind is not None:
        row["error_kind"] = attempt.error_kind.value
    if attempt.round is not None:
        row["round"] = attempt.round
    if attempt.tool_calls is not None:
        row["tool_calls"] = [call.model_dump() for call in attempt.tool_calls]
    return row


def step_values(step: StepRecord, now: float) -> dict[str, Any]:
    """The columns a step transition writes (not its key, position or approval)."""
    return {"state": step.state.value, "output": step.output,
            "status_message": step.statusMessage,
            "attempts": [_attempt(a) for a in step.attempts],
            "usage": step.usage.model_dump() if step.usage is not None else None,
            "details": _details(step),
            "started_at": to_ts(step.started_at), "finished_at": to_ts(step.finished_at),
            "updated_at": now}


def _details(step: StepRecord) -> dict[str, Any] | None:
    """The record's fields kept in `details`, those set only; None when none is."""
    details: dict[str, Any] = {}
    if step.error_kind is not None:
        details["error_kind"] = step.error_kind.value
    if step.backend is not None:
        details["backend"] = step.backend
    if step.model is not None:
        details["model"] = step.model
    if step.capabilities:
        details["capabilities"] = {str(k): str(v) for k, v in step.capabilities.items()}
    if step.caught is not None:
        caught = step.caught
        details["caught"] = {"error": caught.error, "error_kind": caught.error_kind.value,
                             "step": caught.step}
    return details or None


def event_rows(events: Sequence[NewEvent], invocation: Row, last_seq: int, now: float,
               ids: IdFactory) -> list[dict[str, Any]]:
    """Outbox rows for `events`, numbered after `last_seq`; pending when the invocation has a
    callback URL, else only recorded."""
    url = invocation["callback_url"]
    state = EventState.PENDING if url else EventState.RECORDED
    return [{"id": ids("evt"), "invocation_id": invocation["id"],
             "chain_id": invocation["chain_id"], "seq": last_seq + i, "type": e.type,
             "step": e.step, "data": e.data, "url": url, "created_at": now,
             "state": state.value, "attempts": 0, "next_attempt_at": now if url else None,
             "last_attempt_at": None, "last_error": None, "delivered_at": None,
             "claimed_by": None, "claim_attempt": 0,
             "claim_expires_at": None, "window_start": now}
            for i, e in enumerate(events, start=1)]


def event_from_row(row: Row) -> Event:
    return Event(event_id=row["id"], invocation_id=row["invocation_id"],
                 chain_id=row["chain_id"], seq=row["seq"], type=row["type"], step=row["step"],
                 data=row["data"] or {}, url=row["url"], created_at=_at(row["created_at"]),
                 state=EventState(row["state"]), attempts=row["attempts"],
                 last_attempt_at=from_ts(row["last_attempt_at"]),
                 next_attempt_at=from_ts(row["next_attempt_at"]),
                 last_error=row["last_error"], delivered_at=from_ts(row["delivered_at"]),
                 window_start=_at(row["window_start"] if row["window_start"] is not None
                                  else row["created_at"]))
