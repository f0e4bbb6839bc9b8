"""FakeGenerator: a scripted, instrumented stand-in for any generator chainlet."""

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from chainlets.engine.models import Generation, GenerationRequest, Usage
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.generators.calls import ABSENT, CANCEL_REPLY, CancellableGenerator, InFlightCalls

__all__ = ["FakeGenerator"]

Reply = str | Exception | Callable[[GenerationRequest], str]


@dataclass
class FakeGenerator:
    """Replies per step handle (or with a default), after `latency_s`, recording every call.

    Cancellable like the generator chainlets: `run_remote(cancel=call_id)` cancels the call
    named so, recorded in `cancels`.

    A reply may be text, an exception to raise, a callable of the request, or a list of these
    consumed one per call (to script "fail twice, then succeed").
    """

    replies: Mapping[str, Reply | list[Reply]] = field(default_factory=dict)
    default: Reply = "ok"
    latency_s: float = 0.0
    requests: list[GenerationRequest] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    cancels: list[str] = field(default_factory=list)
    calls_in_flight: InFlightCalls = field(default_factory=InFlightCalls)

    def calls(self, step: str) -> int:
        return sum(1 for r in self.requests if r.step == step)

    def _reply(self, request: GenerationRequest) -> Reply:
        reply = self.replies.get(request.step, self.default)
        if isinstance(reply, list):
            return reply.pop(0) if len(reply) > 1 else reply[0]
        return reply

    async def run_remote(self, request: GenerationRequest = ABSENT,
                         cancel: str = ABSENT) -> Generation:
        if cancel is not None:
            self.cancels.append(cancel)
            self.calls_in_flight.cancel(cancel)
            return CANCEL_REPLY
        return await self.calls_in_flight.run(request, self._generate)

    async def _generate(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            reply = self._reply(request)
            if isinstance(reply, Exception):
                raise reply
            text = reply(request) if callable(reply) else reply
            return Generation(text=text, model="fake",
                              usage=Usage(prompt_tokens=1, completion_tokens=1, total_tokens=2))
        finally:
            self.in_flight -= 1


_: type[GeneratorProtocol] = FakeGenerator
_cancellable: type[CancellableGenerator] = FakeGenerator
