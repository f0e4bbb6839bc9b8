"""The gateway: Baseten's `POST /run_remote` contract in front of the entrypoint chainlet.

`POST /run_remote` takes a JSON object whose keys are the entrypoint's `run_remote` argument
names and answers with its return value; errors come back as truss's own error detail, with
truss's status code. `GET /ready` answers 200 once every chainlet is ready (503 before), with
each chainlet's pid, port and state. With an API key set, `/run_remote` wants
`Authorization: Api-Key <key>` (401 otherwise), as a deployed chain does.
"""

import errno
import hmac
from typing import Protocol

import aiohttp
from aiohttp import web

from chainrunner.serve.errors import ChainletUnavailableError, PortInUseError
from chainrunner.serve.processes import PREDICT_PATH

__all__ = ["Gateway", "Router"]

_FORWARDED_HEADERS = ("Content-Type", "X-Baseten-Request-Id")


class RoutedMember(Protocol):
    """What the gateway needs of a routed chainlet (supervisor.Member)."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    def enter(self) -> None: ...
    def leave(self) -> None: ...
    def unavailable_reason(self) -> str: ...


class Router(Protocol):
    """What the gateway needs of the supervisor."""

    def route(self) -> RoutedMember:
        """The entrypoint to call; raises ChainletUnavailableError naming a dead chainlet."""
        ...

    def readiness(self) -> tuple[bool, dict[str, object]]: ...


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Gateway:
    """An aiohttp server on 127.0.0.1 that forwards `/run_remote` to the current entrypoint."""

    def __init__(self, router: Router | None = None, api_key: str | None = None) -> None:
        self.router = router
        self._api_key = api_key
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def bind(self, port: int) -> int:
        """Listen on 127.0.0.1:`port` (0: any free port); returns the port."""
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/run_remote", self._run_remote)
        app.router.add_get("/ready", self._ready)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} on 127.0.0.1 is already in use (another `chainrunner serve`?):"
                    f" stop that process or choose another port with --port (0 picks a free "
                    f"one)") from exc
            raise
        self.port = int(self._runner.addresses[0][1])
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    def _authorized(self, request: web.Request) -> bool:
        if self._api_key is None:
            return True
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        return scheme == "Api-Key" and hmac.compare_digest(key.strip().encode(),
                                                           self._api_key.encode())

    async def _ready(self, request: web.Request) -> web.Response:
        if self.router is None:
            return web.json_response({"ready": False, "chainlets": {}}, status=503)
        ready, chainlets = self.router.readiness()
        return web.json_response({"ready": ready, "chainlets": chainlets},
                                 status=200 if ready else 503)

    async def _run_remote(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(401, "missing or wrong API key: send the header "
                               "`Authorization: Api-Key <key>` with the key serve was given")
        if self.router is None or self._http is None:
            return _error(503, "the chain is still starting; retry shortly")
        body = await request.read()
        headers = {h: request.headers[h] for h in _FORWARDED_HEADERS if h in request.headers}
        headers.setdefault("Content-Type", "application/json")
        # Route and enter with no await in between: a --watch swap retires the old entrypoint
        # once its in-flight count drops to 0, so a request routed to it must count at once.
        try:
            member = self.router.route()
        except ChainletUnavailableError as exc:
            return _error(503, str(exc))
        member.enter()
        try:
            async with self._http.post(member.url + PREDICT_PATH, data=body,
                                       headers=headers) as upstream:
                if upstream.content_length is not None:
                    return web.Response(body=await upstream.read(), status=upstream.status,
                                        content_type=upstream.content_type)
                return await self._stream(request, upstream)
        except aiohttp.ClientConnectionError:
            return _error(503, member.unavailable_reason())
        finally:
            member.leave()

    @staticmethod
    async def _stream(request: web.Request,
                      upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        """A streaming `run_remote` (an async iterator): pass chunks on as they come."""
        response = web.StreamResponse(status=upstream.status)
        response.content_type = upstream.content_type
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response
