"""FakePhiLLM: the seed's stand-in for the GPU Phi-3 chainlet."""

from chainlets.protocols import TextLLMProtocol

__all__ = ["FakePhiLLM"]


class FakePhiLLM:
    """Answers like the seed's fake: `Here's a poem about <last word>`; records prompts."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def run_remote(self, prompt: str) -> str:
        self.prompts.append(prompt)
        return f"Here's a poem about {prompt.split(' ')[-1]}"


_: type[TextLLMProtocol] = FakePhiLLM
