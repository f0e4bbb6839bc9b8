"""The port the engine calls a model through; the generator chainlets implement it."""

from typing import Protocol

from chainlets.engine.models import Generation, GenerationRequest

__all__ = ["GeneratorProtocol"]


class GeneratorProtocol(Protocol):
    """A chainlet that turns chat messages into text (the seed's "plugin")."""

    async def run_remote(self, request: GenerationRequest) -> Generation: ...
