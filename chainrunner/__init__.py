"""chainrunner's public Python API: validate and run prompt chains, and extend the runner.

    import chainrunner

    result = chainrunner.run_sync("chains/specs/joke.json", {"topic": "food"}, llm="mock")
    print(result.state, result.output)

Inside a coroutine, `await chainrunner.run(...)`. Every name in `__all__` is public and stays;
anything reached through a submodule is not. Names are imported on first use, so that
`import chainrunner` (and the `chainrunner` command's start-up) costs nothing until then.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from chainlets.code_runner import CodeRunner
    from chainlets.engine.models import (
        Generation,
        GenerationRequest,
        InvocationResult,
        RunOptions,
        RunState,
        StepRecord,
        Usage,
    )
    from chainlets.engine.protocols import GeneratorProtocol
    from chainlets.errors import (
        ChainDefinitionError,
        ChainrunnerError,
        ConflictError,
        FunctionCallError,
        GenerationError,
        InputsError,
        TransientGenerationError,
    )
    from chainlets.generators.mock import MockGenerator
    from chainlets.generators.openai_chat import OpenAIGenerator
    from chainlets.language.builtin_functions import DEFAULT_FUNCTIONS
    from chainlets.language.compiler import CompiledChain, compile_chain
    from chainlets.language.functions import Function, FunctionRegistry
    from chainlets.language.plugins import DEFAULT_PLUGINS, ModelParams, Plugin, PluginRegistry
    from chainlets.language.spec import (
        ChainSpec,
        ChatMessage,
        InputDecl,
        StepSpec,
        chain_json_schema,
        load_chain,
        parse_chain,
    )
    from chainlets.runner import ChainRunner
    from chainrunner.local import run, run_sync, validate

    __version__: str

__all__ = [
    "DEFAULT_FUNCTIONS",
    "DEFAULT_PLUGINS",
    "ChainDefinitionError",
    "ChainRunner",
    "ChainSpec",
    "ChainrunnerError",
    "ChatMessage",
    "CodeRunner",
    "CompiledChain",
    "ConflictError",
    "Function",
    "FunctionCallError",
    "FunctionRegistry",
    "Generation",
    "GenerationError",
    "GenerationRequest",
    "GeneratorProtocol",
    "InputDecl",
    "InputsError",
    "InvocationResult",
    "MockGenerator",
    "ModelParams",
    "OpenAIGenerator",
    "Plugin",
    "PluginRegistry",
    "RunOptions",
    "RunState",
    "StepRecord",
    "StepSpec",
    "TransientGenerationError",
    "Usage",
    "__version__",
    "chain_json_schema",
    "compile_chain",
    "load_chain",
    "parse_chain",
    "run",
    "run_sync",
    "validate",
]

# Where each public name lives. Modules under `chainlets.` are shipped to deployed chainlets;
# `chainrunner.local` is not.
_HOMES = {
    "chainrunner.local": ("run", "run_sync", "validate"),
    "chainlets.language.spec": ("ChainSpec", "ChatMessage", "InputDecl", "StepSpec",
                                "chain_json_schema", "load_chain", "parse_chain"),
    "chainlets.language.compiler": ("CompiledChain", "compile_chain"),
    "chainlets.language.builtin_functions": ("DEFAULT_FUNCTIONS",),
    "chainlets.language.functions": ("Function", "FunctionRegistry"),
    "chainlets.code_runner": ("CodeRunner",),
    "chainlets.language.plugins": ("DEFAULT_PLUGINS", "ModelParams", "Plugin", "PluginRegistry"),
    "chainlets.engine.models": ("Generation", "GenerationRequest", "InvocationResult",
                                "RunOptions", "RunState", "StepRecord", "Usage"),
    "chainlets.engine.protocols": ("GeneratorProtocol",),
    "chainlets.errors": ("ChainDefinitionError", "ChainrunnerError", "ConflictError",
                         "FunctionCallError", "GenerationError", "InputsError",
                         "TransientGenerationError"),
    "chainlets.runner": ("ChainRunner",),
    "chainlets.generators.openai_chat": ("OpenAIGenerator",),
    "chainlets.generators.mock": ("MockGenerator",),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        value: Any = version("chainrunner")
    elif name in _MODULE_OF:
        value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    else:
        raise AttributeError(f"module 'chainrunner' has no attribute '{name}'")
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
