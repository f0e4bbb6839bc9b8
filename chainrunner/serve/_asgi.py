"""The ASGI layer in front of truss's server in every chainlet serve runs.

Loaded by path inside chainlet processes (see _launcher.py): standard library only. It does
two things truss's server does not do for itself on a laptop:

- With an API key set, serve shares a per-serve secret with its chainlets (truss's own
  `baseten_chain_api_key`, which their stubs already send as `Authorization: Api-Key …`).
  Deployed, Baseten's proxy checks that header; here this layer does, so no chainlet port
  answers anyone else.
- A request whose error escapes to Starlette's ServerErrorMiddleware (a body truss's parser
  chokes on) is answered 500 there, and the error is then re-raised to the server; uvicorn
  answers that by closing the keep-alive connection. The caller's pool (serve's gateway, a
  calling chainlet's stub) may already have handed that connection to the next request,
  which then fails with "server disconnected". Here an error raised after its response was
  sent in full is logged and ends there, so one request's failure never reaches another's.
"""

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ChainletApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

_WEBSOCKET_POLICY_VIOLATION = 1008
_UNAUTHORIZED = json.dumps({
    "error": "this chainlet answers only chainrunner serve and the chain's other chainlets "
             "(they send serve's internal key); call the chain through serve's gateway, "
             "POST /run_remote"}).encode()


class ChainletApp:
    """Wraps truss's FastAPI app: checks serve's internal key (when `key` is set) and keeps a
    connection open after an error whose response was already sent."""

    def __init__(self, app: App, key: str | None) -> None:
        self._app = app
        self._expected = f"Api-Key {key}".encode() if key else None
        self._logger = logging.getLogger("uvicorn.error")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan
            await self._app(scope, receive, send)
            return
        if not self._authorized(scope):
            await self._reject(scope, send)
            return
        if scope["type"] == "websocket":
            await self._app(scope, receive, send)
            return
        sent = False

        async def tracking_send(message: Message) -> None:
            nonlocal sent
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                sent = True

        try:
            await self._app(scope, receive, tracking_send)
        except Exception:
            if not sent:  # the client has no complete answer: uvicorn must end the connection
                raise
            self._logger.exception("Error after the response was sent (the connection stays "
                                   "open for the caller's next request)")

    def _authorized(self, scope: Scope) -> bool:
        if self._expected is None:
            return True
        given = next((value for name, value in scope["headers"] if name == b"authorization"),
                     b"")
        return hmac.compare_digest(given.strip(), self._expected)

    @staticmethod
    async def _reject(scope: Scope, send: Send) -> None:
        if scope["type"] == "websocket":  # closed before accepting: the client gets 403
            await send({"type": "websocket.close", "code": _WEBSOCKET_POLICY_VIOLATION})
            return
        await send({"type": "http.response.start", "status": 401,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(_UNAUTHORIZED)).encode())]})
        await send({"type": "http.response.body", "body": _UNAUTHORIZED})
