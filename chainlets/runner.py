"""The runner chainlet: executes a chain definition, fanning out to generator chainlets."""

import os
from collections.abc import Mapping
from typing import Literal

import truss_chains as chains

from chainlets import deploy
from chainlets.engine.models import InvocationResult, RunOptions
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.engine.scheduler import StepObserver, run_chain
from chainlets.errors import ChainDefinitionError, ConfigurationError, InputsError
from chainlets.generators.mock import MockGenerator
from chainlets.generators.openai_chat import OpenAIGenerator
from chainlets.language.compiler import CompiledChain, compile_chain
from chainlets.language.plugins import DEFAULT_PLUGINS, PluginRegistry
from chainlets.language.spec import ChainSpec

__all__ = ["DEFAULT_OPTIONS", "LLM_ENV", "ChainRunner", "deployed_backend"]

DEFAULT_OPTIONS = RunOptions()
LLM_ENV = "CHAINRUNNER_LLM"


def deployed_backend() -> Literal["mock", "openai"]:
    """The deployment's backend: $CHAINRUNNER_LLM (baked in at push or serve time), else
    `openai`. A value that names no backend is a ConfigurationError."""
    value = os.environ.get(LLM_ENV, "").strip() or "openai"
    if value not in ("mock", "openai"):
        raise ConfigurationError(f"{LLM_ENV}={value!r} is not a backend; set it to `openai` or "
                                 "`mock` where the chain is pushed or served")
    return "mock" if value == "mock" else "openai"


class ChainRunner(chains.ChainletBase):
    """Entrypoint role: validates a chain, runs it eagerly, returns every step's record.

    Model calls go to the generator chainlets it depends on, concurrently. To add a generator,
    subclass with another `chains.depends(...)` argument, register a Plugin for it in `plugins`
    and include it in `generators` — the engine needs no edit.
    """

    # The backend of `gpt-3`/`openai` steps when a request names none is the deployment's:
    # $CHAINRUNNER_LLM where it was pushed or served, baked in; else openai, never the mock
    # unasked. Every step's record says which backend and model answered.
    remote_config = chains.RemoteConfig(
        docker_image=deploy.image(), compute=deploy.cpu_service(), name="ChainRunner",
        options=chains.ChainletOptions(env_variables=deploy.host_env(LLM_ENV)))

    plugins: PluginRegistry = DEFAULT_PLUGINS

    def __init__(self,
                 openai: GeneratorProtocol = chains.depends(OpenAIGenerator),
                 mock: GeneratorProtocol = chains.depends(MockGenerator)) -> None:
        self.generators: Mapping[str, GeneratorProtocol] = {"openai": openai, "mock": mock}

    async def execute(self, chain: ChainSpec | CompiledChain, inputs: Mapping[str, str],
                      options: RunOptions | None = None, *,
                      observer: StepObserver | None = None,
                      previous: InvocationResult | None = None) -> InvocationResult:
        """What `run_remote` does, with an in-process observer for progress and persistence.

        A chain the caller already compiled against this runner's plugins is not compiled again.
        """
        compiled = chain if isinstance(chain, CompiledChain) else compile_chain(chain,
                                                                                self.plugins)
        options = options or RunOptions()
        if options.llm is None:
            options = options.model_copy(update={"llm": deployed_backend()})
        return await run_chain(compiled, inputs, self.generators, options,
                               observer=observer, previous=previous)

    async def run_remote(self, chain: ChainSpec, inputs: dict[str, str],
                         options: RunOptions = DEFAULT_OPTIONS) -> InvocationResult:
        """Runs `chain`; an invalid chain or inputs raise ChainRequestError, which truss's
        server answers 422 with the problems (any other exception would be a 500)."""
        try:
            return await self.execute(chain, inputs, options)
        except (ChainDefinitionError, InputsError) as exc:
            # Imported here: it needs fastapi, which only truss's server brings.
            from chainlets.http_errors import ChainRequestError

            raise ChainRequestError.rejecting(exc) from exc
