"""The offline mock model: deterministic replies, optionally scripted by pattern → reply rules.

A script is a JSON file (path in $CHAINRUNNER_MOCK_SCRIPT)::

    {"latency_ms": 50,
     "rules": [{"match": "Is it funny", "reply": "YES"},
               {"match": "flaky", "error": "transient", "times": 2},
               {"step": "judge-joke", "error": "fatal"}]}

The first rule whose `step` (exact handle) and `match` (regex searched in the last message)
both apply decides; a rule with `times` applies that many times, then is passed over. In JSON
mode its own replies are JSON documents: one meeting the step's output schema where it has one
(mock_json.py), else `{"mock": step, "re": ...}`; scripted ones verbatim.

A rule with `tool_calls` (`[{"name": "pick_winner", "arguments": {...}}]`) answers a step
that offers tools by calling them (give it `times`, or it calls them every round); after a
round of tool calls the mock's own reply is about their results (`re: <outputs>`).
"""

import asyncio
import json
import os
import re
from pathlib import Path
from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from chainlets.engine.code_models import ToolCall
from chainlets.engine.models import Generation, GenerationRequest, Usage
from chainlets.errors import ChainDefinitionError, GenerationError, TransientGenerationError
from chainlets.generators import truncate_words
from chainlets.generators.mock_json import mock_json
from chainlets.language.capabilities import Capability, Served

__all__ = ["DEFAULT_MAX_WORDS", "LATENCY_ENV", "SCRIPT_ENV", "MockModel", "MockRule", "MockScript",
           "MockToolCall"]

SCRIPT_ENV = "CHAINRUNNER_MOCK_SCRIPT"
LATENCY_ENV = "CHAINRUNNER_MOCK_LATENCY_MS"
DEFAULT_MAX_WORDS = 40
_MARK = "[mock]"
_SERVED = (Served.NATIVE, Served.BEST_EFFORT)


class MockToolCall(BaseModel):
    """A tool call a scripted reply makes."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The tool (registered function) to call.")
    arguments: dict[str, pydantic.JsonValue] | str = Field(
        default_factory=dict, description="Its arguments: a JSON object, or the raw text a "
        "model might send (to play one that sends broken JSON).")


class MockRule(BaseModel):
    """One scripted behaviour."""

    model_config = ConfigDict(extra="forbid")

    match: str | None = Field(default=None, description="Regex searched in the last message.")
    step: str | None = Field(default=None, description="Only for this step handle.")
    reply: str | None = Field(default=None, description="Text to answer (not marked as mock).")
    error: Literal["transient", "fatal"] | None = Field(
        default=None, description="Fail instead: `transient` is retried, `fatal` is not.")
    times: int | None = Field(default=None, ge=1,
                              description="Apply this many times, then pass over it.")
    tool_calls: list[MockToolCall] | None = Field(
        default=None, min_length=1, description="Call these tools (when the step offers "
        "tools; `reply`, if any, is said with them).")

    @pydantic.field_validator("match")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"`{value}` is not a valid regex: {exc}") from exc
        return value


class MockScript(BaseModel):
    """A mock model's script."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(default=0, ge=0, description="Delay before every reply.")
    rules: list[MockRule] = Field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> "MockScript":
        try:
            return cls.model_validate_json(Path(path).read_bytes())
        except OSError as exc:
            raise ChainDefinitionError(f"mock script {path}: cannot read it: {exc.strerror}; "
                                       f"fix or unset ${SCRIPT_ENV}") from exc
        except pydantic.ValidationError as exc:
            raise ChainDefinitionError(f"mock script {path} is invalid: {exc}") from exc

    @classmethod
    def from_env(cls) -> "MockScript":
        path = os.environ.get(SCRIPT_ENV)
        script = cls.load(path) if path else cls()
        latency = os.environ.get(LATENCY_ENV)
        if latency:
            try:
                script = script.model_copy(update={"latency_ms": float(latency)})
            except ValueError as exc:
                raise ChainDefinitionError(f"${LATENCY_ENV}={latency!r} is not a number of "
                                           "milliseconds") from exc
        return script


def _words(text: str) -> int:
    return len(text.split())


class MockModel:
    """Deterministic replies from the request alone (plus the script's rule counters)."""

    def __init__(self, script: MockScript | None = None) -> None:
        self.script = script or MockScript()
        self._patterns = [re.compile(r.match) if r.match else None for r in self.script.rules]
        self._used = [0] * len(self.script.rules)
        self._call_ids = 0

    def _rule(self, request: GenerationRequest) -> MockRule | None:
        last = request.messages[-1].content
        for i, rule in enumerate(self.script.rules):
            pattern = self._patterns[i]
            if rule.step is not None and rule.step != request.step:
                continue
            if pattern is not None and not pattern.search(last):
                continue
            if rule.times is not None and self._used[i] >= rule.times:
                continue
            self._used[i] += 1
            return rule
        return None

    async def generate(self, request: GenerationRequest) -> Generation:
        if self.script.latency_ms:
            await asyncio.sleep(self.script.latency_ms / 1000)
        rule = self._rule(request)
        if rule is not None and rule.error == "transient":
            raise TransientGenerationError(f"mock: scripted transient failure for step "
                                           f"`{request.step}`")
        if rule is not None and rule.error == "fatal":
            raise GenerationError(f"mock: scripted failure for step `{request.step}`")
        max_words = request.params.max_words
        json_mode = request.capabilities.get(Capability.JSON_MODE) in _SERVED
        if rule is not None and rule.tool_calls and request.tools:
            return self._calls(request, rule)
        if rule is not None and rule.reply is not None:
            # Verbatim, even in JSON mode: a script may play a model that breaks its format.
            text = rule.reply if json_mode else truncate_words(rule.reply, max_words)
        else:
            # The prompt's tail, where interpolated values usually land, shows what was asked.
            head = f"{_MARK} {request.step} re:"
            room = max((max_words or DEFAULT_MAX_WORDS) - 3, 0)
            about = request.messages[-1].content if not request.tool_rounds else " ".join(
                call.output if call.output is not None else f"error: {call.error}"
                for call in request.tool_rounds[-1].calls)
            tail = about.split()[-room:] if room else []
            if json_mode and request.output_schema is not None:
                text = json.dumps(mock_json(request.output_schema, request.step))
            elif json_mode:
                text = json.dumps({"mock": request.step, "re": " ".join(tail)})
            else:
                text = truncate_words(" ".join([head, *tail]), max_words or DEFAULT_MAX_WORDS)
        prompt_tokens = sum(_words(m.content) for m in request.messages)
        completion = _words(text)
        return Generation(text=text, model="mock",
                          usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion,
                                      total_tokens=prompt_tokens + completion),
                          capabilities=_served(request))


    def _calls(self, request: GenerationRequest, rule: MockRule) -> Generation:
        assert rule.tool_calls is not None
        self._call_ids += len(rule.tool_calls)
        first = self._call_ids - len(rule.tool_calls)
        calls = [ToolCall(id=f"call_{first + i}", name=call.name,
                          arguments=call.arguments if isinstance(call.arguments, str)
                          else json.dumps(call.arguments))
                 for i, call in enumerate(rule.tool_calls)]
        prompt_tokens = sum(_words(m.content) for m in request.messages)
        return Generation(text=rule.reply or "", model="mock", tool_calls=calls,
                          usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=len(calls),
                                      total_tokens=prompt_tokens + len(calls)),
                          capabilities=_served(request))


def _served(request: GenerationRequest) -> dict[Capability, Served] | None:
    """What the mock served: all it was asked, but it never streams (standing in for the
    `openai` plugin, it is asked to)."""
    if not request.capabilities:
        return None
    return {cap: Served.UNSERVED if cap is Capability.STREAMING and level in _SERVED else level
            for cap, level in request.capabilities.items()}
