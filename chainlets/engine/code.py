"""Code steps in the engine: calling a registered function through the code runner, under the
step's time limit, and the in-process runner (`FunctionRunner`) the code runner chainlet and
local runs use.

A function must not hang the chain: each call is one attempt under `step_timeout_s`. An
`async` function is cancelled there; a plain one runs in a daemon thread of its own, which the
engine stops waiting for (Python cannot stop a thread: a hung one is left behind, and never
holds up the run or the process's exit).
"""

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from chainlets.engine.code_models import CodeCall, CodeResult
from chainlets.engine.failures import StepTimeoutError
from chainlets.engine.models import AttemptRecord, Generation, RunOptions
from chainlets.engine.policies import StepPolicies, step_timeout_s
from chainlets.engine.retry import RetryPolicy
from chainlets.engine.timeouts import AttemptTimer
from chainlets.errors import FunctionCallError, UnknownFunctionError
from chainlets.language.compiler import CompiledChain, CompiledStep
from chainlets.language.functions import FunctionRegistry
from chainlets.language.messages import listing
from chainlets.language.plugins import CODE

__all__ = ["CallHost", "CodeRunnerProtocol", "FallbackCodeRunner", "FunctionRunner",
           "chain_functions", "run_code"]


_GRACE_S = 1.0


class CodeRunnerProtocol(Protocol):
    """A chainlet that calls registered functions (the seed's Lambda)."""

    async def run_remote(self, call: CodeCall) -> CodeResult: ...


class CallHost(Protocol):
    """What a code step or a tool loop needs of the run it is part of (`scheduler._Execution`)."""

    @property
    def options(self) -> RunOptions: ...

    @property
    def policy(self) -> RetryPolicy: ...

    @property
    def timer(self) -> AttemptTimer: ...

    @property
    def policies(self) -> StepPolicies: ...

    @property
    def code(self) -> CodeRunnerProtocol: ...


async def run_code(host: CallHost, step: CompiledStep, values: Mapping[str, str],
                   attempts: list[AttemptRecord]) -> Generation:
    """A code step's call: its arguments rendered, the function called through the host's code
    runner under the retry policy (a timeout is retried; a bad argument or an error the
    function raises is not). Its output is the return value as JSON text."""
    assert step.code is not None
    call = CodeCall(step=step.handle, function=step.code.function.name,
                    args=step.code.render(values),
                    timeout_s=step_timeout_s(step.spec, host.options))
    policy, timer = host.policies.of(step.spec)  # the step's `retry` and `timeout_s`, if any
    result = await policy.call(host.code.run_remote, call, attempts, CODE, timer=timer)
    return Generation(text=result.output, model=call.function)


def chain_functions(chain: CompiledChain) -> FunctionRegistry:
    """The functions `chain`'s code steps and tools call, as compiled into it."""
    found = {}
    for step in (*chain.steps.values(), *(s for s in chain.model_calls())):
        if step.code is not None:
            found[step.code.function.name] = step.code.function
        found.update((tool.name, tool) for tool in step.tools)
    return FunctionRegistry(found.values())


def _settle(future: "asyncio.Future[Any]", result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller stopped waiting (a timeout, a cancel)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


async def _in_thread(fn: Callable[..., Any], kwargs: Mapping[str, Any], name: str) -> Any:
    """`fn(**kwargs)` in a daemon thread of its own: cancelling the wait abandons the thread."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def work() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (context.run(fn, **kwargs), None)
        except BaseException as exc:  # handed to the caller, raised there
            outcome = (None, exc)
        # The loop may have closed while the function ran: then nobody waits for it.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle, future, *outcome)

    threading.Thread(target=work, name=f"function:{name}", daemon=True).start()
    return await future


class FunctionRunner:
    """Calls the functions of `functions` in this process: the code runner chainlet's work,
    and a runner's own where it has no code runner chainlet."""

    def __init__(self, functions: FunctionRegistry) -> None:
        self.functions = functions

    async def run_remote(self, call: CodeCall) -> CodeResult:
        function = self.functions.get(call.function)
        if function is None:
            raise UnknownFunctionError(
                f"step `{call.step}`: function `{call.function}` is not registered with the "
                f"code runner (it has {listing(self.functions.names())}); register it with the "
                "code runner as well as with the runner's plugins")
        kwargs = function.bind(call.step, call.args)
        # A backstop for a caller that stops waiting without cancelling (a remote one): the
        # caller's own limit ends the wait first, so the grace keeps its message the one seen.
        limit = None if call.timeout_s is None else call.timeout_s + _GRACE_S
        try:
            async with asyncio.timeout(limit):
                result = await function.fn(**kwargs) if function.is_async \
                    else await _in_thread(function.fn, kwargs, function.name)
        except TimeoutError as exc:
            raise StepTimeoutError(f"function `{function.name}` gave no answer within "
                                   f"step_timeout_s={call.timeout_s:g} s; the call was "
                                   "abandoned") from exc
        except FunctionCallError:
            raise
        except Exception as exc:  # the user's function failed: the step fails saying how
            raise FunctionCallError(f"step `{call.step}`: function `{function.name}` raised "
                                    f"{type(exc).__name__}: {exc}") from exc
        return CodeResult(output=function.output(call.step, result))


class FallbackCodeRunner:
    """The code runner chainlet first; a function it does not have, this process's `local`
    runner (a runner subclass's own functions, registered in its plugins only)."""

    def __init__(self, remote: CodeRunnerProtocol, local: FunctionRunner) -> None:
        self.remote, self.local = remote, local

    async def run_remote(self, call: CodeCall) -> CodeResult:
        try:
            return await self.remote.run_remote(call)
        except UnknownFunctionError:
            if self.local.functions.get(call.function) is None:
                raise
        return await self.local.run_remote(call)
