"""Protocols that chainlet dependencies are typed by; `mocks/` holds a fake for each."""

from typing import Protocol

from chainlets.models import Generation, GenerationRequest

__all__ = ["GeneratorProtocol", "TextLLMProtocol"]


class GeneratorProtocol(Protocol):
    """A chainlet that turns chat messages into text (the seed's "plugin")."""

    async def run_remote(self, request: GenerationRequest) -> Generation: ...


class TextLLMProtocol(Protocol):
    """A chainlet that completes one prompt string (the seed's Phi-3 chainlet)."""

    async def run_remote(self, prompt: str) -> str: ...
