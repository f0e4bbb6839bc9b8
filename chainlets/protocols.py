"""Protocols of the example chainlets in chains/; `mocks/` holds a fake for each.

The generator Protocol the engine calls is `chainlets.engine.protocols.GeneratorProtocol`.
"""

from typing import Protocol

__all__ = ["TextLLMProtocol"]


class TextLLMProtocol(Protocol):
    """A chainlet that completes one prompt string (the seed's Phi-3 chainlet)."""

    async def run_remote(self, prompt: str) -> str: ...
