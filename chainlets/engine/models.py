"""Wire models: what crosses chainlet boundaries and what a run returns."""

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel, model_validator
from pydantic_core import PydanticCustomError

from chainlets.engine.code_models import ToolCall, ToolCallRecord, ToolRound, ToolSpec
from chainlets.language.capabilities import Capability, Served
from chainlets.language.plugins import ModelParams
from chainlets.language.spec import ChatMessage, JsonValue

__all__ = [
    "AttemptRecord",
    "CaughtError",
    "ChainInputs",
    "ErrorKind",
    "Generation",
    "GenerationRequest",
    "InvocationResult",
    "RunOptions",
    "RunState",
    "StepRecord",
    "Usage",
]


class RunState(enum.StrEnum):
    """State of a step or a whole invocation (Steamship's states plus `queued` and `skipped`).

    A step goes `waiting` → (`queued` →) `running` → `succeeded` | `failed`, or `waiting` →
    `skipped`; `chainlets.engine.state` holds the transitions.
    """

    WAITING = "waiting"  # for its dependencies
    QUEUED = "queued"  # ready, for a slot under `max_concurrency`
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # a dependency failed or was skipped
    CANCELLED = "cancelled"  # the run was interrupted before the step finished

    @property
    def finished(self) -> bool:
        return self in (RunState.SUCCEEDED, RunState.FAILED, RunState.SKIPPED,
                        RunState.CANCELLED)


class ErrorKind(enum.StrEnum):
    """Why an attempt or a step failed, for programs: what the caller does about it differs."""

    MODEL = "model"  # the generator reported the call failed (GenerationError, or another
    # chainrunner error raised on purpose): the backend refused or failed the request
    TIMEOUT = "timeout"  # the call took too long (retried)
    CONNECTION = "connection"  # the generator chainlet or its backend was not reachable (retried)
    INTERNAL = "internal"  # a bug: an exception of no kind above, in a generator or the engine;
    # logged with its traceback
    CANCELLED = "cancelled"  # the run was cancelled while the step ran
    SCHEMA = "schema"  # the reply did not parse as JSON or meet the step's output_schema: an
    # attempt re-prompted (repaired), or a step whose repairs were used up (OutputSchemaError)


class GenerationRequest(BaseModel):
    """One model call, fully rendered: the generator does no templating."""

    model_config = ConfigDict(extra="forbid")

    step: str = Field(description="Handle of the step making the call (for logs and errors).")
    plugin: str = Field(description="Plugin serving the step (routing's pick when the step "
                                    "names several).")
    messages: list[ChatMessage] = Field(min_length=1)
    params: ModelParams = Field(default_factory=ModelParams)
    timeout_s: float | None = Field(
        default=None, gt=0, description="The attempt's time limit (`step_timeout_s`): a "
        "generator passes it to its client, so that the call ends no later than the engine "
        "gives up on it.")
    capabilities: dict[Capability, Served] = Field(
        default_factory=dict,
        description="The level validation decided each requested capability is served at: "
                    "the generator serves them so (JSON mode, streaming).")
    output_schema: dict[str, Any] | None = Field(
        default=None, description="The step's output_schema: a generator with structured "
        "output constrains the reply to it (OpenAI's `json_schema` response format); the "
        "engine validates every reply whatever the generator does.")
    call_id: str | None = Field(
        default=None, description="The caller's name for this call, so that it can cancel it "
        "later (chainlets.generators.calls); None: not cancellable by name.")
    # Tuples, empty by default: a list made per request cost the 10,000-call benchmark 1.1 MB.
    tools: tuple[ToolSpec, ...] = Field(
        default=(), description="Functions the model may call (function calling).")
    tool_rounds: tuple[ToolRound, ...] = Field(
        default=(), description="Earlier rounds of tool calls and their results, after "
        "`messages`: the model's next reply follows them.")


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
    capabilities: dict[Capability, Served] | None = Field(
        default=None, description="The level the generator served each requested capability "
                                  "at; null: as requested.")
    tool_calls: list[ToolCall] | None = Field(
        default=None, description="The tools the model asks to call (its `text` may then be "
                                  "empty); null: it answered.")


MAX_BACKOFF_LIMIT_S = 60.0


class RunOptions(BaseModel):
    """Per-invocation settings. Every duration is bounded, so no request can wait forever."""

    model_config = ConfigDict(extra="forbid")

    llm: Literal["mock", "openai"] | None = Field(
        default=None, description="Backend for `openai`/`gpt-3` steps (default: the "
        "deployment's, $CHAINRUNNER_LLM where the runner was pushed or served, else `openai`).")
    max_concurrency: int | None = Field(
        default=None, ge=1, description="At most this many steps running (model calls in "
        "flight, retries included) at once; the others are `queued`.")
    max_backend_calls: int = Field(
        default=64, ge=1, le=10_000, description="At most this many calls in flight to one "
        "backend (generator) at once, per run; the others wait for a free slot.")
    max_attempts: int = Field(default=3, ge=1, le=20,
                              description="Attempts per step for transient failures.")
    initial_backoff_s: float = Field(
        default=0.5, ge=0, le=MAX_BACKOFF_LIMIT_S,
        description="First retry delay; doubles each attempt. At most `max_backoff_s`.")
    max_backoff_s: float = Field(default=8.0, ge=0, le=MAX_BACKOFF_LIMIT_S,
                                 description="Cap on one retry delay, at most 60.")
    step_timeout_s: float = Field(
        default=120.0, gt=0, le=3600, description="Most seconds one attempt of a step may "
        "take; a slower one is recorded as a timeout and retried.")
    deadline_s: float | None = Field(
        default=None, gt=0, le=86_400, description="Most seconds the whole run may take; "
        "then it ends, its unfinished steps failed and named. With the chain's own "
        "`deadline_s`, the smaller wins. Unset: the chain's own, else 600 s; for a chain with "
        "human-approval steps, none (each approval's `timeout_s` and each step's "
        "`step_timeout_s` bound the run).")
    map_concurrency: dict[str, int] = Field(
        default_factory=dict, description="Per map step handle, at most this many of its items "
        "running at once; overrides the map's own `max_concurrency`.")

    @model_validator(mode="after")
    def _backoff_in_order(self) -> "RunOptions":
        if self.initial_backoff_s > self.max_backoff_s:
            raise PydanticCustomError(
                "backoff_order", f"initial_backoff_s ({self.initial_backoff_s:g}) must be at "
                f"most max_backoff_s ({self.max_backoff_s:g}); lower it or raise max_backoff_s "
                f"(at most {MAX_BACKOFF_LIMIT_S:g})")
        return self


# A step's and an attempt's records are slotted stdlib dataclasses, not pydantic models: the
# engine makes one at every transition, live, and the result carries those very objects
# (pydantic validates and serializes dataclasses from JSON, and passes an instance through), so
# a record is defined once. Making a finished step's records costs ~0.6 µs, validating them as
# a model ~2.7 µs. The engine never changes a record it has made: an observer or a store may
# keep it as it is. `statusMessage` is Steamship's camelCase name, kept as the field name
# itself (not an alias): truss serializes a chainlet's output through its own wrapper model,
# which ignores aliases.


@dataclass(slots=True, kw_only=True)
class AttemptRecord:
    """One try of a step's model call."""

    number: int
    started_at: datetime
    finished_at: datetime
    error: Annotated[str | None, Field(
        description="Why it failed (the error's type and message); null when it succeeded.")
    ] = None
    error_kind: Annotated[ErrorKind | None, Field(
        description="What kind of failure `error` is; null when it succeeded.")] = None
    round: Annotated[int | None, Field(
        description="Of a step with `tools`: which round of the model → tools → model loop "
        "this call was (1, 2, …); null for a step without tools.")] = None
    tool_calls: Annotated[list[ToolCallRecord] | None, Field(
        description="The tools the model called in this round's reply, each with its output "
        "or error; null when it answered without calling any.")] = None


@dataclass(slots=True, kw_only=True)
class CaughtError:
    """A failure that the step's `catch` turned into its output (the step succeeded)."""

    error: Annotated[str, Field(description="The failure caught: the error's type and message.")]
    error_kind: Annotated[ErrorKind, Field(description="What kind of failure it was.")]
    step: Annotated[str | None, Field(description="The catch step whose output the step took; "
                                             "null: the fallback `catch.output`.")] = None


@dataclass(slots=True, kw_only=True)
class StepRecord:
    """Status of one step (Steamship's step status, extended)."""

    handle: str
    state: RunState = RunState.WAITING
    statusMessage: Annotated[str | None, Field(
        description="Why it failed or was skipped: an error's type and message, never a "
        "traceback.")] = None
    output: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    usage: Usage | None = None
    error_kind: Annotated[ErrorKind | None, Field(
        description="What kind of failure ended the step; null unless it failed.")] = None
    backend: Annotated[str | None, Field(
        description="The generator that served (or was to serve) the step: `openai`, `mock`, "
        "or a runner's own; null while it waits.")] = None
    model: Annotated[str | None, Field(
        description="The model that answered, as the backend names it; else the one asked "
        "for; null when neither is known.")] = None
    capabilities: Annotated[dict[Capability, Served] | None, Field(
        description="The level each capability the step requested was served at (`native`, "
        "`best-effort`, `ignored`, `disabled`, `unserved`); null unless it succeeded or when "
        "it requested none.")] = None
    caught: Annotated[CaughtError | None, Field(
        description="Set when the step failed and its `catch` caught the failure: it then "
        "succeeded with the fallback output.")] = None


class ChainInputs(RootModel[dict[str, JsonValue]]):
    """A chain's inputs as `run_remote` takes them: each name's value is text or any JSON (a
    list to map over, an object to read a field of). A model, not `dict[str, JsonValue]`:
    truss accepts only flat containers or pydantic models as a chainlet's arguments."""

    root: dict[str, JsonValue] = Field(default_factory=dict)


class InvocationResult(BaseModel):
    """A run of a chain: Steamship's result shape plus per-step timing, attempts and usage.

    It is also the invocation's whole state: plain data, persistable after every step, and
    a run resumed from it re-runs only the steps that did not succeed.
    """

    chain: str = Field(description="Handle of the chain that ran.")
    input: dict[str, JsonValue] = Field(default_factory=dict, description="The inputs: text, "
                                        "or JSON lists and objects.")
    output: str | None = None
    state: RunState = RunState.WAITING
    statusMessage: str | None = None
    steps: list[StepRecord] = Field(default_factory=list)

    def step(self, handle: str) -> StepRecord:
        for record in self.steps:
            if record.handle == handle:
                return record
        raise KeyError(handle)
