"""The entrypoint's answer to a client's mistake under truss's server: a 4xx, never a 500.

Truss 0.18.35 gives a chainlet one way to choose the status of an error: raise
`fastapi.HTTPException` from `run_remote` (truss_chains keeps its status; any other exception
is a 500). It gives no way to choose the body: the server answers `{"error":
{"exception_cls_name", "exception_module_name", "exception_message", "user_stack_trace"}}`,
and a `Response` returned from `run_remote` is never passed through (the return value is
always wrapped in the pydantic model of its annotation, and truss_chains rejects a
`Response` annotation). So the message of ChainRequestError is itself the JSON document
`{"error": …, "problems": […]}`: serve's gateway answers exactly that document, and a
deployed caller reads it from `error.exception_message`.

Imports fastapi, which truss's server has (deployed and under `chainrunner serve`). The CLI
runs chains in-process through `ChainRunner.execute`, which never raises this.
"""

import json
from collections.abc import Sequence

import fastapi

from chainlets.errors import (
    ChainDefinitionError,
    ChainrunnerError,
    ConflictError,
    InputsError,
    NotFoundError,
    RequestError,
)

__all__ = ["BAD_REQUEST", "CONFLICT", "NOT_FOUND", "UNPROCESSABLE", "ChainRequestError"]

UNPROCESSABLE = 422  # the body parsed; the chain or inputs in it are invalid
BAD_REQUEST = 400  # an operation's argument is missing, unknown or invalid
NOT_FOUND = 404  # an id names nothing stored
CONFLICT = 409  # the request contradicts the current state (a finished run, a reused key)


class ChainRequestError(fastapi.HTTPException, ChainrunnerError):
    """Raised by the entrypoint's `run_remote` for a request that is the client's mistake (an
    invalid chain, missing or unknown inputs: status 422; a bad operation argument: 400; an
    unknown id: 404; a state conflict: 409): truss's server answers it with that status.

    `str()` is the JSON document `{"error": message, "problems": [...]}`, the same problems
    the CLI prints.
    """

    def __init__(self, message: str, problems: Sequence[str] = (),
                 status_code: int = UNPROCESSABLE) -> None:
        super().__init__(status_code=status_code, detail=message)
        self.message = message
        self.problems: list[str] = list(problems) if problems else [message]

    def __str__(self) -> str:
        return json.dumps({"error": self.message, "problems": self.problems}, ensure_ascii=False)

    @classmethod
    def rejecting(cls, error: ChainDefinitionError | InputsError) -> "ChainRequestError":
        """The answer to a request whose chain or inputs raised `error`: its first line (the
        CLI's header, `chain `c` is invalid (2 problems)`) and its problems."""
        header = str(error).partition("\n")[0].removesuffix(":")
        return cls(header, error.problems)

    @classmethod
    def answering(cls, error: ChainrunnerError) -> "ChainRequestError | None":
        """The answer to an operation that raised `error`; None for an error that is not the
        client's (a 500 stays a 500)."""
        if isinstance(error, ChainDefinitionError | InputsError):
            return cls.rejecting(error)
        if isinstance(error, RequestError):
            header = str(error).partition("\n")[0].removesuffix(":")
            return cls(header, error.problems, BAD_REQUEST)
        if isinstance(error, NotFoundError):
            return cls(str(error), status_code=NOT_FOUND)
        if isinstance(error, ConflictError):
            return cls(str(error), status_code=CONFLICT)
        return None
