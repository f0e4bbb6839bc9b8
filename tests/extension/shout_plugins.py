"""Plugins an installed package registers under the `chainrunner.plugins` entry point group:
served by an existing generator (the mock), so no runner of the user's is needed."""

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from chainlets.language.plugins import ModelParams, Plugin


class ShoutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    words: PositiveInt = Field(description="At most this many words.")


def _shout_params(config: BaseModel) -> ModelParams:
    assert isinstance(config, ShoutConfig)
    return ModelParams(max_words=config.words)


PLUGINS = [Plugin("shout", ShoutConfig, _shout_params, generator="mock")]
# Registers a name the built-in plugins already have: the CLI must refuse it.
CLASHING = Plugin("gpt-3", ShoutConfig, _shout_params)
NOT_A_PLUGIN = "shout"
# Another package's plugin of the same name: the CLI must refuse the pair.
OTHER_SHOUT = Plugin("shout", ShoutConfig, _shout_params, generator="llm")
