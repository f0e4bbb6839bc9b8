"""The code runner chainlet: calls code steps' and tools' functions (the seed's Lambda), in a
service with its own resources."""

import truss_chains as chains

from chainlets import deploy
from chainlets.engine.code import CodeRunnerProtocol, FunctionRunner
from chainlets.engine.code_models import CodeCall, CodeResult
from chainlets.language.builtin_functions import DEFAULT_FUNCTIONS, ITINERARY_DIR_ENV
from chainlets.language.functions import FunctionRegistry, with_installed

__all__ = ["CodeRunner"]


class CodeRunner(chains.ChainletBase):
    """Calls registered functions by name with JSON arguments checked against their type hints;
    answers their return value as JSON.

    Its functions are `functions` (the built-in ones by default) plus those of installed
    packages (entry point group `chainrunner.functions`). To add your own, subclass it with
    `functions = DEFAULT_FUNCTIONS.with_functions(my_function)` and have your runner depend on
    the subclass (README: "Code steps").
    """

    # Functions are CPU work, often blocking: fewer at once than the I/O-bound chainlets take.
    remote_config = chains.RemoteConfig(
        docker_image=deploy.image(), compute=deploy.cpu_service(memory="1Gi", concurrency=32),
        options=chains.ChainletOptions(env_variables=deploy.host_env(ITINERARY_DIR_ENV)),
        name="CodeRunner")

    functions: FunctionRegistry = DEFAULT_FUNCTIONS

    def __init__(self) -> None:
        self._runner = FunctionRunner(with_installed(self.functions))

    async def run_remote(self, call: CodeCall) -> CodeResult:
        """The function's return value; FunctionCallError when the arguments do not fit it or
        it raises, StepTimeoutError when it outlives `call.timeout_s`."""
        return await self._runner.run_remote(call)


_: type[CodeRunnerProtocol] = CodeRunner
