"""The runner chainlet under run_local, including a user-added generator."""

import json

import pytest
import truss_chains as chains
from pydantic import BaseModel, ConfigDict

from chainlets.engine.models import (
    ChainInputs,
    Generation,
    GenerationRequest,
    InvocationResult,
    RunOptions,
    RunState,
)
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.errors import ChainDefinitionError, InputsError
from chainlets.generators.mock import MockGenerator
from chainlets.generators.openai_chat import OpenAIGenerator
from chainlets.http_errors import ChainRequestError
from chainlets.language.plugins import DEFAULT_PLUGINS, ModelParams, Plugin
from chainlets.language.spec import parse_chain
from chainlets.runner import ChainRunner


class EchoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    shout: bool = False


class EchoGenerator(chains.ChainletBase):
    """A user's own generator: echoes the prompt, upper-cased when asked."""

    async def run_remote(self, request: GenerationRequest) -> Generation:
        text = request.messages[-1].content
        return Generation(text=text.upper() if request.params.model == "shout" else text)


def _echo_params(config: BaseModel) -> ModelParams:
    assert isinstance(config, EchoConfig)
    return ModelParams(model="shout" if config.shout else None)


class EchoRunner(ChainRunner):
    plugins = DEFAULT_PLUGINS.with_plugins(
        Plugin("echo", EchoConfig, _echo_params, generator="echo"))

    def __init__(self, openai: GeneratorProtocol = chains.depends(OpenAIGenerator),
                 mock: GeneratorProtocol = chains.depends(MockGenerator),
                 echo: GeneratorProtocol = chains.depends(EchoGenerator)) -> None:
        super().__init__(openai=openai, mock=mock)
        self.generators = {**self.generators, "echo": echo}


async def test_a_user_added_generator_runs_without_engine_changes() -> None:
    spec = parse_chain({"handle": "c", "steps": [
        {"handle": "a", "prompt": "hi {who}", "plugin": "echo",
         "plugin_config": {"shout": True}},
        {"handle": "b", "prompt": "{a}!", "plugin": "mock", "plugin_config": {"max_words": 4}}]})
    with chains.run_local():
        runner = EchoRunner()
        answer = await runner.run_remote(spec, ChainInputs({"who": "bo"}), RunOptions())
    result = answer.root
    assert isinstance(result, InvocationResult)
    assert result.state == RunState.SUCCEEDED
    assert result.step("a").output == "HI BO"
    assert result.step("b").output == "[mock] b re: BO!"


async def test_runner_validates_against_its_own_plugins() -> None:
    spec = parse_chain({"handle": "c", "steps": [
        {"handle": "a", "prompt": "x", "plugin": "echo"}]})
    with chains.run_local():
        runner = ChainRunner()
        with pytest.raises(ChainDefinitionError, match="step `a`: unknown plugin `echo`"):
            await runner.execute(spec, {}, RunOptions())


@pytest.mark.parametrize(("steps", "inputs", "error"), [
    ([{"handle": "a", "prompt": "x", "plugin": "echo"}], {"topic": "y"},
     "chain `c` is invalid (1 problem)"),
    ([{"handle": "a", "prompt": "x {topic}", "plugin": "mock"}], {"topik": "y"},
     "chain `c` cannot run with these inputs (2 problems)"),
], ids=["invalid-chain", "bad-inputs"])
async def test_run_remote_rejects_a_client_mistake_as_http_422_with_the_problems(
        steps: list[dict[str, object]], inputs: dict[str, str], error: str) -> None:
    spec = parse_chain({"handle": "c", "inputs": [{"name": "topic"}], "steps": steps})
    with chains.run_local():
        runner = ChainRunner()
        with pytest.raises(ChainRequestError) as raised:
            await runner.run_remote(spec, ChainInputs(inputs), RunOptions())
        with pytest.raises((ChainDefinitionError, InputsError)) as cli_error:
            await runner.execute(spec, inputs, RunOptions())
    assert raised.value.status_code == 422
    assert json.loads(str(raised.value)) == {"error": error,
                                             "problems": cli_error.value.problems}
