"""The mock generator chainlet: the offline embedded default backend."""

import truss_chains as chains

from chainlets import deploy
from chainlets.engine.models import Generation, GenerationRequest
from chainlets.generators.calls import ABSENT, CANCEL_REPLY, CancellableGenerator, InFlightCalls
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
        self._calls = InFlightCalls()

    async def run_remote(self, request: GenerationRequest = ABSENT,
                         cancel: str = ABSENT) -> Generation:
        """A reply to `request`; with `cancel` instead, cancels that call (see
        chainlets.generators.calls) and answers an empty Generation."""
        if cancel is not None:
            self._calls.cancel(cancel)
            return CANCEL_REPLY
        return await self._calls.run(request, self._model.generate)


_: type[CancellableGenerator] = MockGenerator
