"""Callback events: the JSON body signed and sent to `callback_url`, and its delivery state."""

import enum

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from chainlets.engine.models import RunState

__all__ = ["DeliveryState", "DeliveryStatus", "EventRecord", "EventSummary", "EventType",
           "WebhookEvent"]


class EventType(enum.StrEnum):
    """What an event announces."""

    STEP_FINISHED = "step.finished"
    CHAIN_FINISHED = "chain.finished"
    STEP_WAITING = "step.waiting"


class WebhookEvent(BaseModel):
    """The body of one callback: a state change of a step or of the whole invocation."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="Equal to the `webhook-id` header and the same on "
                                              "every retry: the receiver's idempotency key.")
    type: EventType
    timestamp: AwareDatetime = Field(description="When the state change happened.")
    invocation_id: str
    chain_id: str | None = Field(description="The stored chain; null for an inline chain.")
    step: str | None = Field(description="Handle of the step; null for chain events.")
    state: RunState = Field(description="The step's state (step events) or the invocation's.")
    output: str | None = Field(description="The step's or the chain's output, when it has one.")
    error: str | None = Field(description="Why it failed; null unless it failed.")
    task_token: str | None = Field(
        default=None, description="`step.waiting` only: pass it to `resume`.")
    text: str | None = Field(
        default=None, description="`step.waiting` only: the rendered prompt the reviewer sees.")
    choices: list[str] | None = Field(
        default=None, description="`step.waiting` only: the outputs `resume` accepts, if "
                                  "limited.")

    @model_validator(mode="after")
    def _fields_fit_type(self) -> "WebhookEvent":
        if (self.type is EventType.CHAIN_FINISHED) != (self.step is None):
            raise ValueError(f"a `{self.type}` event "
                             + ("has no `step`" if self.step is None else "names no step"))
        waiting = self.type is EventType.STEP_WAITING
        if waiting and (self.task_token is None or self.text is None):
            raise ValueError("a `step.waiting` event needs `task_token` and `text`")
        if not waiting and (self.task_token, self.text, self.choices) != (None, None, None):
            raise ValueError("only a `step.waiting` event has `task_token`, `text`, `choices`")
        return self

    def body(self) -> str:
        """The exact JSON text that is signed and sent."""
        return self.model_dump_json()


class DeliveryState(enum.StrEnum):
    """Where an event's delivery stands."""

    PENDING = "pending"
    """Not attempted yet (it waits for the previous event of its invocation)."""
    RETRYING = "retrying"
    """At least one attempt failed; `next_attempt_at` says when the next one goes."""
    DELIVERED = "delivered"
    """The receiver answered 2xx."""
    GAVE_UP = "gave_up"
    """Every attempt of the retry period failed; `redeliver` sends it again."""
    GONE = "gone"
    """The receiver answered 410: nothing more goes to that URL."""


class DeliveryStatus(BaseModel):
    """An event's delivery: attempts so far and what the last one got."""

    model_config = ConfigDict(extra="forbid")

    state: DeliveryState = DeliveryState.PENDING
    attempts: int = Field(default=0, ge=0)
    last_attempt_at: AwareDatetime | None = None
    next_attempt_at: AwareDatetime | None = None
    detail: str | None = Field(default=None, description="What the last attempt got, e.g. "
                                                         "`HTTP 500` or `timed out after 10 s`.")


class EventSummary(BaseModel):
    """An event as listed in an invocation's status."""

    model_config = ConfigDict(extra="forbid")

    id: str
    type: EventType
    step: str | None
    delivery: DeliveryStatus


class EventRecord(WebhookEvent):
    """An event as the `events` operation lists it: the body sent, and its delivery."""

    delivery: DeliveryStatus
