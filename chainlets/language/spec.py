"""The chain definition language: a superset of Steamship's JSON chain format."""

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import pydantic
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WrapValidator,
)
from pydantic.json_schema import WithJsonSchema, models_json_schema
from pydantic_core import ErrorDetails, PydanticCustomError

from chainlets.errors import ChainDefinitionError
from chainlets.language.capabilities import CapabilityRequests
from chainlets.language.code import CodeSpec
from chainlets.language.conditions import Condition
from chainlets.language.flow import ChoiceSpec, MapSpec
from chainlets.language.jsontext import decode_json
from chainlets.language.limits import MAX_TOOL_ROUNDS, MaxRepairs, MaxToolRounds
from chainlets.language.messages import invalid, schema_problem, show
from chainlets.language.plugins import DEFAULT_PLUGINS, PluginRegistry
from chainlets.language.policies import CatchSpec, ChainSeconds, RetrySpec, StepSeconds
from chainlets.language.templating import NAME_PATTERN

__all__ = ["SCHEMA_DRAFT", "ChainSpec", "ChatMessage", "InputDecl", "JsonValue", "LoopSpec",
           "StepSpec",
           "chain_json_schema", "load_chain", "locate", "parse_chain", "read_chain_json"]

SCHEMA_DRAFT = "https://json-schema.org/draft/2020-12/schema"
# Re-prompts of a step with an `output_schema` that does not say `max_repairs`.
DEFAULT_REPAIRS = 2

Scalar = str | int | float | bool
# An input's value: text, or any JSON (a list to map over, an object to read a field of).
JsonValue = pydantic.JsonValue
# A handle or input name. The pattern is for editors only: the compiler checks it, with a
# message that says how prompts reference the name, rather than pydantic's bare regex error.
Name = Annotated[str, WithJsonSchema({"type": "string", "pattern": NAME_PATTERN.pattern})]


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        # No `{` in the message: pydantic would read it as a placeholder.
        raise PydanticCustomError("url_scheme", "not an http(s) URL; write it as "
                                  "https://host/path (or http://)")
    return value


# Kept as the text written (pydantic's URL types rewrite it: a `/` added, case changed).
HttpUrlText = Annotated[str, AfterValidator(_http_url),
                        WithJsonSchema({"type": "string", "format": "uri",
                                        "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"})]


def _plugin_choice(value: Any, handler: Any, info: ValidationInfo) -> Any:
    """One message for a bad `plugin`, not one per member of the union."""
    try:
        return handler(value)
    except pydantic.ValidationError as exc:
        raise PydanticCustomError(
            "plugin_type", "Input should be a plugin name or a non-empty list of plugin names"
        ) from exc


# A plugin's name, or the acceptable plugins in preference order (routing picks one).
PluginChoice = Annotated[str | Annotated[list[str], Field(min_length=1)],
                         WrapValidator(_plugin_choice)]


class ChatMessage(BaseModel):
    """One earlier chat message sent before the step's prompt; its content is a template."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"] = Field(description="Who said it.")
    content: str = Field(description="Message text; `{name}` placeholders are interpolated.")


class InputDecl(BaseModel):
    """A declared chain input: once any are declared, every placeholder must resolve."""

    model_config = ConfigDict(extra="forbid")

    name: Name = Field(description="Input name, referenced in prompts as `{name}`.")
    description: str = Field(default="", description="What the caller should pass.")
    default: JsonValue = Field(default=None, description="Used when the caller omits it: text, "
                               "or any JSON value (a list to map over).")


class StepSpec(BaseModel):
    """One model call. Steamship's fields plus chat messages and explicit dependencies."""

    model_config = ConfigDict(extra="forbid")

    handle: Name = Field(description="Unique step name; other steps reference its output as "
                                    "`{handle}`. Letters, digits, `_` and `-`.")
    prompt: str | None = Field(
        default=None, description="Prompt template: `{name}` placeholders, `{name.key}` / "
        "`{name[0]}` to read a JSON field; `{{`/`}}` are literal braces. Required, with "
        "`plugin`, unless the step is a `choice`, a `loop` or a `map` with `steps`.")
    plugin: PluginChoice | None = Field(
        default=None,
        description="Generator to call: `gpt-3`, `openai`, `mock` or a registered one; or a "
                    "list of acceptable ones, in preference order: the first whose "
                    "capabilities meet the step's `capabilities` serves it.")
    plugin_config: dict[str, Any] = Field(
        default_factory=dict,
        description="Configuration for the plugin; with a list of plugins, each plugin's name "
                    "mapped to its configuration.")
    capabilities: CapabilityRequests = Field(
        default_factory=CapabilityRequests,
        description="Capabilities requested of the plugin, each at `native`, `best-effort`, "
                    "`optional` or `disable`; a plugin that cannot meet them is refused at "
                    "validation.")
    output_schema: dict[str, Any] | None = Field(
        default=None, description="A JSON Schema (draft 2020-12 unless its `$schema` names "
        "another) the reply must meet: parsed as JSON, re-prompted with the validation errors "
        "up to `max_repairs` times, stored as JSON text. Implies `json_mode` (`best-effort`). "
        "Later steps read its fields: `{handle.key}`, `{handle.items[0]}`.")
    max_repairs: MaxRepairs | None = Field(
        default=None, description="Re-prompts after a reply that does not meet `output_schema` "
        f"(default {DEFAULT_REPAIRS}, at most $CHAINRUNNER_MAX_REPAIRS); then the step fails "
        "with error kind `schema`.")
    input: dict[str, Scalar] = Field(
        default_factory=dict,
        description="Hard-coded values for this step's placeholders; they override the user's "
                    "inputs and other steps' outputs.")
    system_prompt: str | None = Field(default=None,
                                      description="Chat system prompt (a template).")
    messages: list[ChatMessage] = Field(
        default_factory=list,
        description="Earlier chat messages sent before the prompt (templates).")
    depends_on: list[Name] = Field(
        default_factory=list,
        description="Handles that must finish before this step, without interpolating them.")
    description: str | None = Field(default=None, description="Free text for humans.")
    map: MapSpec | None = Field(default=None, description="Run this step once per item of a "
                                "list; items are steps of their own, `handle[i]`. With "
                                "`map.steps`, each item runs that sub-chain.")
    choice: ChoiceSpec | None = Field(default=None, description="Make this a choice step "
                                      "(no prompt): route to the first branch whose condition "
                                      "holds.")
    loop: "LoopSpec | None" = Field(default=None, description="Make this a loop step (no "
                                    "prompt): repeat its steps until a condition holds, at "
                                    "most `max_iterations` times.")
    code: CodeSpec | None = Field(default=None, description="Make this a code step (no "
                                  "prompt or plugin): call a registered function with JSON "
                                  "arguments; its output is the return value as JSON.")
    tools: tuple[Name, ...] = Field(default=(), description="Registered functions the model "
                                    "may call (function calling); the model → tools → model "
                                    "loop runs at most `max_tool_rounds` rounds.")
    max_tool_rounds: MaxToolRounds = Field(
        default=4, description=f"Most rounds of tool calls before the model must answer; at "
        f"most {MAX_TOOL_ROUNDS.default} unless {MAX_TOOL_ROUNDS.env} says otherwise.")
    retry: RetrySpec | None = Field(default=None, description="How failed calls are tried "
                                    "again (a map: each item's); overrides the run's options.")
    timeout_s: StepSeconds | None = Field(
        default=None, description="Most seconds one attempt may take (a map: each item's); "
        "the call is cancelled then. Overrides the run's `step_timeout_s`.")
    catch: CatchSpec | None = Field(default=None, description="On final failure, succeed "
                                    "with a fallback `output` or a catch `step`'s output.")

    @property
    def block(self) -> "list[StepSpec]":
        """The steps this step holds: a loop's body, or a map's item sub-chain."""
        if self.loop is not None:
            return self.loop.steps
        return self.map.steps or [] if self.map is not None else []

    @property
    def kind(self) -> str:
        """`prompt`, `map`, `choice`, `loop` or `code` (which may also map)."""
        return "loop" if self.loop is not None else "choice" if self.choice is not None \
            else "map" if self.map is not None else "code" if self.code is not None \
            else "prompt"


class LoopSpec(BaseModel):
    """Repeat a block of steps. Inside it, `{loop-handle}` is the JSON list of the earlier
    iterations' outputs (`[]` at first); outside, a body step's handle is its last output and
    `{loop-handle}` every iteration's, as a JSON list of objects by handle."""

    model_config = ConfigDict(extra="forbid")

    steps: list[StepSpec] = Field(min_length=1, description="The block: prompt steps, "
                                  "handles unique in the whole chain.")
    until: Condition | None = Field(default=None, description="Checked after each iteration, "
                                    "over inputs, outer steps and this iteration's outputs.")
    max_iterations: int | None = Field(default=None, ge=1, description="Required bound on "
                                       "iterations.")
    on_limit: Literal["stop", "fail"] = Field(
        default="stop", description="At `max_iterations` with `until` not holding: end with the "
        "last iteration (`stop`) or fail.")


MapSpec.model_rebuild(_types_namespace={"StepSpec": StepSpec})
StepSpec.model_rebuild()


class ChainSpec(BaseModel):
    """A whole chain. A Steamship chain file validates unchanged."""

    # `$schema` is not a Python name: the field is written under its alias.
    # Accepted by name too: a serializer that ignores aliases (truss's output wrapper) writes
    # `schema_uri`, and a stored chain read back must still validate.
    model_config = ConfigDict(extra="forbid", serialize_by_alias=True, validate_by_name=True,
                              validate_by_alias=True)

    schema_uri: str | None = Field(
        default=None, alias="$schema",
        description="The JSON Schema of this file, for editors (`chainrunner schema`); "
                    "ignored when running.")
    handle: str = Field(description="Chain name.")
    description: str | None = Field(default=None, description="Free text for humans.")
    inputs: list[InputDecl] | None = Field(
        default=None,
        description="Declared inputs. When present, every placeholder must be a declared input, "
                    "a step handle or a key of the step's `input`.")
    steps: list[StepSpec] = Field(min_length=1, description="The steps; order does not limit "
                                                             "parallelism.")
    output: Name | None = Field(default=None,
                               description="Handle whose output is the chain's output "
                                           "(default: the last step).")
    callback_url: HttpUrlText | None = Field(
        default=None, description="http(s) URL notified when steps and the chain finish.")
    deadline_s: ChainSeconds | None = Field(
        default=None, description="Most seconds a run of the chain may take; a run's own "
        "`deadline_s` option applies too, the smaller wins. At most "
        "CHAINRUNNER_MAX_DEADLINE_S (86400).")


def chain_json_schema(plugins: PluginRegistry = DEFAULT_PLUGINS) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of the chain language, for editors and validators.

    `plugin` is one of `plugins`, and each plugin's `plugin_config` is checked against its own
    config model (if/then on `plugin`), so a registered plugin appears too.
    """
    configs = list(dict.fromkeys(plugin.config_model for plugin in plugins))
    refs, top = models_json_schema(
        [(ChainSpec, "validation"), *((model, "validation") for model in configs)],
        ref_template="#/$defs/{model}")
    defs: dict[str, Any] = top["$defs"]
    chain = defs.pop(refs[(ChainSpec, "validation")]["$ref"].rsplit("/", 1)[-1])
    step = defs[chain["properties"]["steps"]["items"]["$ref"].rsplit("/", 1)[-1]]
    names = plugins.names()
    plugin_field = step["properties"]["plugin"]
    plugin_field.pop("default", None)
    plugin_field["anyOf"] = [{"type": "string", "enum": names},
                             {"type": "array", "minItems": 1,
                              "items": {"type": "string", "enum": names}}]
    step["anyOf"] = [{"required": ["prompt", "plugin"]}, {"required": ["choice"]},
                     {"required": ["loop"]}, {"required": ["code"]},
                     {"required": ["map"], "properties": {"map": {"required": ["steps"]}}}]
    functions = plugins.functions.names()
    code = defs[step["properties"]["code"]["anyOf"][0]["$ref"].rsplit("/", 1)[-1]]
    code["properties"]["function"]["enum"] = functions
    step["properties"]["tools"]["items"]["enum"] = functions
    # With a list of plugins, `plugin_config` maps each plugin's name to its own config.
    keyed = {"type": "object", "additionalProperties": False,
             "properties": {p.name: refs[(p.config_model, "validation")] for p in plugins}}
    step["allOf"] = []
    for plugin in plugins:
        config: dict[str, Any] = {**refs[(plugin.config_model, "validation")]}
        if plugin.description:
            config["description"] = plugin.description
        then: dict[str, Any] = {"properties": {"plugin_config": config}}
        if any(f.is_required() for f in plugin.config_model.model_fields.values()):
            then["required"] = ["plugin_config"]
        step["allOf"].append({
            "if": {"properties": {"plugin": {"const": plugin.name}}, "required": ["plugin"]},
            "then": then})
    step["allOf"].append({"if": {"properties": {"plugin": {"type": "array"}},
                                 "required": ["plugin"]},
                          "then": {"properties": {"plugin_config": keyed}}})
    return {"$schema": SCHEMA_DRAFT, **chain, "title": "chainrunner chain", "$defs": defs}


def locate(data: Any,
           loc: Sequence[int | str]) -> tuple[str, type[BaseModel], tuple[int | str, ...]]:
    """Where a pydantic error of ChainSpec lies, for a message: ("step `judge`", StepSpec,
    the location within the step). Steps and inputs are named by handle or name."""
    for key, model, noun, name in (("steps", StepSpec, "step", "handle"),
                                   ("inputs", InputDecl, "input", "name")):
        if len(loc) >= 2 and loc[0] == key and isinstance(loc[1], int):
            items = data.get(key) if isinstance(data, dict) else None
            item = items[loc[1]] if isinstance(items, list) and loc[1] < len(items) else None
            label = item.get(name) if isinstance(item, dict) else None
            where = f"{noun} `{label}`" if isinstance(label, str) and label \
                else f"{key}[{loc[1]}]"
            return where, model, tuple(loc[2:])
    return "chain", ChainSpec, tuple(loc)


def chain_problem(data: Any, err: ErrorDetails) -> str:
    """A message for one schema error of a whole chain."""
    if tuple(err["loc"]) == ("steps",) and err["type"] == "too_short":
        return "chain: `steps` is empty; add at least one step"
    if not err["loc"] and err["type"] == "model_type":
        return ("chain: must be a JSON object with `handle` and `steps`, not "
                f"{show(err['input'])}")
    where, model, loc = locate(data, tuple(err["loc"]))
    return schema_problem(where, {**err, "loc": loc}, model)


def parse_chain(data: Any, source: str | None = None) -> ChainSpec:
    """Validate raw JSON data as a chain, reporting every schema problem at once.

    Only the schema: `compile_chain` on the same data also reports what it finds in the parts
    that did parse (references, cycles, plugin configs, templates), in the same round.
    """
    # Imported here: the draft and the kind check build on this module's models.
    from chainlets.language.draft import read_draft
    from chainlets.language.flow_passes import check_kinds
    from chainlets.language.messages import Problems

    problems = Problems()
    draft = read_draft(data, problems)
    check_kinds(draft, None, problems)
    if problems or draft.spec is None:
        raise ChainDefinitionError.from_problems(
            invalid(source, draft.handle), problems.messages())
    return draft.spec


def _stdin() -> bytes | str:
    """Standard input's bytes, decoded by us (a text stream without bytes: its text)."""
    stream = getattr(sys.stdin, "buffer", None)
    return stream.read() if stream is not None else sys.stdin.read()


def read_chain_json(path: str | Path) -> Any:
    """The JSON data of a chain file (`-`: standard input), not yet validated.

    Strict (jsontext.py): a file that is not UTF-8, repeats a key in an object or nests
    deeper than the parser goes raises ChainDefinitionError saying so.
    """
    name = "<stdin>" if str(path) == "-" else str(path)
    try:
        data = _stdin() if str(path) == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise ChainDefinitionError(f"cannot read chain file {name}: {exc.strerror}") from exc
    return decode_json(data, name, ChainDefinitionError)


def load_chain(path: str | Path) -> ChainSpec:
    """Read and validate a chain JSON file (schema only; see `parse_chain`)."""
    return parse_chain(read_chain_json(path), source=str(path))
