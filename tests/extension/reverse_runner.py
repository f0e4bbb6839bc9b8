"""A user's runner with a generator chainlet of its own, as `--runner reverse_runner:ReverseRunner`
loads it (the CLI tests put this directory on PYTHONPATH)."""

import truss_chains as chains
from pydantic import BaseModel, ConfigDict

from chainlets.engine.models import Generation, GenerationRequest
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.generators.mock import MockGenerator
from chainlets.generators.openai_chat import OpenAIGenerator
from chainlets.language.plugins import DEFAULT_PLUGINS, ModelParams, Plugin
from chainlets.runner import ChainRunner


class ReverseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    upper: bool = False


class ReverseGenerator(chains.ChainletBase):
    """Answers with the prompt reversed, upper-cased when asked."""

    async def run_remote(self, request: GenerationRequest) -> Generation:
        text = request.messages[-1].content[::-1]
        return Generation(text=text.upper() if request.params.model == "upper" else text)


def _reverse_params(config: BaseModel) -> ModelParams:
    assert isinstance(config, ReverseConfig)
    return ModelParams(model="upper" if config.upper else None)


class ReverseRunner(ChainRunner):
    plugins = DEFAULT_PLUGINS.with_plugins(
        Plugin("reverse", ReverseConfig, _reverse_params, generator="reverse",
               description="Says the prompt backwards."))

    def __init__(self, openai: GeneratorProtocol = chains.depends(OpenAIGenerator),
                 mock: GeneratorProtocol = chains.depends(MockGenerator),
                 reverse: GeneratorProtocol = chains.depends(ReverseGenerator)) -> None:
        super().__init__(openai=openai, mock=mock)
        self.generators = {**self.generators, "reverse": reverse}
