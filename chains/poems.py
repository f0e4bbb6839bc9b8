"""The seed's poem chain: a CPU PoemGenerator fanning out to a GPU Phi-3 chainlet.

`python -m chains.poems` (from the repository root) runs it locally with the Protocol-typed
FakePhiLLM from mocks/, since Phi-3 needs a GPU; `truss chains push chains/poems.py` deploys
the real thing.
"""

import asyncio
import importlib
from typing import Any

import truss_chains as chains

from chainlets import deploy
from chainlets.protocols import TextLLMProtocol

PHI_MODEL = "microsoft/Phi-3-mini-4k-instruct"


class PhiLLM(chains.ChainletBase):
    """Phi-3 mini on an A10G through transformers' text-generation pipeline."""

    remote_config = chains.RemoteConfig(
        docker_image=deploy.image("transformers==4.46.3", "torch==2.5.1", "accelerate==1.1.1"),
        compute=chains.Compute(cpu_count=4, memory="16Gi", gpu="A10G"))

    def __init__(self) -> None:
        # Imported here: only the GPU image has transformers; local runs use FakePhiLLM.
        transformers = importlib.import_module("transformers")
        self._pipeline: Any = transformers.pipeline(
            "text-generation", model=PHI_MODEL, device_map="auto", torch_dtype="auto")

    async def run_remote(self, prompt: str) -> str:
        messages = [{"role": "user", "content": prompt}]
        out = await asyncio.to_thread(self._pipeline, messages, max_new_tokens=200,
                                      return_full_text=False)
        return str(out[0]["generated_text"])


@chains.mark_entrypoint("poems")
class PoemGenerator(chains.ChainletBase):
    """Asks for one poem per word, all at once."""

    remote_config = chains.RemoteConfig(docker_image=deploy.image(),
                                        compute=deploy.cpu_service())

    def __init__(self, phi_llm: TextLLMProtocol = chains.depends(PhiLLM)) -> None:
        self._phi_llm = phi_llm

    async def run_remote(self, words: list[str]) -> list[str]:
        return list(await asyncio.gather(
            *(self._phi_llm.run_remote(f"Write a short poem about {word}") for word in words)))


if __name__ == "__main__":
    from mocks.fake_phi import FakePhiLLM

    async def _main() -> None:
        with chains.run_local():
            poem_generator = PoemGenerator(phi_llm=FakePhiLLM())
            print(await poem_generator.run_remote(words=["bird", "plane", "superman"]))

    asyncio.run(_main())
