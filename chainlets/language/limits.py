"""Upper bounds of the chain language, each set by an environment variable with a default.

Read when used, so that a deployed runner honours what its environment says (bake a value in
at push time). A malformed value is a ConfigurationError naming the variable.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, NonNegativeInt, PositiveInt
from pydantic_core import PydanticCustomError

from chainlets.errors import ConfigurationError

__all__ = ["MAX_APPROVAL_S", "MAX_BACKOFF_S", "MAX_DEADLINE_S", "MAX_PROMPT_CHARS", "MAX_REPAIRS",
           "MAX_STEP_ATTEMPTS", "MAX_STEP_TIMEOUT_S", "MAX_TOKENS", "MAX_TOOL_ROUNDS", "MAX_WORDS",
           "ApprovalTimeout", "Limit", "MaxRepairs", "MaxTokens", "MaxToolRounds", "MaxWords",
           "at_most", "prompt_problem"]


@dataclass(frozen=True)
class Limit:
    """One bound: the variable that sets it and its default."""

    env: str
    default: int
    unit: str

    def value(self) -> int:
        raw = os.environ.get(self.env, "").strip().replace("_", "")
        if not raw:
            return self.default
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigurationError(f"{self.env}={os.environ[self.env]!r} is not valid; set it "
                                     f"to a positive whole number of {self.unit} (default "
                                     f"{self.default:,})")
        return value

    def exceeded(self, fix: str) -> str:
        """The end of a message for a value over this limit: the limit, `fix` (e.g. "lower
        it") or how to raise the limit."""
        return f"over the limit of {self.value():,} {self.unit} set by {self.env}; {fix} or " \
            f"raise {self.env}"


MAX_TOKENS = Limit("CHAINRUNNER_MAX_TOKENS", 128_000, "tokens")
MAX_WORDS = Limit("CHAINRUNNER_MAX_WORDS", 50_000, "words")
MAX_PROMPT_CHARS = Limit("CHAINRUNNER_MAX_PROMPT_CHARS", 1_000_000, "characters")
# How long a human-approval step may wait for its answer: a week unless configured.
MAX_APPROVAL_S = Limit("CHAINRUNNER_MAX_APPROVAL_S", 7 * 24 * 3600, "seconds")
# How many times a step with an `output_schema` may be re-prompted after an invalid reply.
MAX_REPAIRS = Limit("CHAINRUNNER_MAX_REPAIRS", 10, "repairs")
# How many rounds of tool calls (model → tools → model) one step's `max_tool_rounds` may allow.
MAX_TOOL_ROUNDS = Limit("CHAINRUNNER_MAX_TOOL_ROUNDS", 10, "rounds")
# Per-step policies (policies.py) and a chain's own `deadline_s`.
MAX_STEP_ATTEMPTS = Limit("CHAINRUNNER_MAX_STEP_ATTEMPTS", 20, "attempts")
MAX_BACKOFF_S = Limit("CHAINRUNNER_MAX_BACKOFF_S", 60, "seconds")
MAX_STEP_TIMEOUT_S = Limit("CHAINRUNNER_MAX_STEP_TIMEOUT_S", 3600, "seconds")
MAX_DEADLINE_S = Limit("CHAINRUNNER_MAX_DEADLINE_S", 86_400, "seconds")


def at_most(limit: Limit) -> Callable[[Any], Any]:
    """A check before the integer parse, so that 1e30 is named as over the limit rather than
    as too large for an integer."""
    def check(value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool) \
                and value > limit.value():
            shown = f"{value:,}" if isinstance(value, int) else f"{value:g}"
            # The message has no `{`: pydantic would read it as a placeholder.
            raise PydanticCustomError("limit_exceeded", f"{shown} is {limit.exceeded('lower it')}")
        return value

    return check


# Plugin config fields: positive whole numbers, at most the configured bound.
MaxTokens = Annotated[PositiveInt, BeforeValidator(at_most(MAX_TOKENS))]
MaxWords = Annotated[PositiveInt, BeforeValidator(at_most(MAX_WORDS))]
ApprovalTimeout = Annotated[PositiveInt, BeforeValidator(at_most(MAX_APPROVAL_S))]
MaxRepairs = Annotated[NonNegativeInt, BeforeValidator(at_most(MAX_REPAIRS))]
MaxToolRounds = Annotated[PositiveInt, BeforeValidator(at_most(MAX_TOOL_ROUNDS))]


def prompt_problem(where: str, chars: int, what: str, most: int | None = None) -> str | None:
    """Why a prompt of `chars` characters is refused, located by `where` ("step `a`"), `what`
    it is ("the rendered prompt", …); None when it is within MAX_PROMPT_CHARS (`most`: its
    value, read once by a caller checking many prompts)."""
    if chars <= (MAX_PROMPT_CHARS.value() if most is None else most):
        return None
    return f"{where}: {what} is {chars:,} characters, "\
        f"{MAX_PROMPT_CHARS.exceeded('shorten it')}"
