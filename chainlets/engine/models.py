"""Wire models: what crosses chainlet boundaries and what a run returns."""

import enum
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from chainlets.language.plugins import ModelParams
from chainlets.language.spec import ChatMessage

__all__ = [
    "AttemptRecord",
    "Generation",
    "GenerationRequest",
    "InvocationResult",
    "RunOptions",
    "RunState",
    "StepRecord",
    "Usage",
]


class RunState(enum.StrEnum):
    """State of a step or a whole invocation (Steamship's states plus `skipped`)."""

    WAITING = "waiting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def finished(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.SKIPPED)


class GenerationRequest(BaseModel):
    """One model call, fully rendered: the generator does no templating."""

    model_config = ConfigDict(extra="forbid")

    step: str = Field(description="Handle of the step making the call (for logs and errors).")
    plugin: str = Field(description="Plugin named by the step.")
    messages: list[ChatMessage] = Field(min_length=1)
    params: ModelParams = Field(default_factory=ModelParams)


class Usage(BaseModel):
    """Token counts reported by the backend."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class Generation(BaseModel):
    """A generator's reply."""

    text: str
    model: str | None = None
    usage: Usage | None = None


class RunOptions(BaseModel):
    """Per-invocation settings."""

    model_config = ConfigDict(extra="forbid")

    llm: Literal["mock", "openai"] = Field(
        default="mock", description="Backend for `openai`/`gpt-3` steps.")
    max_concurrency: int | None = Field(
        default=None, ge=1, description="At most this many model calls in flight at once.")
    max_attempts: int = Field(default=3, ge=1, le=20,
                              description="Attempts per step for transient failures.")
    initial_backoff_s: float = Field(default=0.5, ge=0,
                                     description="First retry delay; doubles each attempt.")
    max_backoff_s: float = Field(default=8.0, ge=0, description="Cap on one retry delay.")


class AttemptRecord(BaseModel):
    """One try of a step's model call."""

    number: int
    started_at: datetime
    finished_at: datetime
    error: str | None = Field(default=None, description="Why it failed; null when it succeeded.")


# `statusMessage` is Steamship's camelCase name, kept as the field name itself (not an alias):
# truss serializes a chainlet's output through its own wrapper model, which ignores aliases.


class StepRecord(BaseModel):
    """Status of one step (Steamship's step status, extended)."""

    handle: str
    state: RunState = RunState.WAITING
    statusMessage: str | None = None
    output: str | None = None
    attempts: list[AttemptRecord] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    usage: Usage | None = None


class InvocationResult(BaseModel):
    """A run of a chain: Steamship's result shape plus per-step timing, attempts and usage.

    It is also the invocation's whole state: plain data, persistable after every step, and
    a run resumed from it re-runs only the steps that did not succeed.
    """

    chain: str = Field(description="Handle of the chain that ran.")
    input: dict[str, str] = Field(default_factory=dict)
    output: str | None = None
    state: RunState = RunState.WAITING
    statusMessage: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)

    def step(self, handle: str) -> StepRecord:
        for record in self.steps:
            if record.handle == handle:
                return record
        raise KeyError(handle)
