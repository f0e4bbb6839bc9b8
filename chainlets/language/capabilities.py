"""Capabilities (Steamship's plugin capabilities): what a step requests, what a plugin supports,
and the level each request is served at, decided statically — routing included.

A step requests a capability at a level (`native`, `best-effort`, `optional`, `disable`); a
plugin declares, per capability, flags of how it supports it (`NATIVE`, `BEST_EFFORT`,
`CAN_DISABLE`). The validation pass `check_capabilities` picks, among the step's acceptable
plugins, the first that meets every request, and records at which level each is served; a
request no candidate meets is a problem of the one validation round, before any model call.
"""

import enum
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CHAT_SUPPORT", "Capability", "CapabilityRequests", "RequestLevel", "Served",
           "SupportLevel", "requested", "serve", "unmet", "with_schema"]


class Capability(enum.StrEnum):
    """A feature a step may request of the plugin that serves it."""

    SYSTEM_PROMPT = "system_prompt"  # the step's `system_prompt`, apart from the prompt
    CONVERSATION = "conversation"  # the step's `messages`, earlier chat turns
    JSON_MODE = "json_mode"  # the reply is one JSON document (OpenAI's JSON mode)
    STREAMING = "streaming"  # the backend streams the reply as it is generated
    FUNCTION_CALLING = "function_calling"  # the model may call the step's `tools`


class RequestLevel(enum.StrEnum):
    """How firmly a step asks for a capability (Steamship's RequestLevel, same spellings)."""

    NATIVE = "native"  # a first-class feature of the plugin, or the step is invalid
    BEST_EFFORT = "best-effort"  # native, or emulated (e.g. a system prompt concatenated)
    OPTIONAL = "optional"  # served if the plugin can, else ignored
    DISABLE = "disable"  # not used; invalid only with a plugin that cannot turn it off


class SupportLevel(enum.Flag):
    """How a plugin supports a capability (Steamship's SupportLevel). NATIVE implies
    BEST_EFFORT; no flag at all means unsupported."""

    NONE = 0
    NATIVE = 1
    BEST_EFFORT = 2
    CAN_DISABLE = 4


class Served(enum.StrEnum):
    """At which level a requested capability was served: on the compiled step and on the
    step's record."""

    NATIVE = "native"
    BEST_EFFORT = "best-effort"
    IGNORED = "ignored"  # requested `optional` of a plugin without it
    DISABLED = "disabled"
    UNSERVED = "unserved"  # the backend reported it did not serve it (the mock cannot stream)


# What a chat generator gets through the GenerationRequest protocol: the system prompt and the
# earlier messages as chat messages, each left out when the step gives none. The default of a
# registered plugin.
CHAT_SUPPORT: Mapping[Capability, SupportLevel] = {
    Capability.SYSTEM_PROMPT: SupportLevel.NATIVE | SupportLevel.CAN_DISABLE,
    Capability.CONVERSATION: SupportLevel.NATIVE | SupportLevel.CAN_DISABLE,
}


class CapabilityRequests(BaseModel):
    """`capabilities` of a step: the level each capability is requested at."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    system_prompt: RequestLevel | None = Field(
        default=None, description="System prompt support. Default `best-effort` when the step "
        "sets `system_prompt`: a plugin without native support gets it concatenated before "
        "the prompt.")
    conversation: RequestLevel | None = Field(
        default=None, description="Conversation history (`messages`). Default `native` when "
        "the step sets `messages`.")
    json_mode: RequestLevel | None = Field(
        default=None, description="The reply is one JSON document (structured output).")
    streaming: RequestLevel | None = Field(
        default=None, description="The backend streams the reply as it is generated.")
    function_calling: RequestLevel | None = Field(
        default=None, description="The model may call the step's `tools` (registered "
        "functions). Default `native` when the step lists `tools`; no plugin emulates it.")


def requested(capabilities: CapabilityRequests, system_prompt: str | None,
              messages: Sequence[object], output_schema: bool = False,
              tools: Sequence[str] = ()) -> dict[Capability, RequestLevel]:
    """A step's requests: the explicit ones, plus the features it uses (a system prompt, chat
    messages, an output schema, tools) at their default levels."""
    levels = {Capability(name): level for name, level in capabilities if level is not None}
    if system_prompt is not None:
        levels.setdefault(Capability.SYSTEM_PROMPT, RequestLevel.BEST_EFFORT)
    if messages:
        levels.setdefault(Capability.CONVERSATION, RequestLevel.NATIVE)
    if output_schema:
        levels.setdefault(Capability.JSON_MODE, RequestLevel.BEST_EFFORT)
    if tools:
        levels.setdefault(Capability.FUNCTION_CALLING, RequestLevel.NATIVE)
    return levels


def with_schema(support: Mapping[Capability, SupportLevel]) -> dict[Capability, SupportLevel]:
    """What a plugin supports for a step with an `output_schema`: JSON mode at least
    best-effort, emulated by validating each reply and re-prompting (engine/repair.py)."""
    if support.get(Capability.JSON_MODE, SupportLevel.NONE) \
            & (SupportLevel.NATIVE | SupportLevel.BEST_EFFORT):
        return dict(support)
    return {**support, Capability.JSON_MODE: SupportLevel.BEST_EFFORT | SupportLevel.CAN_DISABLE}


def serve(level: RequestLevel, support: SupportLevel) -> Served | None:
    """The level a request is served at by a plugin with `support`, or None: it cannot be."""
    if level is RequestLevel.DISABLE:
        supported = bool(support & (SupportLevel.NATIVE | SupportLevel.BEST_EFFORT))
        return None if supported and not support & SupportLevel.CAN_DISABLE else Served.DISABLED
    if support & SupportLevel.NATIVE:
        return Served.NATIVE
    if support & SupportLevel.BEST_EFFORT and level is not RequestLevel.NATIVE:
        return Served.BEST_EFFORT
    return Served.IGNORED if level is RequestLevel.OPTIONAL else None


def describe(support: SupportLevel) -> str:
    """How a plugin supports a capability, in words for a message."""
    if support & SupportLevel.NATIVE:
        return "supports it natively but cannot turn it off"
    if support & SupportLevel.BEST_EFFORT:
        return "supports it only best-effort" if support & SupportLevel.CAN_DISABLE \
            else "supports it only best-effort and cannot turn it off"
    return "does not support it"


def unmet(requests: Mapping[Capability, RequestLevel],
          support: Mapping[Capability, SupportLevel]) -> dict[Capability, str] | None:
    """For each request a plugin with `support` cannot serve, why; None when it serves all."""
    missing = {cap: describe(support.get(cap, SupportLevel.NONE))
               for cap, level in requests.items()
               if serve(level, support.get(cap, SupportLevel.NONE)) is None}
    return missing or None
