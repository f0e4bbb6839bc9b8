"""The repair loop of a step with an `output_schema`: each reply parsed and validated, and one
that fails re-prompted with its errors, at most `max_repairs` times.

A repair sends the step's messages, then the reply as the assistant's message, then a user
message listing the validation errors (path and message, at most MAX_ERRORS_SHOWN, each cut
short) with the schema. The attempt whose reply failed is recorded with error kind `schema`;
each repair's call is a further attempt (its transient failures retried as any call's). Once
the bound is reached the step fails with OutputSchemaError (error kind `schema`), naming the
step, the last validation error and the bound. A valid reply is stored as canonical JSON text
(`json.dumps`), its usage the sum of every call the step made.

With `schema` in the step's `retry.on`, a step whose repairs are spent starts over: its first
request again (a fresh conversation, with `max_repairs` repairs of its own), after the retry
policy's backoff, up to `retry.max_attempts` starts in all (`structured_reply`).
"""

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable

from chainlets.engine.models import (
    AttemptRecord,
    ErrorKind,
    Generation,
    GenerationRequest,
    Usage,
)
from chainlets.engine.retry import RetryPolicy
from chainlets.errors import OutputSchemaError, PayloadTooLargeError
from chainlets.language.compiler import CompiledStep
from chainlets.language.limits import prompt_problem
from chainlets.language.spec import ChatMessage
from chainlets.language.structured import SchemaUnusable

__all__ = ["repair_prompt", "repaired", "structured_reply"]

# A call of the step's generator under the run's retry policy, its attempts recorded.
Call = Callable[[GenerationRequest], Awaitable[Generation]]
_SCHEMA_CHARS = 4000  # the schema is shown in a repair prompt up to this length


def repair_prompt(errors: list[str], schema: object) -> str:
    """The user message of a repair: what was wrong, and what to send instead."""
    shown = json.dumps(schema, ensure_ascii=False)
    if len(shown) > _SCHEMA_CHARS:
        shown = shown[:_SCHEMA_CHARS - 1] + "…"
    listed = "\n".join(f"- {error}" for error in errors)
    return (f"Your reply does not meet the required JSON Schema:\n{listed}\n\nThe schema: "
            f"{shown}\n\nReply again with only the corrected JSON document.")


def _total(first: Usage | None, second: Usage | None) -> Usage | None:
    if first is None or second is None:
        return first or second
    return Usage(prompt_tokens=first.prompt_tokens + second.prompt_tokens,
                 completion_tokens=first.completion_tokens + second.completion_tokens,
                 total_tokens=first.total_tokens + second.total_tokens)


def _failed_attempt(attempts: list[AttemptRecord], errors: list[str]) -> None:
    """The last attempt's reply failed validation: recorded as a `schema` failure. Not yet
    shown to anyone (a step's attempts are recorded when it ends), so it is replaced."""
    attempts[-1] = dataclasses.replace(
        attempts[-1], error=f"OutputSchemaError: the reply does not meet output_schema: "
                            f"{'; '.join(errors)}", error_kind=ErrorKind.SCHEMA)


async def repaired(step: CompiledStep, request: GenerationRequest, generation: Generation,
                   attempts: list[AttemptRecord], call: Call) -> Generation:
    """`generation` (the reply to `request`), or a repaired reply, that meets the step's
    output schema, as canonical JSON text; OutputSchemaError once `max_repairs` are used."""
    structured = step.structured
    assert structured is not None
    usage = generation.usage
    for repair in range(structured.max_repairs + 1):
        try:
            text, errors = structured.apply(generation.text)
        except SchemaUnusable as exc:  # nothing a model can repair
            raise _Unusable(f"step `{step.handle}`: output_schema cannot be applied: "
                                    f"{exc}") from None
        if text is not None:
            return generation.model_copy(update={"text": text, "usage": usage})
        if attempts:
            _failed_attempt(attempts, errors)
        if repair == structured.max_repairs:
            raise OutputSchemaError(
                f"step `{step.handle}`: the reply does not meet output_schema after "
                f"{repair} repair(s) (max_repairs={structured.max_repairs}): {errors[0]}"
                + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
        again = [*request.messages, ChatMessage(role="assistant", content=generation.text),
                 ChatMessage(role="user", content=repair_prompt(errors, structured.schema))]
        too_long = prompt_problem(f"step `{step.handle}`", sum(len(m.content) for m in again),
                                  "the repair prompt (the reply and its errors included)")
        if too_long is not None:
            raise PayloadTooLargeError(too_long)
        generation = await call(request.model_copy(update={"messages": again}))
        usage = _total(usage, generation.usage)
    raise AssertionError("unreachable: the last pass returns or raises")


class _Unusable(OutputSchemaError):
    """The schema cannot be applied at all (e.g. a `$ref` that does not resolve): no new
    start would help."""


async def structured_reply(step: CompiledStep, request: GenerationRequest,
                           attempts: list[AttemptRecord], policy: RetryPolicy,
                           call: Call) -> Generation:
    """The step's reply to `request` that meets its output schema (`repaired`). A step whose
    `retry.on` names `schema` starts over once its repairs are spent, after `policy`'s
    backoff, until it has started `policy.max_attempts` times; then the last
    OutputSchemaError is raised."""
    starts = 0
    while True:
        starts += 1
        try:
            return await repaired(step, request, await call(request), attempts, call)
        except _Unusable:
            raise
        except OutputSchemaError as exc:
            if starts >= policy.max_attempts or not policy.retries(exc, ErrorKind.SCHEMA):
                raise
        await asyncio.sleep(policy.backoff_s(starts))
