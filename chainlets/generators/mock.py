"""The mock generator chainlet: the offline embedded default backend."""

import truss_chains as chains

from chainlets import deploy
from chainlets.engine.models import Generation, GenerationRequest
from chainlets.generators.mock_model import MockModel, MockScript

__all__ = ["MockGenerator"]


class MockGenerator(chains.ChainletBase):
    """Answers every model call offline and deterministically, output marked `[mock]`.

    Scripted from $CHAINRUNNER_MOCK_SCRIPT (see chainlets.generators.mock_model) so demos
    and tests can make a step say YES or fail.
    """

    remote_config = chains.RemoteConfig(
        docker_image=deploy.image(), compute=deploy.cpu_service(memory="512Mi"),
        name="MockGenerator")

    def __init__(self) -> None:
        self._model = MockModel(MockScript.from_env())

    async def run_remote(self, request: GenerationRequest) -> Generation:
        return await self._model.generate(request)
