"""The runner chainlet: executes a chain definition, fanning out to generator chainlets, and
answers the service's operations (stored chains, asynchronous invocations, callbacks)."""

import logging
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

import truss_chains as chains

from chainlets import deploy
from chainlets.code_runner import CodeRunner
from chainlets.engine.approval import ApprovalGate
from chainlets.engine.code import CodeRunnerProtocol, FallbackCodeRunner, FunctionRunner
from chainlets.engine.models import ChainInputs, InvocationResult, RunOptions
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.engine.scheduler import StepCommit, StepObserver, run_chain
from chainlets.errors import ChainrunnerError, ConfigurationError, RequestError
from chainlets.generators.calls import cancellable
from chainlets.generators.mock import MockGenerator
from chainlets.generators.openai_chat import OpenAIGenerator
from chainlets.language.compiler import CompiledChain, compile_chain
from chainlets.language.functions import with_installed
from chainlets.language.plugins import DEFAULT_PLUGINS, PluginRegistry
from chainlets.language.spec import ChainSpec, JsonValue
from chainlets.service.responses import Answer
from chainlets.service.runtime import Runtime, ServiceConfig

__all__ = ["DEFAULT_OPTIONS", "LLM_ENV", "ChainRunner", "deployed_backend"]

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = RunOptions()
LLM_ENV = "CHAINRUNNER_LLM"
# Truss 0.18.35 rejects `T | None` parameter types, and passes every argument it declares,
# None when the request left it out: each optional argument is typed as what it is when given.
ABSENT: Any = None


def deployed_backend() -> Literal["mock", "openai"]:
    """The deployment's backend: $CHAINRUNNER_LLM (baked in at push or serve time), else
    `openai`. A value that names no backend is a ConfigurationError."""
    value = os.environ.get(LLM_ENV, "").strip() or "openai"
    if value not in ("mock", "openai"):
        raise ConfigurationError(f"{LLM_ENV}={value!r} is not a backend; set it to `openai` or "
                                 "`mock` where the chain is pushed or served")
    return "mock" if value == "mock" else "openai"


def _values(inputs: ChainInputs | Mapping[str, JsonValue] | None) -> dict[str, JsonValue]:
    """The inputs of a request: `run_remote` is called with the model over HTTP, and with a
    plain mapping by code in the same process (tests, `run_local`)."""
    if inputs is None:
        return {}
    return dict(inputs.root if isinstance(inputs, ChainInputs) else inputs)


class ChainRunner(chains.ChainletBase):
    """Entrypoint role: validates a chain, runs it eagerly, returns every step's record; with
    `op`, answers a service operation (README: "Service operations").

    Model calls go to the generator chainlets it depends on, concurrently. To add a generator,
    subclass with another `chains.depends(...)` argument, register a Plugin for it in `plugins`
    and include it in `generators` — the engine needs no edit. Code steps and tools call their
    functions through the code runner chainlet; a subclass whose `__init__` does not pass one
    on calls them in its own process, from `plugins.functions`.
    """

    # The backend of `gpt-3`/`openai` steps when a request names none is the deployment's:
    # $CHAINRUNNER_LLM where it was pushed or served, baked in; else openai, never the mock
    # unasked. Every step's record says which backend and model answered.
    remote_config = chains.RemoteConfig(
        docker_image=deploy.image(), compute=deploy.cpu_service(), name="ChainRunner",
        options=chains.ChainletOptions(env_variables=deploy.host_env(LLM_ENV)),
        assets=chains.Assets(secret_keys=list(deploy.SERVICE_SECRETS)))

    plugins: PluginRegistry = DEFAULT_PLUGINS

    def __init__(self,
                 openai: GeneratorProtocol = chains.depends(OpenAIGenerator),
                 mock: GeneratorProtocol = chains.depends(MockGenerator),
                 code: CodeRunnerProtocol = chains.depends(CodeRunner),
                 context: chains.DeploymentContext = chains.depends_context()) -> None:
        self.generators: Mapping[str, GeneratorProtocol] = {"openai": openai, "mock": mock}
        # A function the code runner chainlet lacks (one registered in a subclass's `plugins`
        # only) runs here. A subclass written before code steps calls super().__init__ without
        # `code`: the default is then truss's marker, not a chainlet, and all run here.
        local = FunctionRunner(with_installed(self.plugins.functions))
        self.code: CodeRunnerProtocol = FallbackCodeRunner(code, local) \
            if callable(getattr(code, "run_remote", None)) else local
        self._secrets = {name: context.secrets[name] for name in deploy.SERVICE_SECRETS
                         if name in context.secrets
                         and context.secrets[name] != chains.public_types.SECRET_DUMMY}
        self._runtime: Runtime | None = None
        self._callers: tuple[Mapping[str, GeneratorProtocol], dict[str, GeneratorProtocol]] \
            | None = None

    def callers(self) -> Mapping[str, GeneratorProtocol]:
        """`generators` as the engine calls them: each one that can cancel its calls behind a
        caller that cancels them in the generator when the engine stops waiting (truss does not
        cancel a chainlet's run_remote when its caller hangs up)."""
        if self._callers is None or self._callers[0] is not self.generators:
            self._callers = (self.generators, {name: cancellable(generator) for name, generator
                                               in self.generators.items()})
        return self._callers[1]

    async def execute(self, chain: ChainSpec | CompiledChain, inputs: Mapping[str, JsonValue],
                      options: RunOptions | None = None, *,
                      observer: StepObserver | None = None,
                      commit: StepCommit | None = None,
                      previous: InvocationResult | None = None,
                      approvals: ApprovalGate | None = None,
                      started_at: datetime | None = None) -> InvocationResult:
        """What `run_remote` does, with an in-process observer for progress and persistence.

        A chain the caller already compiled against this runner's plugins is not compiled again.
        """
        compiled = chain if isinstance(chain, CompiledChain) else compile_chain(chain,
                                                                                self.plugins)
        options = options or RunOptions()
        if options.llm is None:
            options = options.model_copy(update={"llm": deployed_backend()})
        return await run_chain(compiled, inputs, self.callers(), options,
                               observer=observer, previous=previous, commit=commit,
                               approvals=approvals, code=self.code, started_at=started_at)

    def service(self) -> Runtime:
        """The service of this process, configured from the environment on first use."""
        if self._runtime is None:
            self._runtime = Runtime(ServiceConfig.from_env(secrets=self._secrets),
                                    self.execute, self.plugins)
        return self._runtime

    async def is_healthy(self) -> bool:
        """Truss's readiness probe: also starts the service (store, worker, outbox), so that
        after a restart unfinished invocations resume without waiting for a request."""
        try:
            await self.service().ensure_started()
        except Exception as exc:  # reported as not ready, with the reason in the log
            log.error("the service cannot start: %s", exc)
            return False
        return True

    async def run_remote(
            self, chain: ChainSpec = ABSENT, inputs: ChainInputs = ABSENT,
            options: RunOptions = DEFAULT_OPTIONS, op: str = ABSENT, chain_id: str = ABSENT,
            callback_url: str = ABSENT, idempotency_key: str = ABSENT,
            invocation_id: str = ABSENT, state: str = ABSENT, since: str = ABSENT,
            limit: int = ABSENT, cursor: str = ABSENT, event_id: str = ABSENT,
            task_token: str = ABSENT, output: str = ABSENT, error: str = ABSENT,
            from_step: str = ABSENT) -> Answer:
        """With `op`, answers that operation; without, runs `chain` on `inputs` and returns
        its result. A request that is the client's mistake raises ChainRequestError, which
        truss's server answers with its status (400, 404, 409, 422) and the problems."""
        try:
            if op is None:
                if chain is None:
                    raise RequestError("chain: required (or name an operation with `op`)")
                return Answer(await self.execute(chain, _values(inputs), options))
            answer = await self.service().handle({
                "op": op, "chain": chain, "inputs": None if inputs is None else _values(inputs),
                "options": options if options is not DEFAULT_OPTIONS else None,
                "chain_id": chain_id, "callback_url": callback_url,
                "idempotency_key": idempotency_key, "invocation_id": invocation_id,
                "state": state, "since": since, "limit": limit, "cursor": cursor,
                "event_id": event_id, "task_token": task_token, "output": output,
                "error": error, "from_step": from_step})
            assert answer is not None  # `op` is set
            return Answer(answer)
        except ChainrunnerError as exc:
            # Imported here: it needs fastapi, which only truss's server brings.
            from chainlets.http_errors import ChainRequestError

            rejection = ChainRequestError.answering(exc)
            if rejection is None:
                raise
            raise rejection from exc
