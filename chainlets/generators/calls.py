"""Cancelling a generator chainlet's model call from the chainlet that made it.

Truss does not cancel a chainlet's `run_remote` when its caller hangs up: a runner that stops
waiting for a generator leaves the generator's call to the backend running to its end. So the
caller names each call (`GenerationRequest.call_id`) and, when its wait is cancelled (a cancelled
invocation, a step timeout, a failing sibling), sends the generator `run_remote(cancel=<call
id>)`; the generator cancels the task making that call, which aborts the backend request (the
backend sees the connection close).

- `InFlightCalls`, generator side: runs each named call in a cancellable registry.
- `CancellingCaller`, caller side: wraps a `CancellableGenerator` as the engine's
  `GeneratorProtocol`; `cancellable` wraps what supports it and leaves other generators as
  they are (an extension's generator with a one-argument `run_remote` keeps working).
"""

import asyncio
import inspect
import logging
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeGuard

from chainlets.engine.models import Generation, GenerationRequest
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.errors import GenerationError

__all__ = ["ABSENT", "CANCEL_PARAMETER", "CANCEL_REPLY", "CallCancelledError",
           "CancellableGenerator", "CancellingCaller", "InFlightCalls", "cancellable"]

log = logging.getLogger(__name__)

# Truss rejects `T | None` parameter types, and passes None for an argument a request left out.
ABSENT: Any = None
CANCEL_PARAMETER = "cancel"
# A truss endpoint has one return type: a cancel is answered with an empty Generation.
CANCEL_REPLY = Generation(text="")
# How long a caller waits for the generator to take a cancel before it gives up (and logs it).
CANCEL_TIMEOUT_S = 10.0


class CallCancelledError(GenerationError):
    """A model call was cancelled by its caller (raised in the generator, which nobody waits
    for any more; never retried)."""


class CancellableGenerator(Protocol):
    """A generator chainlet whose calls its caller can cancel: `run_remote(request, ABSENT)`
    makes a call, `run_remote(ABSENT, call_id)` cancels the call named `call_id`."""

    async def run_remote(self, request: GenerationRequest, cancel: str) -> Generation: ...


class InFlightCalls:
    """The named calls a generator is making, so that a cancel can reach them.

    A cancel that arrives before its call (the two requests race) is remembered — the last
    `remember` of them — and the call is refused when it comes.
    """

    def __init__(self, remember: int = 10_000) -> None:
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._remember = remember

    def __len__(self) -> int:
        return len(self._tasks)

    async def run(self, request: GenerationRequest,
                  call: Callable[[GenerationRequest], Awaitable[Generation]]) -> Generation:
        """`call(request)`, cancelled when `cancel(request.call_id)` is."""
        call_id = request.call_id
        task = asyncio.current_task()
        if call_id is None or task is None:
            return await call(request)
        if call_id in self._cancelled:
            raise CallCancelledError(f"step `{request.step}`: call {call_id} was cancelled by "
                                     "its caller before it started")
        self._tasks[call_id] = task
        try:
            return await call(request)
        except asyncio.CancelledError:
            if call_id not in self._cancelled or task.uncancel() > 0:
                raise  # not (only) our cancel: the task itself is being cancelled
            raise CallCancelledError(f"step `{request.step}`: call {call_id} was cancelled by "
                                     "its caller") from None
        finally:
            self._tasks.pop(call_id, None)

    def cancel(self, call_id: str) -> bool:
        """Cancel the call `call_id`; False when it is not in flight (finished, or not yet
        started: then it is refused when it comes)."""
        self._cancelled[call_id] = None
        while len(self._cancelled) > self._remember:
            self._cancelled.popitem(last=False)
        task = self._tasks.get(call_id)
        if task is None:
            return False
        task.cancel()
        return True


class CancellingCaller:
    """The engine's view of a cancellable generator: each call gets an id, and a call whose
    wait is cancelled is cancelled in the generator too (in the background, so the caller's
    cancellation is not held up by it)."""

    def __init__(self, chainlet: CancellableGenerator, *,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self.chainlet, self._new_id = chainlet, new_id
        self._cancels: set[asyncio.Task[None]] = set()

    async def run_remote(self, request: GenerationRequest) -> Generation:
        call_id = self._new_id()
        try:
            return await self.chainlet.run_remote(
                request.model_copy(update={"call_id": call_id}), ABSENT)
        except asyncio.CancelledError:
            task = asyncio.get_running_loop().create_task(self._cancel(call_id, request.step),
                                                          name=f"cancel-call:{call_id}")
            self._cancels.add(task)
            task.add_done_callback(self._cancels.discard)
            raise

    async def _cancel(self, call_id: str, step: str) -> None:
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT_S):
                await self.chainlet.run_remote(ABSENT, call_id)
        except Exception as exc:  # the generator finishes the call on its own; nothing to undo
            log.warning("step `%s`: cancelling call %s in the generator failed: %s", step,
                        call_id, exc)

    async def drain(self) -> None:
        """Wait for the cancels sent so far to be taken."""
        await asyncio.gather(*self._cancels, return_exceptions=True)


def _takes_cancel(generator: object) -> TypeGuard[CancellableGenerator]:
    run_remote = getattr(generator, "run_remote", None)
    try:
        return run_remote is not None and \
            CANCEL_PARAMETER in inspect.signature(run_remote).parameters
    except (TypeError, ValueError):  # no signature to read: call it as the engine does
        return False


def cancellable(generator: GeneratorProtocol) -> GeneratorProtocol:
    """`generator` behind a CancellingCaller where its `run_remote` takes a `cancel`
    argument (a generator chainlet of ours, or truss's stub of one), else as it is."""
    if _takes_cancel(generator):
        return CancellingCaller(generator)
    return generator
