"""What a failed model call was, for programs (`ErrorKind`) and people (type and message only).

A generator's error reaches the engine either raised in process or, deployed, re-raised by
truss from the generator chainlet's HTTP reply: same class, but a message that carries the
remote traceback, with the server's file paths, under a header naming the chainlet::

    (showing chained remote errors, root error at the bottom)
    ├─ Error calling dependency Chainlet `MockGenerator`, HTTP status=500, trace ID=`…`.
    │   Chainlet-Traceback (most recent call last):
    │     File "/packages/chainlets/generators/mock_model.py", line 120, in generate
    │   GenerationError: mock: scripted failure for step `judge`
    ╰   (Exception class defined in `chainlets.errors`.)

A record keeps only the root error's type and message (the last block; chained calls nest);
the traceback goes to the log, where the error is an internal one.
"""

import re
import sys
from dataclasses import dataclass

import httpx

from chainlets.engine.models import ErrorKind
from chainlets.errors import (
    BackendOverloadedError,
    ChainrunnerError,
    OutputSchemaError,
    TransientGenerationError,
)

__all__ = ["Failure", "StepTimeoutError", "describe_failure", "is_overload", "is_transient"]


_REMOTE_HEADER = "(showing chained remote errors, root error at the bottom)"
_REMOTE_TRACEBACK = "Chainlet-Traceback (most recent call last):"
_BOX = frozenset("│╰├─ ")
_DEFINED_IN = re.compile(r"\(Exception class defined in `[^`]*`\.\)")
_ROOT_ERROR = re.compile(r"(?P<name>[A-Za-z_][\w.]*): ?(?P<message>.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed call as recorded: its kind and `message`, the error's type and message;
    `transient` when it was worth another attempt (a catch of `transient` failures)."""

    kind: ErrorKind
    message: str
    transient: bool = False


def _chainlet_connection_error(exc: BaseException) -> bool:
    # Deployed, truss calls dependency chainlets with aiohttp; its connection errors (refused,
    # server disconnected) are not ConnectionErrors. An aiohttp error exists only once aiohttp
    # is imported, so it is looked up, not imported: that would cost every process that loads
    # the engine (`chainrunner run` included) 60 ms, and aiohttp is not installed everywhere.
    aiohttp = sys.modules.get("aiohttp")
    return aiohttp is not None and isinstance(exc, aiohttp.ClientConnectionError)


class StepTimeoutError(TimeoutError):
    """Raised in the engine when one attempt of a step takes longer than `step_timeout_s`."""


def is_overload(exc: BaseException) -> bool:
    """Failures that say the backend is overloaded or not taking connections: every call to
    it should wait, not only the one that failed."""
    return isinstance(exc, BackendOverloadedError | ConnectionRefusedError | httpx.ConnectError) \
        or _chainlet_refused(exc)


def _chainlet_refused(exc: BaseException) -> bool:
    aiohttp = sys.modules.get("aiohttp")  # looked up, not imported: see above
    return aiohttp is not None and isinstance(exc, aiohttp.ClientConnectorError)


def is_transient(exc: BaseException) -> bool:
    """Failures worth another attempt: rate limits, server errors, timeouts, lost connections."""
    return isinstance(exc, TransientGenerationError | TimeoutError | httpx.TransportError
                      | ConnectionError) or _chainlet_connection_error(exc)


def _kind(exc: BaseException) -> ErrorKind:
    # Before ChainrunnerError: a GenerationTimeoutError is both.
    if isinstance(exc, TimeoutError | httpx.TimeoutException):  # aiohttp's timeouts included
        return ErrorKind.TIMEOUT
    if isinstance(exc, OutputSchemaError):
        return ErrorKind.SCHEMA
    if isinstance(exc, ChainrunnerError):
        return ErrorKind.MODEL
    if isinstance(exc, httpx.TransportError | ConnectionError) \
            or _chainlet_connection_error(exc):
        return ErrorKind.CONNECTION
    return ErrorKind.INTERNAL


def _remote_root(exc: BaseException) -> tuple[str, str]:
    """The root error's type name and message: from the message truss re-raised, if it is one."""
    # Truss re-raises as `cls(message)`; str() of some classes (KeyError) quotes it.
    text = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else ""
    if not text.startswith(_REMOTE_HEADER):
        return type(exc).__name__, str(exc)
    lines = text.splitlines()
    # Unless parsed, the header's next line: it names the chainlet, and holds no traceback.
    unparsed = (type(exc).__name__, lines[1].lstrip("".join(_BOX)) if len(lines) > 1 else "")
    starts = [i for i, line in enumerate(lines) if line.endswith(_REMOTE_TRACEBACK)]
    if not starts:
        return unparsed
    depth = len(lines[starts[-1]]) - len(_REMOTE_TRACEBACK)  # the root block's indent
    block: list[str] = []
    for line in lines[starts[-1] + 1:]:
        if not _BOX.issuperset(line[:depth]):
            break  # back out in an enclosing block
        block.append(line[depth:])
    while block and block[0].startswith("  "):  # the traceback's frames and source lines
        block.pop(0)
    if block and _DEFINED_IN.fullmatch(block[-1]):
        block.pop()
    match = _ROOT_ERROR.fullmatch("\n".join(block))
    return unparsed if match is None else (match["name"], match["message"].strip())


def describe_failure(exc: BaseException, where: str) -> Failure:
    """`exc` as a record shows it; `where` (e.g. "generator `mock`") names the code that
    raised it, for an internal error."""
    kind = _kind(exc)
    name, message = _remote_root(exc)
    summary = f"{name}: {message}" if message else name
    if kind is ErrorKind.INTERNAL:
        summary = f"internal error in {where}: {summary}"
    return Failure(kind, summary, is_transient(exc))
