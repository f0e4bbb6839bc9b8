"""What the gateway answers for an entrypoint's error: its message, never a stack frame.

Truss's server answers an exception raised in a chainlet with `{"error": {"exception_cls_name",
"exception_module_name", "exception_message", "user_stack_trace": [frames with server paths]}}`,
and a message re-raised from a dependency carries that dependency's formatted traceback. The
gateway answers `{"error": "<class>: <message>"}` instead, frames and traceback lines left out,
with the same status. A request the entrypoint rejected as the client's mistake
(`chainlets.http_errors.ChainRequestError`, whose message is the JSON document
`{"error": …, "problems": […]}`) is answered with that document. Truss's own errors (a body
it cannot parse: `{"error": "Input Parsing Error: …"}`) pass unchanged.
"""

import json
import re
from typing import Any

__all__ = ["REJECTION_CLASS", "error_reply", "without_tracebacks"]

# chainlets.http_errors.ChainRequestError, by name: serve does not import chainlet code.
REJECTION_CLASS = ("chainlets.http_errors", "ChainRequestError")
_MARGIN = re.compile(r"^[\s│├╰─]*")  # the indent and box drawing of chained remote errors
_FRAME = re.compile(r'File ".*", line \d+, in ')
_TRACEBACK_HEADS = ("Chainlet-Traceback (most recent call last):",
                    "Traceback (most recent call last):")


def without_tracebacks(text: str) -> str:
    """`text` less the lines of formatted tracebacks: their heads, each `File "…", line N,
    in f` and the source line under it."""
    kept: list[str] = []
    frame_margin: int | None = None  # the margin of the frame line just dropped
    for line in text.splitlines():
        margin = _MARGIN.match(line)
        assert margin is not None  # the pattern matches the empty string
        content, width = line[margin.end():], margin.end()
        if frame_margin is not None and width > frame_margin and not _FRAME.match(content):
            frame_margin = None  # the frame's source line
            continue
        frame_margin = None
        if _FRAME.match(content):
            frame_margin = width
        elif content not in _TRACEBACK_HEADS:
            kept.append(line)
    return "\n".join(kept)


def _rejection(message: str) -> dict[str, Any] | None:
    try:
        document = json.loads(message)
    except ValueError:
        return None
    if isinstance(document, dict) and isinstance(document.get("error"), str) \
            and isinstance(document.get("problems"), list):
        return {"error": document["error"], "problems": [str(p) for p in document["problems"]]}
    return None


def error_reply(body: bytes) -> bytes | None:
    """The body to answer instead of the entrypoint's error `body`; None: answer it as is."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("exception_message"), str):
        return None
    message: str = error["exception_message"]
    name = str(error.get("exception_cls_name") or "Error")
    if (error.get("exception_module_name"), name) == REJECTION_CLASS:
        rejection = _rejection(message)
        if rejection is not None:
            return json.dumps(rejection, ensure_ascii=False).encode()
    return json.dumps({"error": f"{name}: {without_tracebacks(message)}"},
                      ensure_ascii=False).encode()
