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

from chainlets.errors import ChainDefinitionError, ChainrunnerError, InputsError

__all__ = ["UNPROCESSABLE", "ChainRequestError"]

UNPROCESSABLE = 422  # the body parsed; the chain or inputs in it are invalid


class ChainRequestError(fastapi.HTTPException, ChainrunnerError):
    """Raised by the entrypoint's `run_remote` for a request that is the client's mistake (an
    invalid chain, missing or unknown inputs): truss's server answers it with status 422.

    `str()` is the JSON document `{"error": message, "problems": [...]}`, the same problems
    the CLI prints.
    """

    def __init__(self, message: str, problems: Sequence[str] = ()) -> None:
        super().__init__(status_code=UNPROCESSABLE, detail=message)
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
