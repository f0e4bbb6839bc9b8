"""The chain definition language: a superset of Steamship's JSON chain format."""

import json
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from chainlets.errors import ChainDefinitionError

__all__ = ["ChainSpec", "ChatMessage", "InputDecl", "StepSpec", "chain_json_schema", "load_chain",
           "parse_chain"]

Scalar = str | int | float | bool


class ChatMessage(BaseModel):
    """One earlier chat message sent before the step's prompt; its content is a template."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"] = Field(description="Who said it.")
    content: str = Field(description="Message text; `{name}` placeholders are interpolated.")


class InputDecl(BaseModel):
    """A declared chain input: once any are declared, every placeholder must resolve."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Input name, referenced in prompts as `{name}`.")
    description: str = Field(default="", description="What the caller should pass.")
    default: str | None = Field(default=None, description="Used when the caller omits it.")


class StepSpec(BaseModel):
    """One model call. Steamship's fields plus chat messages and explicit dependencies."""

    model_config = ConfigDict(extra="forbid")

    handle: str = Field(description="Unique step name; other steps reference its output as "
                                    "`{handle}`. Letters, digits, `_` and `-`.")
    prompt: str = Field(description="Prompt template, Python `str.format` syntax with plain "
                                    "names only; `{{`/`}}` are literal braces.")
    plugin: str = Field(description="Generator to call: `gpt-3`, `openai`, `mock` or a "
                                    "registered one.")
    plugin_config: dict[str, Any] = Field(default_factory=dict,
                                          description="Configuration for the plugin.")
    input: dict[str, Scalar] = Field(
        default_factory=dict,
        description="Hard-coded values for this step's placeholders; they override the user's "
                    "inputs and other steps' outputs.")
    system_prompt: str | None = Field(default=None,
                                      description="Chat system prompt (a template).")
    messages: list[ChatMessage] = Field(
        default_factory=list,
        description="Earlier chat messages sent before the prompt (templates).")
    depends_on: list[str] = Field(
        default_factory=list,
        description="Handles that must finish before this step, without interpolating them.")
    description: str | None = Field(default=None, description="Free text for humans.")


class ChainSpec(BaseModel):
    """A whole chain. A Steamship chain file validates unchanged."""

    model_config = ConfigDict(extra="forbid")

    handle: str = Field(description="Chain name.")
    description: str | None = Field(default=None, description="Free text for humans.")
    inputs: list[InputDecl] | None = Field(
        default=None,
        description="Declared inputs. When present, every placeholder must be a declared input, "
                    "a step handle or a key of the step's `input`.")
    steps: list[StepSpec] = Field(min_length=1, description="The steps; order does not limit "
                                                             "parallelism.")
    output: str | None = Field(default=None,
                               description="Handle whose output is the chain's output "
                                           "(default: the last step).")
    callback_url: str | None = Field(default=None,
                                     description="URL notified when steps and the chain finish.")


def chain_json_schema() -> dict[str, Any]:
    """The JSON Schema of the chain language, for editors and validators."""
    schema = ChainSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "chainrunner chain"
    return schema


def _location(data: Any, loc: tuple[int | str, ...]) -> str:
    """Render a pydantic error location, naming steps by handle instead of index."""
    parts: list[str] = []
    node = data
    for i, key in enumerate(loc):
        if i >= 1 and loc[i - 1] == "steps" and isinstance(key, int):
            handle = node[key].get("handle") if isinstance(node, list) and key < len(node) \
                and isinstance(node[key], dict) else None
            parts[-1] = f"step `{handle}`" if handle else f"steps[{key}]"
        else:
            parts.append(str(key))
        if isinstance(node, dict | list):
            try:
                node = node[key]  # type: ignore[index]  # walking untyped JSON
            except (KeyError, IndexError, TypeError):
                node = None
    return ".".join(parts) or "chain"


def parse_chain(data: Any, source: str = "chain") -> ChainSpec:
    """Validate raw JSON data as a chain, reporting every schema problem at once."""
    try:
        return ChainSpec.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = _location(data, tuple(err["loc"]))
            fix = ""
            if err["type"] == "extra_forbidden":
                fix = " (remove it, or check its spelling against `chainrunner schema`)"
            elif err["type"] == "missing":
                fix = " (add it)"
            problems.append(f"{where}: {err['msg']}{fix}")
        raise ChainDefinitionError.from_problems(f"{source} is not a valid chain",
                                                 problems) from exc


def load_chain(path: str | Path) -> ChainSpec:
    """Read and validate a chain JSON file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ChainDefinitionError(f"cannot read chain file {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ChainDefinitionError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from exc
    return parse_chain(data, source=str(path))
