"""Validate and run chains in this process: the one path the Python API and the CLI share.

A run goes through the very chainlet classes that are deployed, wired in-process by truss's
`run_local`, so what works here works deployed. truss_chains and the openai SDK take a second
and more to import: they are imported by `run` only, never by `validate`.
"""

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from chainlets.engine.models import InvocationResult, RunOptions, StepRecord
from chainlets.errors import ChainDefinitionError, ConfigurationError, InputsError
from chainlets.language.compiler import CompiledChain, compile_chain
from chainlets.language.messages import listing
from chainlets.language.plugins import DEFAULT_PLUGINS, PluginRegistry
from chainlets.language.spec import (
    ChainSpec,
    JsonValue,
    load_chain,
    parse_chain,
    read_chain_json,
)

if TYPE_CHECKING:
    from chainlets.runner import ChainRunner

__all__ = ["Backend", "ChainSource", "check_backend", "default_backend", "load", "make_options",
           "run", "run_compiled", "run_sync", "validate"]

Backend = Literal["mock", "openai"]
# A chain as the API takes it: a model, the JSON data of one, or the path of a JSON file.
ChainSource = ChainSpec | Mapping[str, Any] | str | os.PathLike[str]
InputValue = str | int | float | bool | list[Any] | dict[str, Any]


def load(chain: ChainSource) -> ChainSpec:
    """`chain` as a ChainSpec: a ChainSpec as is, a mapping validated, a path read and validated.

    Raises ChainDefinitionError listing every schema problem (or why the file cannot be read).
    """
    if isinstance(chain, ChainSpec):
        return chain
    if isinstance(chain, Mapping):
        return parse_chain(dict(chain))
    if isinstance(chain, str | os.PathLike):
        return load_chain(Path(chain))
    raise ChainDefinitionError(f"a chain must be a ChainSpec, a mapping of its JSON data or "
                               f"the path of a JSON file, not {type(chain).__name__}")


def validate(chain: ChainSource | CompiledChain,
             plugins: PluginRegistry | None = None) -> CompiledChain:
    """Check `chain` without running it; the compiled chain, ready to `run`.

    `plugins` are the plugins a step may name (default: the built-in `gpt-3`, `openai` and
    `mock`); pass a runner's own with `validate(chain, MyRunner.plugins)`. Raises
    ChainDefinitionError whose `problems` lists every problem found, schema problems of JSON
    data together with what the parts that parsed reveal.
    """
    if isinstance(chain, CompiledChain):
        return chain
    registry = DEFAULT_PLUGINS if plugins is None else plugins
    if isinstance(chain, str | os.PathLike):
        return compile_chain(read_chain_json(Path(chain)), registry, source=str(chain))
    if isinstance(chain, Mapping):
        return compile_chain(dict(chain), registry)
    return compile_chain(load(chain), registry)


def default_backend() -> Backend:
    """The backend when none is chosen: `openai` when $OPENAI_API_KEY is set, else `mock`."""
    return "openai" if os.environ.get("OPENAI_API_KEY") else "mock"


def make_options(options: RunOptions | Mapping[str, Any] | None = None,
                 **overrides: Any) -> RunOptions:
    """`options` with the `overrides` that are not None applied, validated.

    Raises pydantic.ValidationError naming the option and value when one is out of range.
    """
    base = options.model_dump(exclude_unset=True) if isinstance(options, RunOptions) \
        else dict(options or {})
    base.update({k: v for k, v in overrides.items() if v is not None})
    if "llm" not in base:
        base["llm"] = default_backend()
    return RunOptions.model_validate(base)


def _not_json(value: object, at: str) -> str | None:
    """Where in `value` (a list or dict) the first value that is not JSON is, if any."""
    if isinstance(value, list):
        items: Iterable[tuple[object, object]] = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    else:
        return None if value is None or isinstance(value, str | bool | int | float) else at
    for key, item in items:
        if isinstance(value, dict) and not isinstance(key, str):
            return f"{at} (key {key!r} is not text)"
        found = _not_json(item, f"{at}[{key!r}]")
        if found is not None:
            return found
    return None


def _input_values(inputs: Mapping[str, InputValue] | None) -> dict[str, JsonValue]:
    """Inputs as the engine takes them: text, other scalars as JSON text (`true`, `3`), and
    lists and dicts of JSON values as they are."""
    values: dict[str, JsonValue] = {}
    problems: list[str] = []
    for name, value in (inputs or {}).items():
        if isinstance(value, str):
            values[name] = value
        elif isinstance(value, bool | int | float):
            values[name] = "true" if value is True else "false" if value is False else str(value)
        elif isinstance(value, list | dict):
            bad = _not_json(value, name)
            if bad is None:
                values[name] = value
            else:
                problems.append(f"input `{name}`: `{bad}` is not a JSON value; pass text, "
                                "numbers, booleans, null, and lists and dicts of them")
        else:
            problems.append(f"input `{name}` must be text, a number, a boolean, or a list or "
                            f"dict of JSON values, not {type(value).__name__} {value!r}")
    if problems:
        raise InputsError.from_problems("the inputs cannot be passed to a chain", problems)
    return values


def _runner_class(runner: "type[ChainRunner] | None") -> "type[ChainRunner]":
    from chainlets.runner import ChainRunner

    if runner is None:
        return ChainRunner
    if not (isinstance(runner, type) and issubclass(runner, ChainRunner)):
        raise ChainDefinitionError(f"runner must be a subclass of chainlets.runner.ChainRunner, "
                                   f"not {runner!r}")
    return runner


def check_backend(chain: CompiledChain, options: RunOptions,
                  secrets: Mapping[str, str] | None = None) -> None:
    """Raise ConfigurationError, before any call, when the openai backend would serve a step
    of `chain` and there is no key for it (`secrets`' `openai_api_key`, else $OPENAI_API_KEY)."""
    from chainlets.language.plugins import LLM_BACKEND

    if options.llm != "openai":
        return
    key = (secrets or {}).get("openai_api_key") or os.environ.get("OPENAI_API_KEY")
    users = list(dict.fromkeys(step.handle for step in chain.model_calls()
                               if step.plugin.generator in (LLM_BACKEND, "openai")))
    if users and not key:
        raise ConfigurationError(
            f"the openai backend (--llm openai) would serve step{'s' if len(users) > 1 else ''} "
            f"{listing(users, limit=3)}, and OPENAI_API_KEY is not set: export "
            "OPENAI_API_KEY=sk-… (any value for a local OpenAI-compatible server at "
            "OPENAI_BASE_URL), or run with --llm mock for the offline mock")


async def run_compiled(chain: CompiledChain, inputs: Mapping[str, JsonValue],
                       options: RunOptions,
                       *, runner: "type[ChainRunner] | None" = None,
                       observer: Callable[[StepRecord], None] | None = None,
                       secrets: Mapping[str, str] | None = None) -> InvocationResult:
    """Run a compiled chain through a runner chainlet and its generators, in this process.

    The CLI's `run` and `chainrunner.run` both end here. `secrets` are what truss gives the
    chainlets (`openai_api_key` defaults to $OPENAI_API_KEY).
    """
    import truss_chains as chains

    from chainlets.generators.openai_chat import OPENAI_KEY_SECRET

    runner_cls = _runner_class(runner)
    given = {OPENAI_KEY_SECRET: os.environ.get("OPENAI_API_KEY", ""), **(secrets or {})}
    check_backend(chain, options, given)
    # run_local patches how every chainlet class is constructed while it is entered: build the
    # runner and its generators inside it without awaiting, so that no other run's coroutine
    # interleaves, and run outside it.
    with chains.run_local(secrets=given):
        instance = runner_cls()
    return await instance.execute(chain, inputs, options, observer=observer)


async def run(chain: ChainSource | CompiledChain,
              inputs: Mapping[str, InputValue] | None = None, *,
              llm: Backend | None = None,
              options: RunOptions | Mapping[str, Any] | None = None,
              max_concurrency: int | None = None,
              max_attempts: int | None = None,
              observer: Callable[[StepRecord], None] | None = None,
              runner: "type[ChainRunner] | None" = None,
              secrets: Mapping[str, str] | None = None) -> InvocationResult:
    """Validate `chain`, run it with `inputs`, and return its result; nothing runs if invalid.

    `chain`: a ChainSpec, a mapping of its JSON data, a path of a JSON file, or what `validate`
    returned. `llm` picks the backend of `gpt-3`/`openai` steps (default: `options`' choice,
    else `openai` when $OPENAI_API_KEY is set, else `mock`). `options` (RunOptions or its JSON
    data) sets the rest; `max_concurrency` and `max_attempts` override it. `observer` is called
    with a step's record each time the step changes state; it must not block. `runner` is a
    ChainRunner subclass with plugins and generators of your own.

    A failing step does not raise: the result's `state` is `failed` and its `statusMessage`
    says why. Raises ChainDefinitionError for an invalid chain, InputsError for missing or
    unknown inputs, pydantic.ValidationError for an out-of-range option.
    """
    compiled = validate(chain, _runner_class(runner).plugins)
    values = _input_values(inputs)
    compiled.resolve_inputs(values)  # fail on missing inputs before building any chainlet
    run_options = make_options(options, llm=llm, max_concurrency=max_concurrency,
                               max_attempts=max_attempts)
    return await run_compiled(compiled, values, run_options, runner=runner, observer=observer,
                              secrets=secrets)


def run_sync(chain: ChainSource | CompiledChain,
             inputs: Mapping[str, InputValue] | None = None, *,
             llm: Backend | None = None,
             options: RunOptions | Mapping[str, Any] | None = None,
             max_concurrency: int | None = None,
             max_attempts: int | None = None,
             observer: Callable[[StepRecord], None] | None = None,
             runner: "type[ChainRunner] | None" = None,
             secrets: Mapping[str, str] | None = None) -> InvocationResult:
    """`run` for code without an event loop (a script, a notebook cell with none running)."""
    return asyncio.run(run(chain, inputs, llm=llm, options=options,
                           max_concurrency=max_concurrency, max_attempts=max_attempts,
                           observer=observer, runner=runner, secrets=secrets))
