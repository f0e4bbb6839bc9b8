"""What the store keeps and hands back: chains, invocations, steps, events and leases."""

import enum
from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from chainlets.engine.models import AttemptRecord, CaughtError, ErrorKind, Usage
from chainlets.language.capabilities import Capability, Served
from chainlets.language.spec import JsonValue

__all__ = [
    "ACTIVE_STATES",
    "Approval",
    "ApprovalState",
    "Created",
    "Event",
    "EventClaim",
    "EventState",
    "Invocation",
    "Lease",
    "NewEvent",
    "NewInvocation",
    "OpenApproval",
    "Page",
    "PurgeCounts",
    "RerunOf",
    "State",
    "StoredChain",
    "StoredStep",
]

T = TypeVar("T")


class State(enum.StrEnum):
    """State of an invocation or a step: the engine's states plus `cancelled`."""

    WAITING = "waiting"
    QUEUED = "queued"  # steps only: ready, waiting for a slot under `max_concurrency`
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in ACTIVE_STATES


# An invocation in one of these has work left: `running` while a step can run, `waiting`
# while only approvals remain (it then holds no lease until resumed or a deadline passes).
ACTIVE_STATES = frozenset({State.WAITING, State.QUEUED, State.RUNNING})


class StoredChain(BaseModel):
    """A chain definition as stored: immutable, its id derived from its content."""

    chain_id: str
    handle: str
    chain: dict[str, Any] = Field(description="The chain's JSON, as given.")
    created_at: datetime


class RerunOf(BaseModel):
    """The invocation a rerun reuses outputs of, and the step it runs again from."""

    invocation_id: str
    from_step: str


class NewInvocation(BaseModel):
    """What `create_invocation` stores."""

    model_config = ConfigDict(extra="forbid")

    chain_id: str
    input: dict[str, JsonValue] = Field(default_factory=dict,
                                        description="Text, or any JSON value, by name.")
    steps: list[str] = Field(
        default_factory=list,
        description="Handles of the chain's steps in definition order; each is listed "
                    "`waiting` from the start. Steps added at run time get a place later.")
    options: dict[str, Any] = Field(default_factory=dict)
    callback_url: str | None = None
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_hash: str | None = Field(
        default=None, description="Digest of the request; the same idempotency key with a "
                                  "different hash is a conflict.")
    rerun_of: RerunOf | None = None
    reuse: list[str] = Field(
        default_factory=list,
        description="With `rerun_of`: handles whose committed records are copied from it.")


class ApprovalState(enum.StrEnum):
    """Where a human-approval step's task token stands; only `open` can be resolved."""

    OPEN = "open"
    RESUMED = "resumed"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"  # its own `timeout_s` passed
    EXPIRED = "expired"  # the run's deadline (`deadline_s`) passed while it waited
    CANCELLED = "cancelled"


class OpenApproval(BaseModel):
    """What a step waiting for a human stores: its task token is looked up by hash only; the
    service derives the token again from `seal` and its secret (the token is not stored)."""

    token_hash: str = Field(min_length=16, max_length=128)
    seal: str | None = Field(default=None, description="Key id and nonce the service derives "
                                                       "the token from with its secret.")
    task_token: str | None = Field(default=None, description="Rows written before tokens were "
                                                             "derived kept the token itself.")
    prompt: str = Field(description="The rendered text the reviewer sees.")
    choices: list[str] | None = None
    deadline: datetime


class Approval(BaseModel):
    """A human-approval step's pending or settled decision, as shown in status."""

    state: ApprovalState
    prompt: str
    choices: list[str] | None = None
    deadline: datetime
    seal: str | None = None
    task_token: str | None = None  # only in rows written before tokens were derived


class StoredStep(BaseModel):
    """One step of an invocation, keyed by (invocation, handle); `position` orders them."""

    handle: str
    position: int
    state: State = State.WAITING
    statusMessage: str | None = None
    output: str | None = None
    attempts: list[AttemptRecord] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    usage: Usage | None = None
    approval: Approval | None = None
    error_kind: ErrorKind | None = None
    backend: str | None = None
    model: str | None = None
    capabilities: dict[Capability, Served] | None = None
    caught: CaughtError | None = None


class Invocation(BaseModel):
    """An invocation; `steps` is empty in listings and complete from `get_invocation`."""

    invocation_id: str
    chain_id: str
    state: State
    input: dict[str, JsonValue]
    output: str | None = None
    statusMessage: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    callback_url: str | None = None
    idempotency_key: str | None = None
    rerun_of: RerunOf | None = None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None
    steps: list[StoredStep] = Field(default_factory=list)


class Lease(BaseModel):
    """The right to run an invocation: every write made under it is fenced by
    (`owner`, `attempt`); a claim after expiry increments `attempt`."""

    model_config = ConfigDict(frozen=True)

    invocation_id: str
    owner: str
    attempt: int
    expires_at: datetime
    signals: int = Field(default=0, description="Approvals resolved so far; a change since "
                                                "the last heartbeat means reload the steps.")


class Created(BaseModel):
    """`create_invocation`'s answer: `created` is false when an idempotency key matched."""

    invocation: Invocation
    created: bool
    lease: Lease | None = None


class NewEvent(BaseModel):
    """An event to write in the same transaction as the state change it announces."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="e.g. `step.finished`, `chain.finished`, `step.waiting`.")
    step: str | None = Field(default=None, description="The step's handle; null for the chain.")
    data: dict[str, Any] = Field(default_factory=dict,
                                 description="The body's other fields: state, output, error.")


class EventState(enum.StrEnum):
    """Where an event's delivery stands (the service's `DeliveryState`, plus `recorded`)."""

    PENDING = "pending"  # not attempted yet
    RETRYING = "retrying"  # an attempt failed; the next goes at `next_attempt_at`
    DELIVERED = "delivered"
    GAVE_UP = "gave_up"  # every attempt of the retry period failed
    GONE = "gone"  # the receiver answered 410: nothing more goes to that URL
    RECORDED = "recorded"  # the invocation has no callback URL: kept, never sent


class Event(BaseModel):
    """An outbox row: delivered in `seq` order per invocation, at least once."""

    event_id: str = Field(description="Stable across retries (the `webhook-id`).")
    invocation_id: str
    chain_id: str
    seq: int = Field(description="Position among its invocation's events, from 1.")
    type: str
    step: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    url: str | None = None
    created_at: datetime
    state: EventState
    attempts: int = 0
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None
    window_start: datetime = Field(description="Retries go no later than the give-up period "
                                               "after this: the event's creation, or its last "
                                               "redelivery.")

    def body(self) -> dict[str, Any]:
        """The JSON object a callback receiver gets."""
        return {"id": self.event_id, "type": self.type,
                "timestamp": self.created_at.isoformat(), "invocation_id": self.invocation_id,
                "chain_id": self.chain_id, "step": self.step, **self.data}


class EventClaim(BaseModel):
    """An event claimed for one delivery attempt; marking it is fenced by owner and attempt."""

    model_config = ConfigDict(frozen=True)

    event: Event
    owner: str
    attempt: int


class Page(BaseModel, Generic[T]):
    """One page of a listing; pass `next_cursor` back for the next (null: no more)."""

    items: list[T]
    next_cursor: str | None = None


class PurgeCounts(BaseModel):
    """Rows removed by one retention purge."""

    invocations: int = 0
    steps: int = 0
    events: int = 0
    chains: int = 0
