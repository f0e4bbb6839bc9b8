"""Python client for a chainrunner service: `chainrunner serve` or a deployed Baseten chain.

    from chainrunner.client import Client
    with Client("http://127.0.0.1:8000", api_key="s3cret") as runner:
        chain_id = runner.create_chain(chain).chain_id
        invocation_id = runner.run_chain(chain_id=chain_id, inputs={"topic": "food"}).invocation_id
        print(runner.wait(invocation_id).output)

Every call is a POST of `{"op": …, **arguments}` to `{base_url}/run_remote` with
`Authorization: Api-Key <key>`, the header both `chainrunner serve --api-key` and Baseten want
(`auth_scheme` changes the word for a proxy that wants another, e.g. `Bearer`). Errors:
NotFoundError (404), ConflictError (409), RequestError with `problems` (400/422; its
subclasses ChainDefinitionError and InputsError when the server names them), ServiceError
(unreachable, 401, 5xx), WaitTimeoutError (`wait`'s deadline).
"""

import asyncio
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import httpx

from chainlets.engine.models import RunOptions, RunState
from chainlets.errors import (
    ChainDefinitionError,
    ConflictError,
    InputsError,
    NotFoundError,
    RequestError,
)
from chainlets.language.spec import JsonValue
from chainlets.service import responses
from chainrunner._client_core import (
    Call,
    Calls,
    Endpoint,
    JsonChain,
    Reply,
    ServiceError,
    WaitTimeoutError,
    is_final,
    wait_timeout,
)

__all__ = ["AsyncClient", "ChainDefinitionError", "Client", "ConflictError", "InputsError",
           "NotFoundError", "RequestError", "ServiceError", "WaitTimeoutError"]

DEFAULT_TIMEOUT_S = 60.0


class Client:
    """Blocking client; `AsyncClient` is its twin. Pass `http` to supply your own
    `httpx.Client` (a proxy, a test transport); it is then yours to close."""

    def __init__(self, base_url: str, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, *, auth_scheme: str = "Api-Key",
                 http: httpx.Client | None = None) -> None:
        self._endpoint = Endpoint(base_url, api_key, auth_scheme)
        self._owns_http = http is None
        self._http = http or httpx.Client(timeout=timeout)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _post(self, op: str, body: Mapping[str, Any]) -> httpx.Response:
        try:
            return self._http.post(self._endpoint.url, json=body,
                                   headers=self._endpoint.headers)
        except httpx.HTTPError as exc:
            raise self._endpoint.transport_error(op, exc) from exc

    def _send(self, call: Call[Reply]) -> Reply:
        return self._endpoint.reply(call, self._post(call.op, call.body))

    def invoke(self, op: str, **arguments: Any) -> Any:
        """Call operation `op` with `arguments` as they are (Steamship's `runner.invoke`);
        returns the answer's JSON."""
        return self._endpoint.answer(op, self._post(op, {"op": op, **arguments}))

    def create_chain(self, chain: JsonChain) -> responses.ChainCreated:
        return self._send(Calls.create_chain(chain))

    def get_chain(self, chain_id: str) -> responses.StoredChain:
        return self._send(Calls.get_chain(chain_id))

    def list_chains(self, limit: int | None = None,
                    cursor: str | None = None) -> responses.ChainPage:
        return self._send(Calls.list_chains(limit, cursor))

    def delete_chain(self, chain_id: str) -> responses.ChainDeleted:
        return self._send(Calls.delete_chain(chain_id))

    def run_chain(self, chain_id: str | None = None, *, chain: JsonChain | None = None,
                  inputs: Mapping[str, JsonValue] | None = None, callback_url: str | None = None,
                  idempotency_key: str | None = None,
                  options: RunOptions | None = None) -> responses.InvocationRef:
        return self._send(Calls.run_chain(chain_id, chain, inputs or {}, callback_url,
                                          idempotency_key, options))

    def run_status(self, invocation_id: str) -> responses.InvocationStatus:
        return self._send(Calls.run_status(invocation_id))

    def cancel(self, invocation_id: str) -> responses.InvocationRef:
        return self._send(Calls.cancel(invocation_id))

    def list_invocations(self, chain_id: str | None = None, *,
                         state: RunState | str | None = None, since: datetime | None = None,
                         limit: int | None = None,
                         cursor: str | None = None) -> responses.InvocationPage:
        return self._send(Calls.list_invocations(chain_id, state, since, limit, cursor))

    def events(self, invocation_id: str, limit: int | None = None,
               cursor: str | None = None) -> responses.EventPage:
        return self._send(Calls.events(invocation_id, limit, cursor))

    def redeliver(self, invocation_id: str,
                  event_id: str | None = None) -> responses.Redelivered:
        return self._send(Calls.redeliver(invocation_id, event_id))

    def resume(self, task_token: str, *, output: str | None = None,
               error: str | None = None) -> responses.Resumed:
        return self._send(Calls.resume(task_token, output, error))

    def rerun(self, invocation_id: str, from_step: str,
              chain: JsonChain | None = None) -> responses.InvocationRef:
        return self._send(Calls.rerun(invocation_id, from_step, chain))

    def wait(self, invocation_id: str, timeout_s: float = 300.0,
             poll_s: float = 0.5) -> responses.InvocationStatus:
        """Poll `run_status` every `poll_s` until the invocation is final (succeeded, failed,
        cancelled); WaitTimeoutError after `timeout_s`. Waiting for approval is not final."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = self.run_status(invocation_id)
            remaining = deadline - time.monotonic()
            if is_final(status.state):
                return status
            if remaining <= 0:
                raise wait_timeout(invocation_id, timeout_s, status)
            time.sleep(min(poll_s, remaining))


class AsyncClient:
    """`Client` for asyncio: the same helpers, awaited. Pass `http` to supply your own
    `httpx.AsyncClient`; it is then yours to close."""

    def __init__(self, base_url: str, api_key: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, *, auth_scheme: str = "Api-Key",
                 http: httpx.AsyncClient | None = None) -> None:
        self._endpoint = Endpoint(base_url, api_key, auth_scheme)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _post(self, op: str, body: Mapping[str, Any]) -> httpx.Response:
        try:
            return await self._http.post(self._endpoint.url, json=body,
                                         headers=self._endpoint.headers)
        except httpx.HTTPError as exc:
            raise self._endpoint.transport_error(op, exc) from exc

    async def _send(self, call: Call[Reply]) -> Reply:
        return self._endpoint.reply(call, await self._post(call.op, call.body))

    async def invoke(self, op: str, **arguments: Any) -> Any:
        """See `Client.invoke`."""
        return self._endpoint.answer(op, await self._post(op, {"op": op, **arguments}))

    async def create_chain(self, chain: JsonChain) -> responses.ChainCreated:
        return await self._send(Calls.create_chain(chain))

    async def get_chain(self, chain_id: str) -> responses.StoredChain:
        return await self._send(Calls.get_chain(chain_id))

    async def list_chains(self, limit: int | None = None,
                          cursor: str | None = None) -> responses.ChainPage:
        return await self._send(Calls.list_chains(limit, cursor))

    async def delete_chain(self, chain_id: str) -> responses.ChainDeleted:
        return await self._send(Calls.delete_chain(chain_id))

    async def run_chain(self, chain_id: str | None = None, *, chain: JsonChain | None = None,
                        inputs: Mapping[str, JsonValue] | None = None,
                        callback_url: str | None = None, idempotency_key: str | None = None,
                        options: RunOptions | None = None) -> responses.InvocationRef:
        return await self._send(Calls.run_chain(chain_id, chain, inputs or {}, callback_url,
                                                idempotency_key, options))

    async def run_status(self, invocation_id: str) -> responses.InvocationStatus:
        return await self._send(Calls.run_status(invocation_id))

    async def cancel(self, invocation_id: str) -> responses.InvocationRef:
        return await self._send(Calls.cancel(invocation_id))

    async def list_invocations(self, chain_id: str | None = None, *,
                               state: RunState | str | None = None,
                               since: datetime | None = None, limit: int | None = None,
                               cursor: str | None = None) -> responses.InvocationPage:
        return await self._send(Calls.list_invocations(chain_id, state, since, limit, cursor))

    async def events(self, invocation_id: str, limit: int | None = None,
                     cursor: str | None = None) -> responses.EventPage:
        return await self._send(Calls.events(invocation_id, limit, cursor))

    async def redeliver(self, invocation_id: str,
                        event_id: str | None = None) -> responses.Redelivered:
        return await self._send(Calls.redeliver(invocation_id, event_id))

    async def resume(self, task_token: str, *, output: str | None = None,
                     error: str | None = None) -> responses.Resumed:
        return await self._send(Calls.resume(task_token, output, error))

    async def rerun(self, invocation_id: str, from_step: str,
                    chain: JsonChain | None = None) -> responses.InvocationRef:
        return await self._send(Calls.rerun(invocation_id, from_step, chain))

    async def wait(self, invocation_id: str, timeout_s: float = 300.0,
                   poll_s: float = 0.5) -> responses.InvocationStatus:
        """See `Client.wait`."""
        deadline = time.monotonic() + timeout_s
        while True:
            status = await self.run_status(invocation_id)
            remaining = deadline - time.monotonic()
            if is_final(status.state):
                return status
            if remaining <= 0:
                raise wait_timeout(invocation_id, timeout_s, status)
            await asyncio.sleep(min(poll_s, remaining))
