"""Service answers: what each operation returns, and an invocation's status."""

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, RootModel

from chainlets.engine.models import InvocationResult, RunState
from chainlets.language.spec import ChainSpec
from chainlets.service.events import EventRecord, EventSummary

__all__ = [
    "Answer",
    "ChainCreated",
    "ChainDeleted",
    "ChainPage",
    "ChainSummary",
    "EventPage",
    "InvocationPage",
    "InvocationRef",
    "InvocationStatus",
    "InvocationSummary",
    "PendingApproval",
    "Redelivered",
    "RerunOf",
    "Resumed",
    "StoredChain",
]

_NEXT = "Pass as `cursor` for the next page; null on the last page."


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChainCreated(_Reply):
    """`create_chain`'s answer."""

    chain_id: str


class StoredChain(_Reply):
    """`get_chain`'s answer."""

    chain_id: str
    chain: ChainSpec
    created_at: AwareDatetime


class ChainSummary(_Reply):
    """A stored chain as `list_chains` lists it (`get_chain` has the whole chain)."""

    chain_id: str
    handle: str
    description: str | None = None
    created_at: AwareDatetime


class ChainPage(_Reply):
    """`list_chains`'s answer, newest first."""

    chains: list[ChainSummary]
    next_cursor: str | None = Field(default=None, description=_NEXT)


class ChainDeleted(_Reply):
    """`delete_chain`'s answer."""

    chain_id: str
    deleted: bool = True


class InvocationRef(_Reply):
    """The answer of `run_chain`, `rerun` and `cancel`: which invocation, in which state."""

    invocation_id: str
    state: RunState


class RerunOf(_Reply):
    """Where a rerun came from."""

    invocation_id: str
    from_step: str


class PendingApproval(_Reply):
    """A step waiting for a human: what the reviewer sees, and the token to `resume` it."""

    step: str
    task_token: str
    text: str = Field(description="The step's rendered prompt.")
    choices: list[str] | None = Field(default=None, description="The outputs `resume` "
                                                                "accepts, if limited.")
    expires_at: AwareDatetime | None = Field(default=None, description="When the step fails "
                                                                       "for want of an answer.")


class InvocationStatus(InvocationResult):
    """`run_status`'s answer: Steamship's shape (`input`, `output`, `state`, `statusMessage`,
    `steps`), readable while the invocation runs, plus where it came from and its callbacks."""

    invocation_id: str
    chain_id: str | None = Field(default=None,
                                 description="The stored chain; null for an inline chain.")
    created_at: AwareDatetime
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    rerun_of: RerunOf | None = None
    callback_url: str | None = None
    approvals: list[PendingApproval] = Field(
        default_factory=list, description="Steps waiting for approval, with their tokens.")
    events: list[EventSummary] = Field(
        default_factory=list, description="Callback events so far, each with its delivery "
                                          "state.")


class InvocationSummary(_Reply):
    """An invocation as `list_invocations` lists it."""

    invocation_id: str
    chain_id: str | None = None
    chain: str = Field(description="Handle of the chain.")
    state: RunState
    created_at: AwareDatetime
    finished_at: AwareDatetime | None = None
    rerun_of: RerunOf | None = None


class InvocationPage(_Reply):
    """`list_invocations`'s answer, newest first."""

    invocations: list[InvocationSummary]
    next_cursor: str | None = Field(default=None, description=_NEXT)


class EventPage(_Reply):
    """`events`' answer, oldest first (the order they are delivered in)."""

    events: list[EventRecord]
    next_cursor: str | None = Field(default=None, description=_NEXT)


class Redelivered(_Reply):
    """`redeliver`'s answer: the events queued to be sent again."""

    invocation_id: str
    event_ids: list[str]


class Resumed(_Reply):
    """`resume`'s answer: the step that was waiting, in its new state."""

    invocation_id: str
    step: str
    state: RunState


class Answer(RootModel[InvocationStatus | InvocationRef | ChainCreated | StoredChain
                       | ChainPage | ChainDeleted | InvocationPage | EventPage | Redelivered
                       | Resumed | InvocationResult]):
    """What the entrypoint's `run_remote` returns: one operation's answer, or a synchronous
    run's result. Truss 0.18.35 takes one return type; serialized, it is the answer itself."""
