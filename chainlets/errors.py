"""Errors raised by chainrunner, grouped by what the caller does about them.

    ChainrunnerError                 base of everything below
    ├── RequestError                 a request is malformed (HTTP 400/422): fix it and resend
    │   ├── ChainDefinitionError     the chain is invalid: fix the JSON/code, nothing ran
    │   ├── InputsError              the chain is fine, the run's inputs are not: fix the inputs
    │   └── PayloadTooLargeError     an input, chain or output exceeds its configured size limit
    ├── GenerationError              a generator call failed for good (bad request, refused)
    │   ├── FunctionCallError        a code step's function refused its arguments or raised
    │   │   └── UnknownFunctionError a code runner has no function of that name
    │   ├── OutputSchemaError        the reply did not parse as JSON or validate against the
    │   │                            step's output_schema, even after its repairs
    │   └── TransientGenerationError a generator call failed in a way worth retrying
    │       │                        (HTTP 429/5xx, timeout, connection error)
    │       ├── BackendOverloadedError  the backend is overloaded (HTTP 429) or refuses
    │       │                        connections: every call to it backs off together
    │       └── GenerationTimeoutError  the backend gave no answer within the call's limit
    │                                (also a TimeoutError: its error_kind is `timeout`)
    ├── StepDataError                a value a step reads is not what it reads it as: not JSON,
    │                                or nothing at the path of a `{handle.path}` placeholder
    ├── NotFoundError                an id names nothing stored (HTTP 404)
    ├── ConflictError                the request contradicts the current state (HTTP 409)
    ├── ConfigurationError           a setting (environment variable, secret) is malformed
    └── LeaseLostError               another worker runs the invocation now: stop working on it

Every class is constructible from one message string: Truss re-raises a remote error in the
caller as ``cls(message)``.
"""

from collections.abc import Sequence

__all__ = [
    "BackendOverloadedError",
    "ChainDefinitionError",
    "ChainrunnerError",
    "ConfigurationError",
    "ConflictError",
    "FunctionCallError",
    "GenerationError",
    "GenerationTimeoutError",
    "InputsError",
    "LeaseLostError",
    "NotFoundError",
    "OutputSchemaError",
    "PayloadTooLargeError",
    "RequestError",
    "StepDataError",
    "TransientGenerationError",
    "UnknownFunctionError",
]


class ChainrunnerError(Exception):
    """Base of every error chainrunner raises on purpose."""


class _ProblemListError(ChainrunnerError):
    """An error that carries every problem found, reported together."""

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems) if problems else [message]

    @classmethod
    def from_problems(cls, header: str, problems: Sequence[str]) -> "_ProblemListError":
        lines = "\n".join(f"  - {p}" for p in problems)
        count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
        return cls(f"{header} ({count}):\n{lines}", problems)


class RequestError(_ProblemListError):
    """Raised when a request is malformed (a missing, unknown or invalid argument); ``problems``
    lists every problem found. A service answers it with HTTP 400."""


class ChainDefinitionError(RequestError):
    """Raised when a chain fails validation; ``problems`` lists every problem found."""


class InputsError(RequestError):
    """Raised when a run's inputs do not satisfy the chain (missing or unknown names)."""


class PayloadTooLargeError(RequestError):
    """Raised when an input, a chain or a step output exceeds its configured size limit; the
    message names the limit and the variable that sets it."""


class GenerationError(ChainrunnerError):
    """Raised when a generator call fails and retrying would not help."""


class FunctionCallError(GenerationError):
    """Raised when a code step's (or a tool's) function cannot be called with its arguments
    (a type mismatch, an unknown name) or raises; the message names the step, the function
    and, for an argument, its value and the type expected. Not retried."""


class UnknownFunctionError(FunctionCallError):
    """Raised by a code runner asked for a function it does not have (the runner then calls
    its own, if it has one of that name)."""


class OutputSchemaError(GenerationError):
    """Raised when a step's reply does not parse as JSON or does not validate against its
    `output_schema`, and its repairs (`max_repairs` re-prompts) are used up; the message names
    the step, the last validation error and the bound."""


class StepDataError(ChainrunnerError):
    """Raised when a template reads a field (`{judge.score}`) of a value that is not JSON or
    has nothing at that path: the step reading it fails before its call."""


class TransientGenerationError(GenerationError):
    """Raised when a generator call fails in a way that a later attempt may not."""


class BackendOverloadedError(TransientGenerationError):
    """Raised when the backend says it is overloaded (HTTP 429) or refuses the connection:
    the engine retries it, and holds back every call to that backend for the backoff."""


class GenerationTimeoutError(TransientGenerationError, TimeoutError):
    """Raised when the backend gave no answer within the call's time limit (the request's
    `timeout_s`, handed to its client): a timeout, retried like one."""


class ConflictError(ChainrunnerError):
    """Raised when a request contradicts the current state (e.g. resuming a finished run)."""


class NotFoundError(ChainrunnerError):
    """Raised when an id (a chain, an invocation, a task token) names nothing stored."""


class ConfigurationError(ChainrunnerError):
    """Raised when a setting (an environment variable, a secret) is malformed; the message
    names the setting and how to fix it."""


class LeaseLostError(ChainrunnerError):
    """Raised when a worker writes for an invocation whose lease it no longer holds (it expired
    and another worker claimed it, or the invocation was cancelled): the write was rejected and
    the worker must stop working on that invocation."""
