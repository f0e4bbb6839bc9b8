"""What `Client` and `AsyncClient` share, with no I/O: the endpoint and headers, each
operation's request and answer type, and reading an answer into a model or an error."""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

import httpx
import pydantic

from chainlets import errors
from chainlets.engine.models import RunOptions, RunState
from chainlets.language.spec import ChainSpec, JsonValue
from chainlets.service import responses
from chainlets.service.models import parse_operation

__all__ = ["Call", "Calls", "Endpoint", "JsonChain", "Reply", "ServiceError", "WaitTimeoutError",
           "error_for", "is_final", "wait_timeout"]

Reply = TypeVar("Reply", bound=pydantic.BaseModel)
JsonChain = ChainSpec | Mapping[str, Any]


class ServiceError(errors.ChainrunnerError):
    """Raised when the service cannot be reached or answers something unexpected (401, 5xx, not
    JSON); `status_code` is the HTTP status, None when there was no answer."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class WaitTimeoutError(errors.ChainrunnerError):
    """Raised by `wait` when the invocation has not finished by the deadline; `last` is the
    last status read."""

    def __init__(self, message: str,
                 last: responses.InvocationStatus | None = None) -> None:
        super().__init__(message)
        self.last = last


@dataclass(frozen=True)
class Call(Generic[Reply]):
    """One operation: the JSON body to POST and the model its answer is read into."""

    op: str
    body: dict[str, Any]
    reply: type[Reply]


def _call(reply: type[Reply], op: str, **arguments: Any) -> Call[Reply]:
    # Validated here with the server's own models, so a mistake is reported before a round trip
    # in the words the server would use; the server's configurable limits are its own to check.
    request = parse_operation({"op": op, **arguments}, limits=None)
    assert request is not None  # `op` is set, so it parses as an operation or raises
    # Only unset arguments are dropped: a null inside the chain (a plugin_config value) is
    # the user's and goes as it is.
    body = {key: value for key, value in request.model_dump(mode="json").items()
            if value is not None}
    return Call(op, body, reply)


class Calls:
    """One builder per operation; both clients' typed helpers are one line over these."""

    @staticmethod
    def create_chain(chain: JsonChain) -> Call[responses.ChainCreated]:
        return _call(responses.ChainCreated, "create_chain", chain=chain)

    @staticmethod
    def get_chain(chain_id: str) -> Call[responses.StoredChain]:
        return _call(responses.StoredChain, "get_chain", chain_id=chain_id)

    @staticmethod
    def list_chains(limit: int | None, cursor: str | None) -> Call[responses.ChainPage]:
        return _call(responses.ChainPage, "list_chains", limit=limit, cursor=cursor)

    @staticmethod
    def delete_chain(chain_id: str) -> Call[responses.ChainDeleted]:
        return _call(responses.ChainDeleted, "delete_chain", chain_id=chain_id)

    @staticmethod
    def run_chain(chain_id: str | None, chain: JsonChain | None,
                  inputs: Mapping[str, JsonValue], callback_url: str | None,
                  idempotency_key: str | None,
                  options: RunOptions | None) -> Call[responses.InvocationRef]:
        return _call(responses.InvocationRef, "run_chain", chain_id=chain_id, chain=chain,
                     inputs=dict(inputs), callback_url=callback_url,
                     idempotency_key=idempotency_key, options=options)

    @staticmethod
    def run_status(invocation_id: str) -> Call[responses.InvocationStatus]:
        return _call(responses.InvocationStatus, "run_status", invocation_id=invocation_id)

    @staticmethod
    def cancel(invocation_id: str) -> Call[responses.InvocationRef]:
        return _call(responses.InvocationRef, "cancel", invocation_id=invocation_id)

    @staticmethod
    def list_invocations(chain_id: str | None, state: RunState | str | None,
                         since: datetime | None, limit: int | None,
                         cursor: str | None) -> Call[responses.InvocationPage]:
        return _call(responses.InvocationPage, "list_invocations", chain_id=chain_id,
                     state=state, since=since, limit=limit, cursor=cursor)

    @staticmethod
    def events(invocation_id: str, limit: int | None,
               cursor: str | None) -> Call[responses.EventPage]:
        return _call(responses.EventPage, "events", invocation_id=invocation_id, limit=limit,
                     cursor=cursor)

    @staticmethod
    def redeliver(invocation_id: str, event_id: str | None) -> Call[responses.Redelivered]:
        return _call(responses.Redelivered, "redeliver", invocation_id=invocation_id,
                     event_id=event_id)

    @staticmethod
    def resume(task_token: str, output: str | None,
               error: str | None) -> Call[responses.Resumed]:
        return _call(responses.Resumed, "resume", task_token=task_token, output=output,
                     error=error)

    @staticmethod
    def rerun(invocation_id: str, from_step: str,
              chain: JsonChain | None) -> Call[responses.InvocationRef]:
        return _call(responses.InvocationRef, "rerun", invocation_id=invocation_id,
                     from_step=from_step, chain=chain)


def is_final(state: RunState) -> bool:
    """Whether an invocation in `state` will change no more (waiting for approval is not)."""
    return state.finished or state.value == "cancelled"


def wait_timeout(invocation_id: str, timeout_s: float,
                 last: responses.InvocationStatus) -> WaitTimeoutError:
    return WaitTimeoutError(f"invocation `{invocation_id}` is still {last.state.value} after "
                            f"{timeout_s:g} s; wait longer (timeout_s) or cancel it", last)


class Endpoint:
    """Where to POST and with which headers, and how to read what comes back."""

    def __init__(self, base_url: str, api_key: str | None, auth_scheme: str) -> None:
        base = base_url.rstrip("/")
        base = base.removesuffix("/run_remote")
        self.url = f"{base}/run_remote"
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key is not None:
            self.headers["Authorization"] = f"{auth_scheme} {api_key}"

    def transport_error(self, op: str, exc: httpx.HTTPError) -> ServiceError:
        if isinstance(exc, httpx.TimeoutException):
            return ServiceError(f"`{op}`: {self.url} did not answer in time ({exc}); raise the "
                                f"client's timeout or retry")
        return ServiceError(f"`{op}`: cannot reach {self.url}: {type(exc).__name__}: {exc}")

    def answer(self, op: str, response: httpx.Response) -> Any:
        """The JSON of a 2xx answer; raises the error a non-2xx answer stands for."""
        try:
            payload = response.json()
        except ValueError:
            raise ServiceError(
                f"`{op}`: {self.url} answered HTTP {response.status_code} with something that "
                f"is not JSON: {_snippet(response.text)}", response.status_code) from None
        if response.is_success:
            return payload
        raise error_for(op, response.status_code, payload)

    def reply(self, call: Call[Reply], response: httpx.Response) -> Reply:
        payload = self.answer(call.op, response)
        try:
            return call.reply.model_validate(payload)
        except pydantic.ValidationError as exc:
            raise ServiceError(
                f"`{call.op}`: the answer is not a {call.reply.__name__} (a client and server "
                f"of different versions?): {exc.errors()[0]['msg']} at "
                f"{'.'.join(map(str, exc.errors()[0]['loc']))}", response.status_code) from exc


# Our own errors, when the server names one (truss reports the exception's class name).
_KNOWN: dict[str, type[errors.ChainrunnerError]] = {
    cls.__name__: cls for cls in (errors.NotFoundError, errors.ConflictError,
                                  errors.RequestError, errors.ChainDefinitionError,
                                  errors.InputsError)}
_BY_STATUS: dict[int, type[errors.ChainrunnerError]] = {
    400: errors.RequestError, 422: errors.RequestError, 404: errors.NotFoundError,
    409: errors.ConflictError}
_STATUS_PREFIX = re.compile(r"^\d{3}: ")


def error_for(op: str, status: int, payload: Any) -> errors.ChainrunnerError:
    """The error a non-2xx JSON answer stands for: by the class the server names, else by status
    (404 NotFoundError, 409 ConflictError, 400/422 RequestError), else ServiceError."""
    message, cls_name, problems = _read_error(payload)
    cls = _KNOWN.get(cls_name or "") or _BY_STATUS.get(status)
    if cls is None:
        return ServiceError(f"`{op}` failed with HTTP {status}: {message}", status)
    if issubclass(cls, errors.RequestError):
        return cls(message, problems or _bullets(message))
    return cls(message)


def _read_error(payload: Any) -> tuple[str, str | None, list[str]]:
    """(message, exception class name, problems) from truss's and FastAPI's error shapes."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict) and isinstance(error.get("exception_message"), str):
        # A chainlet's exception, as truss reports it; its stack trace is deliberately dropped.
        cls_name = error.get("exception_cls_name")
        message = error["exception_message"]
        if cls_name == "HTTPException":  # str(HTTPException) is "<status>: <detail>"
            message = _STATUS_PREFIX.sub("", message)
        return message, cls_name if isinstance(cls_name, str) else None, []
    if isinstance(error, str):  # serve's answer to a rejected request: `{"error", "problems"}`
        problems = payload.get("problems") if isinstance(payload, dict) else None
        return error, None, [str(p) for p in problems] if isinstance(problems, list) else []
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, list):  # FastAPI's request validation
        problems = [f"{'.'.join(str(p) for p in item.get('loc', [])[1:])}: {item.get('msg')}"
                    if isinstance(item, dict) else str(item) for item in detail]
        return "the request is invalid:\n" + "\n".join(f"  - {p}" for p in problems), None, \
            problems
    if isinstance(detail, str):
        return detail, None, []
    return _snippet(json.dumps(payload)), None, []


def _bullets(message: str) -> list[str]:
    """The `  - problem` lines of a problem-list message, else the message itself."""
    found = [line[4:] for line in message.splitlines() if line.startswith("  - ")]
    return found or [message]


def _snippet(text: str, width: int = 300) -> str:
    return text if len(text) <= width else text[:width] + "…"
