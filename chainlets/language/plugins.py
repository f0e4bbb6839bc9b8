"""Plugins: the names a step's `plugin` may take, their config, and which generator serves them."""

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from chainlets.language.builtin_functions import DEFAULT_FUNCTIONS
from chainlets.language.capabilities import CHAT_SUPPORT, Capability, SupportLevel
from chainlets.language.functions import Function, FunctionRegistry
from chainlets.language.limits import (
    MAX_APPROVAL_S,
    MAX_TOKENS,
    MAX_WORDS,
    ApprovalTimeout,
    MaxTokens,
    MaxWords,
)

__all__ = [
    "APPROVAL",
    "CODE",
    "DEFAULT_PLUGINS",
    "GPT3_SUPPORT",
    "LLM_BACKEND",
    "MOCK_SUPPORT",
    "OPENAI_SUPPORT",
    "ApprovalConfig",
    "Gpt3Config",
    "MockConfig",
    "ModelParams",
    "OpenAIConfig",
    "Plugin",
    "PluginRegistry",
]

# Generator key meaning "whichever LLM backend the run selected" (`--llm mock|openai`).
LLM_BACKEND = "llm"
# Generator key of human-approval steps: no model answers them, a person does (through the
# service's `resume`); the engine hands them to its approval gate.
APPROVAL = "human-approval"
# Generator key of code steps: no model answers them, a registered function does, in the code
# runner chainlet (or in process where a runner has none).
CODE = "code"


class ModelParams(BaseModel):
    """Backend-neutral generation parameters a plugin's config is translated into."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, description="Model name; backend default if unset.")
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    max_words: int | None = Field(default=None, ge=1,
                                  description="Hard cap on the output's word count.")


_MAX_WORDS_HELP = (f"The output never exceeds this many words; at most {MAX_WORDS.default:,} "
                   f"unless {MAX_WORDS.env} says otherwise.")


class OpenAIConfig(BaseModel):
    """`plugin_config` of the `openai` plugin: OpenAI chat-completions parameters."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None,
                              description="Model name (default: $CHAINRUNNER_OPENAI_MODEL "
                                          "or gpt-4o-mini).")
    temperature: float | None = Field(default=None, ge=0, le=2, examples=[0.7],
                                      description="Sampling temperature, 0 to 2.")
    max_tokens: MaxTokens | None = Field(
        default=None, examples=[256],
        description=f"Most tokens to generate; at most {MAX_TOKENS.default:,} unless "
                    f"{MAX_TOKENS.env} says otherwise.")
    top_p: float | None = Field(default=None, ge=0, le=1,
                                description="Nucleus sampling probability mass, 0 to 1.")
    stop: str | list[str] | None = Field(default=None,
                                         description="Text (or texts) that ends the output.")
    seed: int | None = Field(default=None, description="For repeatable sampling, where supported.")


class Gpt3Config(BaseModel):
    """`plugin_config` of Steamship's `gpt-3` plugin."""

    model_config = ConfigDict(extra="forbid")

    max_words: MaxWords = Field(description=_MAX_WORDS_HELP, examples=[50])


class MockConfig(BaseModel):
    """`plugin_config` of the offline `mock` plugin."""

    model_config = ConfigDict(extra="forbid")

    max_words: MaxWords | None = Field(default=None, examples=[50],
                                       description=_MAX_WORDS_HELP)


class ApprovalConfig(BaseModel):
    """`plugin_config` of the `human-approval` plugin: how long to wait, and what to accept."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: ApprovalTimeout = Field(
        examples=[86_400], description=f"Seconds to wait for the answer; then the step fails. "
        f"At most {MAX_APPROVAL_S.default:,} unless {MAX_APPROVAL_S.env} says otherwise.")
    choices: list[str] | None = Field(
        default=None, min_length=1, examples=[["greenlight", "pass"]],
        description="The outputs `resume` accepts; any text when unset.")

    @field_validator("choices")
    @classmethod
    def _distinct(cls, choices: list[str] | None) -> list[str] | None:
        if choices is not None:
            if any(not c.strip() for c in choices):
                raise ValueError("a choice is empty; give each a name")
            if len(set(choices)) != len(choices):
                raise ValueError("choices repeat; list each once")
        return choices


def _openai_params(config: BaseModel) -> ModelParams:
    assert isinstance(config, OpenAIConfig)
    stop = [config.stop] if isinstance(config.stop, str) else config.stop
    return ModelParams(model=config.model, temperature=config.temperature,
                       max_tokens=config.max_tokens, top_p=config.top_p, stop=stop,
                       seed=config.seed)


def _max_words_params(config: BaseModel) -> ModelParams:
    max_words: int | None = getattr(config, "max_words", None)
    # Words average ~1.3 tokens; leave headroom, the generator truncates to the exact count.
    max_tokens = None if max_words is None else max_words * 2 + 8
    return ModelParams(max_words=max_words, max_tokens=max_tokens)


@dataclass(frozen=True)
class Plugin:
    """A value a step's `plugin` field may take.

    `generator` names the generator that serves it: a key of the runner's generator mapping,
    or LLM_BACKEND for the backend selected per run. `capabilities` declares how it supports
    each capability (one missing: unsupported); by default, what every chat generator gets
    through the GenerationRequest protocol: a system prompt and earlier messages.
    """

    name: str
    config_model: type[BaseModel]
    to_params: Callable[[BaseModel], ModelParams]
    generator: str = LLM_BACKEND
    description: str = ""
    capabilities: Mapping[Capability, SupportLevel] = field(
        default_factory=lambda: CHAT_SUPPORT, hash=False)

    def validate_config(self, raw: dict[str, Any]) -> BaseModel:
        return self.config_model.model_validate(raw)


class PluginRegistry:
    """The plugins a runner accepts, and the functions its code steps and tools may call
    (`functions`). Add one to serve a new generator without engine edits."""

    def __init__(self, plugins: Iterable[Plugin] = (),
                 functions: FunctionRegistry | None = None) -> None:
        self._plugins: dict[str, Plugin] = {}
        self.functions = FunctionRegistry() if functions is None else functions
        for plugin in plugins:
            self.register(plugin)

    def register(self, plugin: Plugin) -> None:
        self._plugins[plugin.name] = plugin

    def get(self, name: str) -> Plugin | None:
        return self._plugins.get(name)

    def names(self) -> list[str]:
        return sorted(self._plugins)

    def __iter__(self) -> Iterator[Plugin]:
        return iter(self._plugins.values())

    def with_plugins(self, *plugins: Plugin) -> "PluginRegistry":
        """A copy of this registry with more plugins (and the same functions)."""
        return PluginRegistry([*self, *plugins], self.functions)

    def with_functions(self, *functions: Function | Callable[..., Any] | FunctionRegistry
                       ) -> "PluginRegistry":
        """A copy of this registry with more functions: Functions, plain functions (registered
        under their own name) or every function of a FunctionRegistry."""
        flat = [f for item in functions
                for f in (item if isinstance(item, FunctionRegistry) else [item])]
        return PluginRegistry(self, self.functions.with_functions(*flat))


_NATIVE = SupportLevel.NATIVE | SupportLevel.CAN_DISABLE
# The openai SDK's chat completions: system and earlier messages, `response_format`
# json_object, `stream=True`, `tools` answered with `tool_calls`.
OPENAI_SUPPORT: Mapping[Capability, SupportLevel] = {
    Capability.SYSTEM_PROMPT: _NATIVE, Capability.CONVERSATION: _NATIVE,
    Capability.JSON_MODE: _NATIVE, Capability.STREAMING: _NATIVE,
    Capability.FUNCTION_CALLING: _NATIVE}
# Steamship's gpt-3 was a completion model: one prompt, a system prompt concatenated before it.
GPT3_SUPPORT: Mapping[Capability, SupportLevel] = {
    Capability.SYSTEM_PROMPT: SupportLevel.BEST_EFFORT | SupportLevel.CAN_DISABLE}
# The mock reads chat messages, answers JSON mode with a JSON document and calls tools when its
# script says so (a rule's `tool_calls`); it never streams.
MOCK_SUPPORT: Mapping[Capability, SupportLevel] = {
    Capability.SYSTEM_PROMPT: _NATIVE, Capability.CONVERSATION: _NATIVE,
    Capability.JSON_MODE: _NATIVE, Capability.FUNCTION_CALLING: _NATIVE}

DEFAULT_PLUGINS = PluginRegistry([
    Plugin("openai", OpenAIConfig, _openai_params, capabilities=OPENAI_SUPPORT,
           description="OpenAI-compatible chat completions through the openai SDK."),
    Plugin("gpt-3", Gpt3Config, _max_words_params, capabilities=GPT3_SUPPORT,
           description="Steamship's name, kept for compatibility: a completion model on the "
                       "openai backend, output capped at `max_words` words; a system prompt "
                       "is concatenated before the prompt, earlier messages are refused."),
    Plugin("mock", MockConfig, _max_words_params, generator="mock", capabilities=MOCK_SUPPORT,
           description="Offline deterministic mock model, always the mock generator."),
    # A person reads only the rendered prompt: no system prompt, messages or model features.
    Plugin(APPROVAL, ApprovalConfig, lambda _config: ModelParams(), generator=APPROVAL,
           capabilities={},
           description="Pauses its branch until a person answers through the service's "
                       "`resume` (the prompt is what they see); needs the service."),
], DEFAULT_FUNCTIONS)
