"""Service requests: one model per `op` a POST to `run_remote` names, parsed as one union.

A body without `op` is no operation: the runner keeps its synchronous run for it.
"""

import difflib
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
from pydantic import (
    AfterValidator,
    AnyHttpUrl,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from chainlets.engine.models import RunOptions, RunState
from chainlets.errors import RequestError
from chainlets.language.spec import ChainSpec, JsonValue
from chainlets.service.settings import ServiceLimits

__all__ = [
    "OPERATIONS",
    "Cancel",
    "CreateChain",
    "DeleteChain",
    "Events",
    "GetChain",
    "ListChains",
    "ListInvocations",
    "Operation",
    "Redeliver",
    "Rerun",
    "Resume",
    "RunChain",
    "RunStatus",
    "parse_operation",
]


def _limits(info: ValidationInfo) -> ServiceLimits | None:
    return info.context.get("limits") if isinstance(info.context, dict) else None


def _check_page_size(value: int, info: ValidationInfo) -> int:
    limits = _limits(info)
    if limits is not None and value > limits.max_page_size:
        raise PydanticCustomError(
            "page_size", "{value} is more than the largest page, {most} "
            "(CHAINRUNNER_MAX_PAGE_SIZE): ask for at most {most} and follow `next_cursor`",
            {"value": value, "most": limits.max_page_size})
    return value


def _check_key(value: str, info: ValidationInfo) -> str:
    limits = _limits(info)
    if limits is not None and len(value) > limits.max_idempotency_key_chars:
        raise PydanticCustomError(
            "key_length", "{length} characters is longer than the limit, {most} "
            "(CHAINRUNNER_MAX_IDEMPOTENCY_KEY_CHARS): use a shorter key, such as a hash",
            {"length": len(value), "most": limits.max_idempotency_key_chars})
    return value


_HTTP_URL = pydantic.TypeAdapter(AnyHttpUrl)


def _check_callback_url(value: str, info: ValidationInfo) -> str:
    limits = _limits(info)
    if limits is not None and len(value) > limits.max_callback_url_chars:
        raise PydanticCustomError(
            "url_length", "{length} characters is longer than the limit, {most} "
            "(CHAINRUNNER_MAX_CALLBACK_URL_CHARS)",
            {"length": len(value), "most": limits.max_callback_url_chars})
    try:
        _HTTP_URL.validate_python(value)
    except pydantic.ValidationError:
        raise PydanticCustomError(
            "callback_url", "{url} is not an http or https URL; give one such as "
            "https://example.com/hooks/chainrunner", {"url": _show(value)}) from None
    return value


Id = Annotated[str, Field(min_length=1)]
PageSize = Annotated[int, Field(ge=1), AfterValidator(_check_page_size)]
Cursor = Annotated[str, Field(min_length=1,
                              description="`next_cursor` of the previous page; omit for the "
                                          "first.")]
CallbackUrl = Annotated[str, AfterValidator(_check_callback_url)]
IdempotencyKey = Annotated[str, Field(min_length=1), AfterValidator(_check_key)]
_LIMIT = "Page size (default CHAINRUNNER_DEFAULT_PAGE_SIZE, at most CHAINRUNNER_MAX_PAGE_SIZE)."


def _exactly_one(first: str, first_value: object, second: str, second_value: object,
                 meaning: str) -> None:
    if (first_value is None) == (second_value is None):
        got = "neither" if first_value is None else "both"
        raise PydanticCustomError(
            "exactly_one", "give exactly one of `{first}` or `{second}` ({meaning}); got {got}",
            {"first": first, "second": second, "meaning": meaning, "got": got})


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateChain(_Request):
    """Store a chain (immutable; a new version gets a new id). Answer: `ChainCreated`."""

    op: Literal["create_chain"] = "create_chain"
    chain: ChainSpec = Field(description="The chain, validated fully before it is stored.")


class GetChain(_Request):
    """Read a stored chain. Answer: `StoredChain`."""

    op: Literal["get_chain"] = "get_chain"
    chain_id: Id


class ListChains(_Request):
    """List stored chains, newest first. Answer: `ChainPage`."""

    op: Literal["list_chains"] = "list_chains"
    limit: PageSize | None = Field(default=None, description=_LIMIT)
    cursor: Cursor | None = None


class DeleteChain(_Request):
    """Delete a stored chain; its invocations stay readable. Answer: `ChainDeleted`."""

    op: Literal["delete_chain"] = "delete_chain"
    chain_id: Id


class RunChain(_Request):
    """Start an invocation and answer at once with `InvocationRef` (state `running`)."""

    op: Literal["run_chain"] = "run_chain"
    chain_id: Id | None = Field(default=None, description="A stored chain to run.")
    chain: ChainSpec | None = Field(default=None, description="A chain definition to run.")
    inputs: dict[str, JsonValue] = Field(
        default_factory=dict, description="The chain's inputs: text, or any JSON value (a list "
        "to map over, an object to read a field of); at most CHAINRUNNER_MAX_INPUT_BYTES as "
        "JSON.")
    callback_url: CallbackUrl | None = Field(
        default=None, description="http(s) URL sent a signed event when each step and the "
                                  "chain finish; overrides the chain's own `callback_url`.")
    idempotency_key: IdempotencyKey | None = Field(
        default=None, description="The same key with the same request returns the same "
                                  "invocation; with a different request it is a 409.")
    options: RunOptions | None = Field(default=None, description="Per-invocation settings.")

    @model_validator(mode="after")
    def _one_chain(self) -> "RunChain":
        _exactly_one("chain_id", self.chain_id, "chain", self.chain,
                     "a stored chain or a chain definition")
        return self


class RunStatus(_Request):
    """Read an invocation's status, also while it runs. Answer: `InvocationStatus`."""

    op: Literal["run_status"] = "run_status"
    invocation_id: Id


class Cancel(_Request):
    """Cancel a running invocation (a finished one is a 409). Answer: `InvocationRef`."""

    op: Literal["cancel"] = "cancel"
    invocation_id: Id


class ListInvocations(_Request):
    """List invocations, newest first, optionally filtered. Answer: `InvocationPage`."""

    op: Literal["list_invocations"] = "list_invocations"
    chain_id: Id | None = Field(default=None, description="Only invocations of this chain.")
    state: RunState | None = Field(default=None, description="Only invocations in this state.")
    since: AwareDatetime | None = Field(
        default=None, description="Only invocations created at or after this time (ISO 8601 "
                                  "with a UTC offset).")
    limit: PageSize | None = Field(default=None, description=_LIMIT)
    cursor: Cursor | None = None


class Events(_Request):
    """List an invocation's callback events with their delivery state. Answer: `EventPage`."""

    op: Literal["events"] = "events"
    invocation_id: Id
    limit: PageSize | None = Field(default=None, description=_LIMIT)
    cursor: Cursor | None = None


class Redeliver(_Request):
    """Send events again, with a fresh retry period. Answer: `Redelivered`."""

    op: Literal["redeliver"] = "redeliver"
    invocation_id: Id
    event_id: Id | None = Field(
        default=None, description="The event to resend; omitted: every event of the "
                                  "invocation that was not delivered (given up or gone).")


class Resume(_Request):
    """Complete (`output`) or fail (`error`) a step waiting for approval. Answer: `Resumed`."""

    op: Literal["resume"] = "resume"
    task_token: Id = Field(description="The waiting step's token, from status or its "
                                       "`step.waiting` event.")
    output: str | None = Field(default=None, description="Completes the step with this "
                                                         "output (one of its `choices`).")
    error: str | None = Field(default=None, description="Fails the step with this message.")

    @model_validator(mode="after")
    def _one_answer(self) -> "Resume":
        _exactly_one("output", self.output, "error", self.error,
                     "completes the step, or fails it")
        return self


class Rerun(_Request):
    """Run `from_step` and everything downstream again, reusing every other step's output.

    Answer: `InvocationRef` of the new invocation."""

    op: Literal["rerun"] = "rerun"
    invocation_id: Id = Field(description="The invocation whose outputs are reused.")
    from_step: Id = Field(description="Handle of the first step to run again.")
    chain: ChainSpec | None = Field(
        default=None, description="An edited chain; only `from_step` and steps downstream of "
                                  "it may differ.")


_MODELS: tuple[type[_Request], ...] = (
    CreateChain, GetChain, ListChains, DeleteChain, RunChain, RunStatus, Cancel,
    ListInvocations, Events, Redeliver, Resume, Rerun)
OPERATIONS: tuple[str, ...] = tuple(str(m.model_fields["op"].default) for m in _MODELS)

Operation = Annotated[
    CreateChain | GetChain | ListChains | DeleteChain | RunChain | RunStatus | Cancel
    | ListInvocations | Events | Redeliver | Resume | Rerun,
    Field(discriminator="op")]
_OPERATION: pydantic.TypeAdapter[Operation] = pydantic.TypeAdapter(Operation)
_BY_OP = dict(zip(OPERATIONS, _MODELS, strict=True))


def parse_operation(body: Mapping[str, Any], limits: ServiceLimits | None) -> Operation | None:
    """The operation `body` names, or None when it has no `op` (a synchronous run).

    A null value counts as absent (an entrypoint passes every argument it declares). `limits`
    None skips the configurable limits (a client does not know the server's). Raises
    RequestError listing every problem, each naming its field.
    """
    op = body.get("op")
    if op is None:
        return None
    if not isinstance(op, str) or op not in _BY_OP:
        close = difflib.get_close_matches(str(op), OPERATIONS, n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        raise RequestError(f"op: unknown operation {_show(op)}{hint}; expected one of "
                           f"{', '.join(OPERATIONS)}")
    data = {key: value for key, value in body.items() if value is not None}
    try:
        return _OPERATION.validate_python(data, context={"limits": limits})
    except pydantic.ValidationError as exc:
        fields = [name for name in _BY_OP[op].model_fields if name != "op"]
        problems = [_problem(op, fields, data, err) for err in exc.errors()]
        raise RequestError.from_problems(f"`{op}` request is invalid", problems) from exc


def _problem(op: str, fields: list[str], data: Any,
             err: ErrorDetails) -> str:
    loc = tuple(err["loc"][1:])  # the first element is the `op` tag
    where = _where(data, loc)
    if err["type"] == "extra_forbidden" and len(loc) == 1:
        return (f"`{loc[0]}` is not an argument of `{op}`; it takes "
                f"{', '.join(f'`{f}`' for f in fields)}")
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown field (remove it, or check its spelling)"
    if err["type"] == "missing":
        return f"{where}: required (add it)"
    if err["type"] == "timezone_aware":
        return f"{where}: {err['msg']} (add a UTC offset, e.g. 2026-12-01T09:00:00Z)"
    return f"{where}: {err['msg']}" if where else err["msg"]


def _where(data: Any, loc: tuple[int | str, ...]) -> str:
    """Render an error location, naming list items by their `handle` where they have one."""
    text = ""
    node = data
    for key in loc:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
        if isinstance(key, int):
            handle = node.get("handle") if isinstance(node, dict) else None
            text += f"[`{handle}`]" if isinstance(handle, str) else f"[{key}]"
        else:
            text += f".{key}" if text else str(key)
    return text


def _show(value: object, width: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"
