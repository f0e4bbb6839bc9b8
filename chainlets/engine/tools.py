"""Function calling: the model → tools → model loop of a step with `tools`, bounded by its
`max_tool_rounds`, each round recorded on the attempt that asked for the calls.

Round n is one model call (with its retries, each an attempt with `round` n). A reply with
tool calls has them run through the code runner, one after another, each under
`step_timeout_s`; what each answered (its JSON output, or why it failed: the model is told and
may try again) is recorded on that attempt's `tool_calls` and sent back with the next call.
A reply that still asks for tools after `max_tool_rounds` rounds fails the step.
"""

import json
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

from chainlets.engine.backends import BackendGate
from chainlets.engine.code import CallHost
from chainlets.engine.code_models import CodeCall, ToolCall, ToolCallRecord, ToolRound, ToolSpec
from chainlets.engine.failures import describe_failure
from chainlets.engine.models import AttemptRecord, Generation, GenerationRequest, Usage
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.engine.retry import RetryPolicy
from chainlets.errors import GenerationError
from chainlets.language.compiler import CompiledStep
from chainlets.language.functions import Function
from chainlets.language.limits import MAX_TOOL_ROUNDS
from chainlets.language.messages import listing
from chainlets.language.plugins import CODE

__all__ = ["ToolLoopHost", "ToolRoundsError", "run_tools", "tool_specs"]

_ONCE = RetryPolicy(max_attempts=1)


class ToolRoundsError(GenerationError):
    """Raised when the model still asks for tools after the step's `max_tool_rounds` rounds."""


class ToolLoopHost(CallHost, Protocol):
    """What the loop needs of the run: the code runner and policies, and the backend's gate."""

    def gate(self, backend: str) -> BackendGate: ...


def tool_specs(step: CompiledStep) -> list[ToolSpec]:
    """The step's functions as the model is offered them."""
    return [ToolSpec(name=f.name, description=f.description, parameters=f.json_schema())
            for f in step.tools]


def _add(total: Usage | None, usage: Usage | None) -> Usage | None:
    if usage is None:
        return total
    if total is None:
        return usage
    return Usage(prompt_tokens=total.prompt_tokens + usage.prompt_tokens,
                 completion_tokens=total.completion_tokens + usage.completion_tokens,
                 total_tokens=total.total_tokens + usage.total_tokens)


async def _call_tool(host: CallHost, step: CompiledStep, call: ToolCall,
                     functions: Mapping[str, Function]) -> ToolCallRecord:
    """One tool call, run once under the step's time limit; its failure is the model's to
    read, not the step's."""
    record = ToolCallRecord(id=call.id, name=call.name, arguments=call.arguments)
    if call.name not in functions:
        return record.model_copy(update={"error": f"no tool is named `{call.name}`; the tools "
                                                  f"are {listing(list(functions))}"})
    try:
        args = json.loads(call.arguments or "{}")
    except ValueError as exc:
        return record.model_copy(update={"error": f"the arguments are not JSON ({exc})"})
    if not isinstance(args, dict):
        return record.model_copy(update={"error": "the arguments must be a JSON object of the "
                                                  "parameters by name"})
    request = CodeCall(step=step.handle, function=call.name, args=args,
                       timeout_s=host.options.step_timeout_s)
    try:
        result = await _ONCE.call(host.code.run_remote, request, [], CODE, timer=host.timer)
    except Exception as exc:  # told to the model, which may call it again differently
        return record.model_copy(update={
            "error": describe_failure(exc, f"function `{call.name}`").message})
    return record.model_copy(update={"output": result.output})


async def run_tools(host: ToolLoopHost, step: CompiledStep, request: GenerationRequest,
                    attempts: list[AttemptRecord], key: str,
                    generator: GeneratorProtocol) -> Generation:
    """The step's answer after at most `max_tool_rounds` rounds of tool calls; its usage is
    every round's together."""
    functions = {f.name: f for f in step.tools}
    request = request.model_copy(update={"tools": tuple(tool_specs(step))})
    rounds: list[ToolRound] = []
    usage: Usage | None = None
    number = 0
    policy, timer = host.policies.of(step.spec)  # the step's `retry` and `timeout_s`, if any
    while True:
        number += 1
        first = len(attempts)
        generation = await policy.call(generator.run_remote, request, attempts, key,
                                       gate=host.gate(key), timer=timer)
        for i in range(first, len(attempts)):
            attempts[i] = replace(attempts[i], round=number)
        usage = _add(usage, generation.usage)
        if not generation.tool_calls:
            return generation.model_copy(update={"usage": usage})
        if number > step.max_tool_rounds:
            asked = listing([call.name for call in generation.tool_calls])
            attempts[-1] = replace(attempts[-1], tool_calls=[
                ToolCallRecord(id=c.id, name=c.name, arguments=c.arguments,
                               error="not run: max_tool_rounds reached")
                for c in generation.tool_calls])
            raise ToolRoundsError(
                f"step `{step.handle}`: the model still asked for tools ({asked}) after "
                f"max_tool_rounds = {step.max_tool_rounds} round(s); raise the step's "
                f"max_tool_rounds (at most {MAX_TOOL_ROUNDS.value()}, set by "
                f"{MAX_TOOL_ROUNDS.env}) or ask the model to answer sooner")
        records = [await _call_tool(host, step, call, functions)
                   for call in generation.tool_calls]
        attempts[-1] = replace(attempts[-1], tool_calls=records)
        rounds.append(ToolRound(text=generation.text, calls=records))
        request = request.model_copy(update={"tool_rounds": tuple(rounds)})
