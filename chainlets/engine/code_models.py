"""Wire models of code steps and function calling: a call to the code runner chainlet, and
the tools a model is offered, the calls it makes and what they answered."""

from pydantic import BaseModel, ConfigDict, Field, JsonValue

__all__ = ["CodeCall", "CodeResult", "ToolCall", "ToolCallRecord", "ToolRound", "ToolSpec"]


class CodeCall(BaseModel):
    """One call of a registered function, its arguments rendered (templates filled in)."""

    model_config = ConfigDict(extra="forbid")

    step: str = Field(description="Handle of the step making the call (for errors).")
    function: str = Field(description="The registered function's name.")
    args: dict[str, JsonValue] = Field(default_factory=dict,
                                       description="Arguments by parameter name, as JSON.")
    timeout_s: float | None = Field(
        default=None, gt=0, description="The attempt's time limit (`step_timeout_s`): the code "
        "runner abandons a call that takes longer.")


class CodeResult(BaseModel):
    """A function's answer: its return value as JSON text."""

    model_config = ConfigDict(extra="forbid")

    output: str = Field(description="The return value as JSON text.")


class ToolSpec(BaseModel):
    """A function offered to the model as a tool."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    parameters: dict[str, JsonValue] = Field(
        default_factory=dict, description="JSON Schema of the function's parameters.")


class ToolCall(BaseModel):
    """A call the model asked for in its reply."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The model's id for the call; the result answers it.")
    name: str
    arguments: str = Field(description="The arguments as the model wrote them (JSON text).")


class ToolCallRecord(BaseModel):
    """A tool call and what it answered: the function's output, or why it failed (the model
    is told the error and may try again)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    arguments: str
    output: str | None = Field(default=None, description="The function's return value as "
                                                         "JSON text; null when it failed.")
    error: str | None = Field(default=None, description="Why the call failed; null when it "
                                                        "succeeded.")


class ToolRound(BaseModel):
    """One earlier round of the model → tools → model loop, as the model is shown it again."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(default="", description="What the model said with its calls.")
    calls: list[ToolCallRecord] = Field(min_length=1)
