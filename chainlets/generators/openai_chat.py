"""The openai generator chainlet: chat completions on any OpenAI-compatible endpoint."""

import json
import os
import re
from typing import TYPE_CHECKING, Any, cast

import truss_chains as chains

from chainlets import deploy
from chainlets.engine.code_models import ToolCall
from chainlets.engine.models import Generation, GenerationRequest, Usage
from chainlets.errors import (
    BackendOverloadedError,
    GenerationError,
    GenerationTimeoutError,
    TransientGenerationError,
)
from chainlets.generators import truncate_words
from chainlets.generators.calls import ABSENT, CANCEL_REPLY, CancellableGenerator, InFlightCalls
from chainlets.language.capabilities import Capability, Served

# The openai SDK is imported where it is used, not here: the runner chainlet depends on this
# class, so a module-level import would cost every `chainrunner run` on the mock backend ~0.25 s
# (its import, and truss's stack walks over its modules in run_local). It is loaded with the
# client, when a key is configured: deployed, at start rather than on the first request.
if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletionChunk
    from openai.types.chat.completion_create_params import ResponseFormat
    from openai.types.completion_usage import CompletionUsage

__all__ = ["BASE_URL_ENV", "DEFAULT_MODEL", "OPENAI_KEY_SECRET", "OpenAIGenerator",
           "translate_error"]

OPENAI_KEY_SECRET = "openai_api_key"
# The SDK's own setting; set when pushing, it is baked into the deployed chainlet.
BASE_URL_ENV = "OPENAI_BASE_URL"
MODEL_ENV = "CHAINRUNNER_OPENAI_MODEL"
DEFAULT_MODEL = "gpt-4o-mini"
# A call hung this long is a transient failure (retried), not a step stuck for the SDK's 10 min;
# a request's own `timeout_s` (the run's step_timeout_s) replaces it.
REQUEST_TIMEOUT_S = 120.0
# Served at either level, the openai backend uses its native feature.
_SERVED = (Served.NATIVE, Served.BEST_EFFORT)


def translate_error(exc: "openai.OpenAIError", step: str) -> GenerationError:
    """Map an SDK error to ours: 429, 5xx, timeouts and connection errors are transient."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return GenerationTimeoutError(f"step `{step}`: {type(exc).__name__}: {exc}")
    if isinstance(exc, openai.APIConnectionError):  # refused, reset: the server is not taking it
        return BackendOverloadedError(f"step `{step}`: {type(exc).__name__}: {exc}")
    if isinstance(exc, openai.APIStatusError):
        # The SDK's own message repeats the status ("Error code: 500 - …"); the server's words
        # alone read better after ours.
        detail = exc.body.get("message") if isinstance(exc.body, dict) else None
        message = (f"step `{step}`: OpenAI API returned HTTP {exc.status_code}: "
                   f"{detail or exc.message}")
        if exc.status_code == 429:
            return BackendOverloadedError(message)
        if exc.status_code >= 500:
            return TransientGenerationError(message)
        return GenerationError(message)
    return GenerationError(f"step `{step}`: {type(exc).__name__}: {exc}")


def _json_mode(request: GenerationRequest) -> bool:
    return request.capabilities.get(Capability.JSON_MODE) in _SERVED


def _response_format(request: GenerationRequest) -> "ResponseFormat":
    """OpenAI's structured outputs for a step with an output schema (not `strict`: that takes
    a subset of JSON Schema only; the engine validates every reply), else JSON mode."""
    if request.output_schema is None:
        return {"type": "json_object"}
    name = re.sub(r"[^A-Za-z0-9_-]", "_", request.step)[:64] or "output"
    return {"type": "json_schema",
            "json_schema": {"name": name, "schema": request.output_schema, "strict": False}}


def _cut(request: GenerationRequest, text: str) -> str:
    """The reply within the step's `max_words`; a JSON reply whole, since cutting it would
    break it (`max_tokens` bounds it)."""
    return text if _json_mode(request) else truncate_words(text, request.params.max_words)


def _client(key: str) -> "openai.AsyncOpenAI":
    import openai

    # The SDK retries on its own by default; the engine's retry policy owns retries.
    return openai.AsyncOpenAI(api_key=key, max_retries=0, timeout=REQUEST_TIMEOUT_S)


class OpenAIGenerator(chains.ChainletBase):
    """Calls chat completions through the openai SDK.

    The key comes from the truss secret `openai_api_key` (deployed) or $OPENAI_API_KEY; the
    endpoint from $OPENAI_BASE_URL (the SDK's own setting), so any OpenAI-compatible server works.
    """

    remote_config = chains.RemoteConfig(
        docker_image=deploy.image(), compute=deploy.cpu_service(),
        assets=chains.Assets(secret_keys=[OPENAI_KEY_SECRET]),
        options=chains.ChainletOptions(env_variables=deploy.host_env(BASE_URL_ENV)),
        name="OpenAIGenerator")

    def __init__(self, context: chains.DeploymentContext = chains.depends_context()) -> None:
        # Truss's secrets mapping has no `.get`; an empty secret falls back to the env var.
        secret = context.secrets[OPENAI_KEY_SECRET] if OPENAI_KEY_SECRET in context.secrets \
            else None  # noqa: SIM401
        if secret == chains.public_types.SECRET_DUMMY:  # truss's placeholder: no secret was set
            secret = None
        key = secret or os.environ.get("OPENAI_API_KEY")
        self._client = _client(key) if key else None
        self._default_model = os.environ.get(MODEL_ENV, DEFAULT_MODEL)
        self._calls = InFlightCalls()

    async def run_remote(self, request: GenerationRequest = ABSENT,
                         cancel: str = ABSENT) -> Generation:
        """The completion of `request`; with `cancel` instead, cancels that call, aborting
        its HTTP request (see chainlets.generators.calls), and answers an empty Generation."""
        if cancel is not None:
            self._calls.cancel(cancel)
            return CANCEL_REPLY
        return await self._calls.run(request, self._complete)

    async def _complete(self, request: GenerationRequest) -> Generation:
        if self._client is None:
            raise GenerationError(
                f"step `{request.step}`: no OpenAI API key: set $OPENAI_API_KEY (or the truss "
                f"secret `{OPENAI_KEY_SECRET}`), or run with --llm mock")
        import openai  # loaded with the client: this is a lookup in sys.modules

        params = request.params
        json_mode = _json_mode(request)
        # A reply with tool calls is read whole: streamed, its calls come in fragments.
        stream = request.capabilities.get(Capability.STREAMING) in _SERVED and not request.tools
        try:
            completion = await self._client.chat.completions.create(
                model=params.model or self._default_model,
                messages=_messages(request),
                tools=_tools(request) if request.tools else openai.omit,
                temperature=params.temperature if params.temperature is not None
                else openai.omit,
                max_tokens=params.max_tokens if params.max_tokens is not None else openai.omit,
                top_p=params.top_p if params.top_p is not None else openai.omit,
                stop=params.stop if params.stop is not None else openai.omit,
                seed=params.seed if params.seed is not None else openai.omit,
                # The engine's per-attempt limit bounds the SDK's own, so the call ends no
                # later than the engine gives up on it.
                timeout=request.timeout_s if request.timeout_s is not None
                else openai.NOT_GIVEN,
                response_format=_response_format(request) if json_mode else openai.omit,
                # Left out when off, so a plain request's body is as before; the cast picks the
                # SDK's overload for a `bool` (it returns a completion or a stream).
                stream=cast("bool", True if stream else openai.omit),
                stream_options={"include_usage": True} if stream else openai.omit,
            )
            if isinstance(completion, openai.AsyncStream):
                return await _streamed(request, completion)
        except openai.OpenAIError as exc:
            raise translate_error(exc, request.step) from exc
        except json.JSONDecodeError as exc:  # a 200 whose body is not JSON: not the API
            raise GenerationError(self._not_the_api(
                request.step, f"a body that is not JSON ({exc.msg} at line {exc.lineno}, "
                              f"column {exc.colno})")) from None
        generation = self._generation(request, completion)
        if request.tools and request.capabilities.get(Capability.STREAMING) in _SERVED:
            generation.capabilities = {**request.capabilities,
                                       Capability.STREAMING: Served.UNSERVED}
        return generation

    def _not_the_api(self, step: str, what: str) -> str:
        assert self._client is not None
        return (f"step `{step}`: the openai backend at {self._client.base_url} answered HTTP "
                f"200 with {what}; check that {BASE_URL_ENV} names an OpenAI-compatible API")

    def _generation(self, request: GenerationRequest, completion: object) -> Generation:
        """The reply as a Generation; a reply without text is an error, never `""`."""
        import openai.types.chat

        step = request.step
        if not isinstance(completion, openai.types.chat.ChatCompletion):
            # The SDK hands back the text of a reply that is not declared JSON (an HTML page).
            raise GenerationError(self._not_the_api(step, f"a body that is not JSON "
                                                          f"({str(completion)[:80]!r})"))
        if not completion.choices:
            raise GenerationError(f"step `{step}`: the openai backend (model "
                                  f"`{completion.model}`) returned no choices")
        choice = completion.choices[0]
        message = choice.message
        usage = completion.usage
        counted = Usage(prompt_tokens=usage.prompt_tokens,
                        completion_tokens=usage.completion_tokens,
                        total_tokens=usage.total_tokens) if usage is not None else None
        calls = [ToolCall(id=call.id, name=call.function.name, arguments=call.function.arguments)
                 for call in (message.tool_calls or []) if call.type == "function"] \
            if message is not None and request.tools else []
        if calls:
            return Generation(text=message.content or "", model=completion.model, usage=counted,
                              tool_calls=calls)
        if message is None or not message.content:
            if message is not None and message.refusal:
                raise GenerationError(f"step `{step}`: the model `{completion.model}` refused: "
                                      f"{message.refusal}")
            # Worth another attempt: models do now and then end a reply before any text.
            content = "null" if message is None or message.content is None else '""'
            raise TransientGenerationError(
                f"step `{step}`: the openai backend (model `{completion.model}`) returned no "
                f"text (content {content}, finish_reason `{choice.finish_reason}`)")
        return Generation(
            text=_cut(request, message.content),
            model=completion.model, usage=counted)


def _tools(request: GenerationRequest) -> Any:
    """The step's functions in the SDK's `tools` shape (its TypedDicts, built as plain dicts)."""
    return [{"type": "function", "function": {"name": tool.name,
                                              "description": tool.description,
                                              "parameters": tool.parameters}}
            for tool in request.tools]


def _messages(request: GenerationRequest) -> Any:
    """The chat messages, then each earlier round of tool calls: the model's reply asking for
    them, and one `tool` message per call with its output (or its error, as JSON). Plain dicts
    in the shape of the SDK's TypedDicts, whose roles are literal types."""
    messages: list[dict[str, object]] = [{"role": m.role, "content": m.content}
                                         for m in request.messages]
    for round_ in request.tool_rounds:
        messages.append({"role": "assistant", "content": round_.text or None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.name, "arguments": call.arguments}}
            for call in round_.calls]})
        messages.extend({"role": "tool", "tool_call_id": call.id,
                         "content": call.output if call.output is not None
                         else json.dumps({"error": call.error})}
                        for call in round_.calls)
    return messages


async def _streamed(request: GenerationRequest,
                    stream: "openai.AsyncStream[ChatCompletionChunk]") -> Generation:
    """A streamed reply, read whole: its text, model and usage (the last chunk's, as
    `stream_options.include_usage` asks)."""
    parts: list[str] = []
    model: str | None = None
    usage: CompletionUsage | None = None
    async for chunk in stream:
        model, usage = chunk.model or model, chunk.usage or usage
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    if not parts:  # as with a whole reply: worth another attempt
        raise TransientGenerationError(f"step `{request.step}`: the openai backend (model "
                                       f"`{model}`) streamed no text")
    return Generation(
        text=_cut(request, "".join(parts)), model=model,
        usage=Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                    total_tokens=usage.total_tokens) if usage is not None else None)


_: type[CancellableGenerator] = OpenAIGenerator
